"""JSON as clients send it: parsed so that what cannot be stored, or would crash the parser, is refused at the door.

Python's `json.loads` accepts things that are not JSON (`NaN`, `Infinity`), turns `1e999999` into infinity
(which PostgreSQL's jsonb refuses), fails with errors that are not
`JSONDecodeError` (a RecursionError for `[[[[...` nested a hundred thousand deep, a ValueError for an integer of
more than 4,300 digits), and returns strings that no database takes: a NUL character (`\\u0000`; PostgreSQL's text
and jsonb refuse it) or half of a surrogate pair (`\\ud800`; not encodable as UTF-8). `loads_client_json` turns
each of these into a `json.JSONDecodeError` with a message that says what is wrong, so every caller reports bad
input the way it already reports malformed JSON: the API's argument parser (`marketplace.api`),
`request.get_json` (`ClientJSONRequest`) and the task import (`marketplace.projects.imports`).

Only what clients send goes through it: Flask reads its own session cookie with the app's JSON provider, and a
value the service itself wrote there (a flash message quoting a name) must always read back.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Request, request
from werkzeug.exceptions import BadRequest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999999 is valid JSON, and infinity in Python
        raise ValueError(f"the number {text[:40]} is too large")
    return number


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
            # the document given is not empty: webargs reads an empty one as "no body"
            shown = text.decode("utf-8", "replace")
            raise json.JSONDecodeError(f"the body is not UTF-8: {exc.reason}", shown, exc.start) from exc
    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
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


def refuse_unstorable_parameters() -> None:
    """Before every request: a query parameter or form field holding text no database stores is a 400 (the web
    UI's forms and every query string; JSON bodies are checked where they are parsed)."""
    # the form only when the body is one: parsing reads the body, which a JSON or text request needs left alone
    is_form = request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")
    for source in (request.args, request.form) if is_form else (request.args,):
        for name, value in source.items(multi=True):
            reason = unstorable_text(name) or unstorable_text(value)
            if reason is not None:
                raise BadRequest(f"The parameter {name!r} cannot be stored: {reason}.")


class _ClientJSON:
    """The `json_module` of `ClientJSONRequest`: client documents are read strictly, answers written as usual."""

    loads = staticmethod(loads_client_json)
    dumps = staticmethod(json.dumps)


class ClientJSONRequest(Request):
    """Flask's request, with `get_json` reading the body through `loads_client_json` (what it refuses is a 400)."""

    json_module = _ClientJSON
