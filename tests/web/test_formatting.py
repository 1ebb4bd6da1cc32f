"""Numbers, times and charts as the pages show them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from marketplace.web.charts import hourly_bar_chart, nice_ceiling
from marketplace.web.formatting import (
    format_duration,
    format_number,
    format_percent,
    format_relative,
    parse_amount,
    payload_view,
)
from payments.money import Money

NOW = datetime(2025, 6, 3, 14, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [(0, 0, "0"), (1234567, 0, "1,234,567"), (1234.56, 1, "1,234.6"), (None, 0, "—"), (2.0, 0, "2")],
)
def test_numbers_have_thousands_separators(value, places, text) -> None:
    assert format_number(value, places) == text


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        (" 3 ", "EUR", 300),
        ("0.1", "EUR", 10),
        ("1234567.89", "USD", 123456789),
        ("500", "JPY", 500),
        ("1.005", "KWD", 1005),
        ("-2", "EUR", -200),
    ],
)
def test_amounts_are_read_exactly_into_minor_units(text, currency, minor) -> None:
    assert parse_amount(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("0.505", "EUR", "at most 2 decimals after a point"),
        ("1.5", "JPY", "with no decimals"),
        ("1,50", "EUR", "no thousands separators, e.g. 1250.50"),
        ("1,000", "JPY", "e.g. 1250."),
        ("1e3", "EUR", "e.g. 1250.50"),
        ("€5", "EUR", "e.g. 1250.50"),
        ("", "EUR", "e.g. 1250.50"),
        (None, "KWD", "at most 3 decimals after a point and no thousands separators, e.g. 1250.500"),
    ],
)
def test_amounts_that_are_not_plain_decimals_are_refused(text, currency, message) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse_amount(text, currency)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=-10), "just now"),
        (timedelta(seconds=10), "in a few seconds"),
        (timedelta(minutes=-3), "3 minutes ago"),
        (timedelta(minutes=-70), "1 hour ago"),
        (timedelta(hours=5), "in 5 hours"),
        (timedelta(hours=30), "in 1 day"),
        (timedelta(days=-3), "3 days ago"),
        (timedelta(days=90), "in 3 months"),
        (timedelta(days=-800), "2 years ago"),
    ],
)
def test_relative_times_read_like_speech(delta, text) -> None:
    assert format_relative(NOW + delta, NOW) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (600, "10 min"), (3600, "1 h"), (3 * 3600 + 1200, "3 h 20 min"), (200_000, "2 days 7 h")],
)
def test_durations(seconds, text) -> None:
    assert format_duration(seconds) == text


def test_percent_never_claims_zero_for_a_little() -> None:
    assert format_percent(1, 1000) == "<1%"
    assert format_percent(1, 3) == "33%"
    assert format_percent(1, 0) == "—"


def test_payload_view_splits_image_text_and_the_rest() -> None:
    view = payload_view({"image_url": "https://x.test/a.png", "text": "hi", "id": 3})
    assert (view.image_url, view.text, view.rest) == ("https://x.test/a.png", "hi", {"id": 3})
    unsafe = payload_view({"image_url": "javascript:alert(1)"})
    assert unsafe.image_url is None
    assert unsafe.rest == {"image_url": "javascript:alert(1)"}
    assert payload_view({"a": 1}).rest == {"a": 1}


def test_chart_scales_to_a_nice_maximum_and_labels_hours() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 12, 180, 1000)] == [1, 1, 5, 10, 20, 200, 1000]
    chart = hourly_bar_chart(
        [0, 5, 10, 3], first_hour=datetime(2025, 6, 3, 10, tzinfo=UTC), width=400, height=200
    )
    assert [bar.value for bar in chart.bars] == [0, 5, 10, 3]
    assert chart.bars[2].height == pytest.approx(chart.bottom - chart.top)  # 10 is the top of the scale
    assert chart.bars[0].height == 0
    assert [t.text for t in chart.y_ticks] == ["0", "5", "10"]
    assert chart.x_ticks[0].text == "10:00"
    assert chart.bars[1].title == "11:00–12:00 UTC: 5 labels"
    assert chart.total == 18
