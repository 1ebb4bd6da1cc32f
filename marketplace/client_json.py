"""JSON as clients send it: parsed so that what cannot be stored, or would crash the parser, is refused at the door.

Python's `json.loads` accepts things that are not JSON (`NaN`, `Infinity`), fails with errors that are not
`JSONDecodeError` (a RecursionError for `[[[[...` nested a hundred thousand deep, a ValueError for an integer of
more than 4,300 digits), and returns strings that no database takes: a NUL character (`\\u0000`; PostgreSQL's text
and jsonb refuse it) or half of a surrogate pair (`\\ud800`; not encodable as UTF-8). `loads_client_json` turns
each of these into a `json.JSONDecodeError` with a message that says what is wrong, so every caller reports bad
input the way it already reports malformed JSON: the API's argument parser (`marketplace.api`), Flask's
`request.get_json` (`ClientJSONProvider`) and the task import (`marketplace.projects.imports`).
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def unstorable_text(value: str) -> str | None:
    """Why a string cannot be stored (a NUL character, a lone surrogate), or None if it can."""
    if "\x00" in value:
        return "text must not contain the NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "text must not contain a lone surrogate (\\ud800-\\udfff)"
    return None


def find_unstorable_text(document: Any) -> str | None:
    """The first reason a string (key or value) anywhere in a parsed document cannot be stored, or None."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            reason = unstorable_text(item)
            if reason is not None:
                return reason
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def loads_client_json(text: str | bytes) -> Any:
    """Parse a client's JSON document; anything Python would accept but the service cannot take is a
    `json.JSONDecodeError` naming the problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"the body is not UTF-8: {exc.reason}", "", exc.start) from exc
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except RecursionError as exc:
        raise json.JSONDecodeError("the document is nested too deeply", text, 0) from exc
    except ValueError as exc:  # an integer past Python's digit limit, NaN, Infinity
        raise json.JSONDecodeError(str(exc), text, 0) from exc
    # Only an escape sequence can put a NUL or a surrogate into a parsed string: raw control characters are not
    # valid JSON, and the text was decoded from UTF-8.
    if "\\u" in text:
        reason = find_unstorable_text(document)
        if reason is not None:
            raise json.JSONDecodeError(reason, text, 0)
    return document


class ClientJSONProvider(DefaultJSONProvider):
    """Flask's JSON with `loads_client_json` for what requests carry: `request.get_json` answers 400 for all of it."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_client_json(s)
