"""Money: exact integer arithmetic in one currency, strict construction, formatting for people, fees."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.errors import CurrencyMismatch, InvalidAmount
from payments.money import Money, exponent, fee_for

amounts = st.integers(min_value=-(10**15), max_value=10**15)


def test_arithmetic_in_one_currency() -> None:
    a, b = Money(1250, "EUR"), Money(-50, "EUR")
    assert a + b == Money(1200, "EUR")
    assert a - b == Money(1300, "EUR")
    assert -a == Money(-1250, "EUR")
    assert abs(b) == Money(50, "EUR")
    assert a * 3 == 3 * a == Money(3750, "EUR")
    assert b < a <= Money(1250, "EUR")
    assert a > b >= Money(-50, "EUR")
    assert Money.total([a, b, a], "EUR") == Money(2450, "EUR")
    assert Money.total([], "JPY") == Money.zero("JPY")
    assert sum([a, b], Money.zero("EUR")) == Money(1200, "EUR")
    assert not Money.zero("EUR")
    assert Money(1, "EUR").is_positive


@pytest.mark.parametrize("bad", [12.5, 12.0, True, False, Decimal("12"), "12", None])
def test_refuses_anything_but_int_amounts(bad: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(bad, "EUR")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount):
        Money.parse_minor(bad, "EUR")


@pytest.mark.parametrize("bad", ["eur", "EURO", "XYZ", "", 978, None])
def test_refuses_unknown_currencies(bad: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(1, bad)  # type: ignore[arg-type]


def test_refuses_mixed_currencies() -> None:
    eur, usd = Money(100, "EUR"), Money(100, "USD")
    with pytest.raises(CurrencyMismatch):
        _ = eur + usd
    with pytest.raises(CurrencyMismatch):
        _ = eur - usd
    with pytest.raises(CurrencyMismatch):
        _ = eur < usd
    with pytest.raises(CurrencyMismatch):
        Money.total([eur, usd], "EUR")
    with pytest.raises(CurrencyMismatch):
        sum([eur, usd], Money.zero("EUR"))
    assert eur != usd  # equality is simply false: they are different values


@pytest.mark.parametrize("other", [1, 1.5, True, Decimal("1")])
def test_refuses_arithmetic_with_bare_numbers(other: object) -> None:
    eur = Money(100, "EUR")
    with pytest.raises(TypeError):
        _ = eur + other
    with pytest.raises(TypeError):
        _ = eur < other
    with pytest.raises(TypeError):
        sum([eur])  # an int start would silently lose the currency
    with pytest.raises(InvalidAmount):
        _ = eur * 1.5
    with pytest.raises(InvalidAmount):
        _ = eur * True


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1250, "EUR"), "€12.50"),
        (Money(123405, "USD"), "$1,234.05"),
        (Money(500, "JPY"), "¥500"),
        (Money(1234567, "KRW"), "₩1,234,567"),
        (Money(-300, "GBP"), "-£3.00"),
        (Money(5, "EUR"), "€0.05"),
        (Money(0, "USD"), "$0.00"),
        (Money(1000500, "KWD"), "1,000.500 KWD"),
        (Money(123456, "SEK"), "1,234.56 SEK"),
        (Money(-7, "BHD"), "-0.007 BHD"),
    ],
)
def test_format(money: Money, text: str) -> None:
    assert money.format() == text
    assert str(money) == text


def test_to_json() -> None:
    assert Money(1250, "EUR").to_json() == {"amount_minor": 1250, "currency": "EUR", "display": "€12.50"}


def test_exponents() -> None:
    assert (exponent("EUR"), exponent("JPY"), exponent("KRW"), exponent("KWD")) == (2, 0, 0, 3)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        ("12", "EUR", 1200),
        ("-0.01", "USD", -1),
        ("500", "JPY", 500),
    ],
)
def test_parse(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("12.505", "EUR"),
        ("1.5", "JPY"),
        ("1e3", "EUR"),
        ("", "EUR"),
        ("\u0663", "EUR"),  # digits other than ASCII, which int() would read
        ("\uff11.50", "EUR"),
        ("1_000", "EUR"),
        ("9" * 5000, "EUR"),  # refused as an amount, not by int()'s limit on digits
    ],
)
def test_parse_refuses_inexact_or_malformed(text: str, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, currency)


@given(amount=amounts, currency=st.sampled_from(["EUR", "JPY", "KWD", "SEK"]))
def test_format_and_parse_round_trip(amount: int, currency: str) -> None:
    money = Money(amount, currency)
    number = money.format().replace(",", "").lstrip("-").lstrip("€¥").split(" ")[0]
    assert Money.parse(("-" if amount < 0 else "") + number, currency) == money


def test_fee_rounds_half_up() -> None:
    assert fee_for(Money(12, "EUR"), 2000) == Money(2, "EUR")  # 2.4
    assert fee_for(Money(13, "EUR"), 2000) == Money(3, "EUR")  # 2.6
    assert fee_for(Money(25, "EUR"), 200) == Money(1, "EUR")  # 0.5: the tie goes up
    assert fee_for(Money(24, "EUR"), 200) == Money(0, "EUR")  # 0.48
    assert fee_for(Money(100, "EUR"), 0) == Money(0, "EUR")
    assert fee_for(Money(100, "EUR"), 10_000) == Money(100, "EUR")


@pytest.mark.parametrize("bps", [-1, 10_001, 20.0, True])
def test_fee_refuses_bad_rates(bps: object) -> None:
    with pytest.raises(InvalidAmount):
        fee_for(Money(100, "EUR"), bps)  # type: ignore[arg-type]


def test_fee_refuses_negative_amounts() -> None:
    with pytest.raises(InvalidAmount):
        fee_for(Money(-100, "EUR"), 2000)


@given(amount=st.integers(min_value=0, max_value=10**12), bps=st.integers(min_value=0, max_value=10_000))
def test_fee_is_within_half_a_minor_unit(amount: int, bps: int) -> None:
    fee = fee_for(Money(amount, "EUR"), bps).amount
    exact_twice = 2 * amount * bps  # twice the exact fee times 10_000, in integers
    assert abs(2 * fee * 10_000 - exact_twice) <= 10_000
    assert 0 <= fee <= amount
