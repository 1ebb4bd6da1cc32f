"""Numbers, amounts and times as people read them. Amounts are always written by `Money.format()`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from marketplace.db import utcnow
from payments.errors import InvalidAmount
from payments.money import Money, exponent


def format_number(value: Any, places: int = 0) -> str:
    """12345 → '12,345'; 1234.56 with places=1 → '1,234.6'; None → '—'."""
    if value is None:
        return "—"
    if isinstance(value, int) and not places:
        return f"{value:,}"
    return f"{float(value):,.{places}f}"


def format_count(count: int, noun: str, plural: str | None = None) -> str:
    """'1 label', '1,250 labels' (the plural is noun + 's' unless given)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def format_money(value: Money | None) -> str:
    """An amount for people, through the one formatter of the codebase."""
    return "—" if value is None else value.format()


def money_of(amount_minor: int, currency: str) -> str:
    """An amount stored as minor units and a currency, for people."""
    return Money(amount_minor, currency).format()


def parse_amount(text: str | None, currency: str) -> Money:
    """'12.50' in EUR → Money(1250, 'EUR'), exactly (no float on the way); ValueError says, for people, what is
    wrong. Commas are refused rather than guessed: '1,500' is fifteen hundred to some and one and a half to
    others."""
    try:
        return Money.parse((text or "").strip(), currency)
    except InvalidAmount:
        places = exponent(currency)
        decimals = "no decimals" if not places else f"at most {places} decimals after a point"
        example = "1250" if not places else "1250." + "5".ljust(places, "0")
        raise ValueError(
            f"Write the amount in {currency} with {decimals} and no thousands separators, e.g. {example}."
        ) from None


def amount_input(value: Money) -> str:
    """Money(125050, 'EUR') → '1250.50': what `parse_amount` reads back exactly (for a form's input)."""
    places = exponent(value.currency)
    units, fraction = divmod(abs(value.amount), 10**places)
    sign = "-" if value.amount < 0 else ""
    return f"{sign}{units}" + (f".{fraction:0{places}d}" if places else "")


def format_percent(part: float, whole: float) -> str:
    """'42%' (no decimals below 10 000 parts; '—' when there is no whole)."""
    if not whole:
        return "—"
    share = 100 * part / whole
    if 0 < share < 1:
        return "<1%"
    return f"{share:.0f}%"


def format_timestamp(moment: datetime | None) -> str:
    """'2025-06-03 14:05 UTC'."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    minute, hour, day = 60, 3600, 86400
    if seconds < 45:
        return "a few seconds"
    if seconds < 90:
        return "1 minute"
    if seconds < 45 * minute:
        return f"{round(seconds / minute)} minutes"
    if seconds < 90 * minute:
        return "1 hour"
    if seconds < 22 * hour:
        return f"{round(seconds / hour)} hours"
    if seconds < 36 * hour:
        return "1 day"
    if seconds < 45 * day:
        return f"{round(seconds / day)} days"
    if seconds < 320 * day:
        return f"{round(seconds / (30 * day))} months"
    years = round(seconds / (365 * day))
    return "1 year" if years <= 1 else f"{years} years"


def format_relative(moment: datetime | None, now: datetime | None = None) -> str:
    """'3 minutes ago', 'in 2 days', 'just now'."""
    if moment is None:
        return "—"
    seconds = (moment - (now or utcnow())).total_seconds()
    if abs(seconds) < 45:
        return "just now" if seconds <= 0 else "in a few seconds"
    text = _span(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def format_duration(seconds: float | None) -> str:
    """'45 s', '12 min', '3 h 20 min', '2 days 4 h'."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def pretty_json(value: Any) -> str:
    """A JSON value indented for reading."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def label_value(value: Any) -> str:
    """A label's value in one line: 'dog', 'cat, dog', or the text."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class PayloadView:
    """How an item's payload is shown: its image (http/https only), its text, and the other fields."""

    image_url: str | None
    text: str | None
    #: the fields not shown as image or text (the whole payload when it has neither), None if nothing is left
    rest: Any


def payload_view(payload: Any) -> PayloadView:
    """Split a task's payload into what is rendered as an image, as text, and as JSON."""
    if not isinstance(payload, dict):
        return PayloadView(None, None, payload)
    image = payload.get("image_url")
    image_url = image if isinstance(image, str) and image.startswith(("https://", "http://")) else None
    text = payload.get("text") if isinstance(payload.get("text"), str) else None
    shown = {name for name, value in (("image_url", image_url), ("text", text)) if value is not None}
    rest = {key: value for key, value in payload.items() if key not in shown}
    return PayloadView(image_url, text, rest or None)


def init_app(app: Flask) -> None:
    """Register the filters every template may use."""
    app.add_template_filter(format_number, "number")
    app.add_template_filter(format_money, "money")
    app.add_template_filter(format_count, "count")
    app.add_template_filter(format_timestamp, "timestamp")
    app.add_template_filter(format_relative, "ago")
    app.add_template_filter(format_duration, "duration")
    app.add_template_filter(pretty_json, "pretty_json")
    app.add_template_filter(label_value, "label_value")
    app.add_template_global(format_percent, "percent")
    app.add_template_global(payload_view, "payload_view")
    app.add_template_global(money_of, "money_of")
