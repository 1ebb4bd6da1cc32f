"""The bounds of what a client may send, shared by the API's schemas (`marketplace.api`) and the web's forms.

Each keeps a value clear of what the database or the standard library would refuse with a server error: an id past
the integer column, an amount no price could be, a date whose arithmetic overflows Python's calendar.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

#: ids are PostgreSQL `integer` columns
MAX_ID = 2**31 - 1
#: positions in the event stream are `bigint`
MAX_POSITION = 2**63 - 1
#: what one label may pay, or an annotator ask for one: 10,000,000.00 in a two-decimal currency
MAX_PRICE_MINOR = 10**9
#: a budget, a funding, a payout threshold: 100,000,000,000.00 in a two-decimal currency
MAX_AMOUNT_MINOR = 10**13
#: moments a client may name: far enough from the ends of Python's calendar that arithmetic on them never fails
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def visible_text(text: str) -> str:
    """`text` without the blanks at either end, invisible format characters (zero-width spaces and joiners, a
    byte-order mark) counted as blanks: a reason that shows nothing is no reason."""
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or unicodedata.category(text[start]) == "Cf"):
        start += 1
    while end > start and (text[end - 1].isspace() or unicodedata.category(text[end - 1]) == "Cf"):
        end -= 1
    return text[start:end]
