"""Money: an integer number of minor units in one ISO 4217 currency, and the one place amounts are formatted.

Floats, booleans and Decimals are refused at the door: an amount is an `int` of minor units (cents, yen,
fils), so arithmetic is exact and no rounding happens anywhere except in `fee_for`, where the rule is written
down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from payments.errors import CurrencyMismatch, InvalidAmount

#: Active ISO 4217 codes (fund and metal codes left out): a typo such as "EUO" is refused, not booked.
_ISO_CODES: Final = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
    "GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT "
    "LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR "
    "NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP "
    "STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD "
    "XCG XOF XPF YER ZAR ZMW ZWG"
)
ISO_CURRENCIES: Final[frozenset[str]] = frozenset(_ISO_CODES.split())

#: Currencies whose minor unit is not a hundredth (ISO 4217 exponents); every other code has two decimals.
#: Stripe's own list differs for a few codes (it sends ISK, HUF and TWD with two decimals and treats MGA as
#: zero-decimal); the payout gateway converts at its boundary, the ledger keeps ISO minor units.
_EXPONENTS: Final[dict[str, int]] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}

#: Symbols written before the number; any other currency is written as "1,234.50 SEK".
_SYMBOLS: Final[dict[str, str]] = {
    "EUR": "€",
    "USD": "$",
    "GBP": "£",
    "JPY": "¥",
    "CNY": "CN¥",
    "KRW": "₩",
    "INR": "₹",
    "CAD": "CA$",
    "AUD": "A$",
    "NZD": "NZ$",
    "HKD": "HK$",
    "MXN": "MX$",
    "BRL": "R$",
    "ILS": "₪",
    "VND": "₫",
    "PHP": "₱",
    "NGN": "₦",
    "UAH": "₴",
    "TRY": "₺",
}

_CURRENCY_RE: Final = re.compile(r"^[A-Z]{3}$")
#: ASCII digits only: `\d` (and int()) would also read "٣" or "１" as numbers
_DECIMAL_RE: Final = re.compile(r"(?P<sign>-?)(?P<units>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
#: more whole digits than any amount has (and far below int()'s limit on digits)
_MAX_UNIT_DIGITS: Final = 30
BPS_DENOMINATOR: Final = 10_000


def validate_currency(currency: object) -> str:
    """`currency` if it is an active ISO 4217 code written in capitals; InvalidAmount otherwise."""
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency) or currency not in ISO_CURRENCIES:
        raise InvalidAmount(f"unknown currency {currency!r}: use a 3-letter ISO 4217 code such as 'EUR'")
    return currency


def exponent(currency: str) -> int:
    """How many decimal places the currency's minor unit has (JPY 0, EUR 2, KWD 3)."""
    return _EXPONENTS.get(validate_currency(currency), 2)


def _require_int(value: object, what: str) -> int:
    # bool is a subclass of int and Decimal/float look numeric: each would slip through a plain int() cast.
    if type(value) is not int:
        raise InvalidAmount(f"{what} must be an integer number of minor units, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: `amount` minor units (may be negative, e.g. a balance) of `currency`."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        _require_int(self.amount, "amount")
        validate_currency(self.currency)

    # construction -------------------------------------------------------------------------------------------

    @classmethod
    def zero(cls, currency: str) -> Money:
        """No money in `currency`."""
        return cls(0, currency)

    @classmethod
    def parse_minor(cls, amount_minor: object, currency: object) -> Money:
        """Money from untrusted input (a JSON body): a strict integer of minor units and an ISO code."""
        return cls(_require_int(amount_minor, "amount_minor"), validate_currency(currency))

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Money from a decimal string in major units ("12.50" EUR), exact: no more decimals than allowed."""
        match = _DECIMAL_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidAmount(
                f"not a decimal amount: {text[:40]!r}" if isinstance(text, str) else "not text"
            )
        if len(match["units"]) > _MAX_UNIT_DIGITS:
            raise InvalidAmount(f"too large an amount: {len(match['units']):,} digits before the point")
        places = exponent(currency)
        fraction = match["fraction"] or ""
        if len(fraction) > places:
            raise InvalidAmount(f"{currency} has {places} decimal places, got {text!r}")
        minor = int(match["units"]) * 10**places + int(fraction.ljust(places, "0") or "0")
        return cls(-minor if match["sign"] else minor, currency)

    @classmethod
    def total(cls, amounts: Iterable[Money], currency: str) -> Money:
        """The sum of `amounts`, all in `currency` (zero when empty)."""
        result = cls.zero(currency)
        for amount in amounts:
            result = result + amount
        return result

    # arithmetic ---------------------------------------------------------------------------------------------

    def _same_currency(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}; wrap it in Money first")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")
        return other

    def __add__(self, other: object) -> Money:
        return Money(self.amount + self._same_currency(other).amount, self.currency)

    def __radd__(self, other: object) -> Money:
        # sum() starts from the int 0; refuse it so that an empty sum cannot silently lose its currency.
        raise TypeError("sum Money with Money.total(amounts, currency) or sum(amounts, Money.zero(currency))")

    def __sub__(self, other: object) -> Money:
        return Money(self.amount - self._same_currency(other).amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount), self.currency)

    def __mul__(self, factor: object) -> Money:
        return Money(self.amount * _require_int(factor, "factor"), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: object) -> bool:
        return self.amount < self._same_currency(other).amount

    def __le__(self, other: object) -> bool:
        return self.amount <= self._same_currency(other).amount

    def __gt__(self, other: object) -> bool:
        return self.amount > self._same_currency(other).amount

    def __ge__(self, other: object) -> bool:
        return self.amount >= self._same_currency(other).amount

    def __bool__(self) -> bool:
        return self.amount != 0

    @property
    def is_positive(self) -> bool:
        """Strictly more than nothing."""
        return self.amount > 0

    # presentation -------------------------------------------------------------------------------------------

    def format(self) -> str:
        """The amount for people: '€12.50', '$1,234.05', '¥500', '-£3.00', '1,000.500 KWD'."""
        places = exponent(self.currency)
        units, fraction = divmod(abs(self.amount), 10**places)
        number = f"{units:,}" + (f".{fraction:0{places}d}" if places else "")
        sign = "-" if self.amount < 0 else ""
        symbol = _SYMBOLS.get(self.currency)
        return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {self.currency}"

    def to_json(self) -> dict[str, object]:
        """The API's shape: {"amount_minor": 1250, "currency": "EUR", "display": "€12.50"}."""
        return {"amount_minor": self.amount, "currency": self.currency, "display": self.format()}

    def __str__(self) -> str:
        return self.format()


def fee_for(amount: Money, bps: int) -> Money:
    """The platform's fee on `amount` at `bps` basis points, rounded half up (a tie goes to the platform).

    Integer arithmetic only. At 2000 bps (20%), 12 cents → 2.4 → 2; 13 cents → 2.6 → 3; at 200 bps,
    25 cents → 0.5 → 1 (the tie). The rule is the one people learn at school, the same on every invoice line,
    and a fee is never more than half a minor unit away from the exact rate.
    """
    _require_int(bps, "bps")
    if not 0 <= bps <= BPS_DENOMINATOR:
        raise InvalidAmount(f"fee rate must be between 0 and {BPS_DENOMINATOR} bps, got {bps}")
    if amount.amount < 0:
        raise InvalidAmount("a fee is charged on a non-negative amount")
    return Money((amount.amount * bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR, amount.currency)
