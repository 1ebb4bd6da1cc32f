"""The flask-smorest `Api` (OpenAPI at /api/v1/openapi.json), its `Blueprint`, and fields shared by every schema.

Every value a client sends is bounded here before it reaches the database or the standard library: ids fit the
database's integer column (`MAX_ID`, also for ids in paths: `IdConverter`), amounts and prices have a ceiling,
moments lie between 1970 and 9000 (`marketplace.limits`), and JSON bodies are parsed by `marketplace.client_json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import flask
import marshmallow as ma
from flask import Flask
from flask_smorest import Api as SmorestApi
from flask_smorest import Blueprint as SmorestBlueprint
from marshmallow import fields, validate
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.routing import IntegerConverter, Map

from marketplace.client_json import loads_client_json
from marketplace.limits import EARLIEST, LATEST, MAX_ID

PUBLIC = "labelforce_public"
P = ParamSpec("P")
R = TypeVar("R")


class ProblemBodySchema(ma.Schema):
    code = fields.String(
        required=True, metadata={"description": "What went wrong, for programs (`invalid_input`, ...)"}
    )
    message = fields.String(required=True, metadata={"description": "What went wrong, for people"})
    details = fields.Raw(
        required=True, allow_none=True, metadata={"description": "Which fields, limits or ids are involved"}
    )


class ProblemSchema(ma.Schema):
    """Every error the API answers: `{"error": {"code", "message", "details"}}` (`marketplace.errors`)."""

    error = fields.Nested(ProblemBodySchema, required=True)


class Api(SmorestApi):
    """flask-smorest's Api without its own error handler: `marketplace.errors` renders every error, in the shape
    that `ProblemSchema` documents."""

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        return None


class ClientJSONParser(FlaskParser):
    """webargs' parser with the service's JSON rules: a body that is not JSON is refused (415) rather than read as
    no arguments, and the document is parsed by `loads_client_json` (what it refuses is a 400)."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            # a form's body may have been parsed already (and is then gone from get_data): its length still tells
            if (req.content_length or 0) > 0 or req.get_data(cache=True):
                raise UnsupportedMediaType("Send the body as JSON, with Content-Type: application/json.")
            return core.missing
        return loads_client_json(req.get_data(cache=True))

    def _handle_invalid_json_error(
        self, error: json.JSONDecodeError | UnicodeDecodeError, req: flask.Request, *args: Any, **kwargs: Any
    ) -> NoReturn:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else f"not UTF-8 ({error.reason})"
        abort(400, exc=error, messages={"json": [f"Invalid JSON body: {reason}."]})


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint, parsing arguments with `ClientJSONParser`."""

    ARGUMENTS_PARSER = ClientJSONParser()


def public(operation: Callable[P, R]) -> Callable[P, R]:
    """An operation anyone may call (logging in, signing up): documented without a security requirement, and let
    through by the API's authentication gate (`marketplace.accounts.auth`), which asks every other one for a token
    before it reads its arguments."""
    documented: Callable[P, R] = SmorestBlueprint.doc(security=[])(operation)
    setattr(documented, PUBLIC, True)
    return documented


def is_public(operation: Callable[..., Any]) -> bool:
    return bool(getattr(operation, PUBLIC, False))


class IdConverter(IntegerConverter):
    """`<int:...>` in a route: ASCII digits (werkzeug's own takes any Unicode digit, "１" too), and an id past the
    database's integer column matches no route (404) rather than reaching a query that the database refuses."""

    regex = r"[0-9]+"

    def __init__(
        self,
        map: Map,
        fixed_digits: int = 0,
        min: int | None = None,
        max: int | None = MAX_ID,
        signed: bool = False,
    ) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


class PlainInteger(fields.Integer):
    """An integer written plainly: a JSON integer (not 2.9, 2.0 or true), or, in a query string, ASCII digits
    (not "２", "٣", "1_0" or " 5", each of which Python's int() reads as a number)."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, str):
            if not _PLAIN_INTEGER.fullmatch(value):
                raise self.make_error("invalid", input=value)
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid", input=value)
        return value


_PLAIN_INTEGER = re.compile(r"-?[0-9]{1,19}")


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802  (reads like a field class)
    """The id of a row in a query string: 1 up to `MAX_ID` (a JSON body's ids are `StrictInteger`s)."""
    return PlainInteger(validate=validate.Range(1, MAX_ID), **kwargs)


def Moment(**kwargs: Any) -> fields.AwareDateTime:  # noqa: N802
    """An ISO 8601 date and time with its offset, between 1970 and 9000."""
    return fields.AwareDateTime(validate=validate.Range(EARLIEST, LATEST), **kwargs)


def Day(**kwargs: Any) -> fields.Date:  # noqa: N802
    """An ISO 8601 date, between 1970 and 9000."""
    return fields.Date(validate=validate.Range(EARLIEST.date(), LATEST.date()), **kwargs)


class StrictInteger(fields.Integer):
    """An integer that refuses floats (1.0 too), strings and booleans: money and counts are exact."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return int(super()._validated(value))


def Currency(**kwargs: Any) -> fields.String:  # noqa: N802  (reads like a field class)
    """A three-letter ISO 4217 code, upper case."""
    return fields.String(
        validate=validate.Regexp(r"^[A-Z]{3}$", error="Expected an ISO currency code like EUR."), **kwargs
    )


class MoneySchema(ma.Schema):
    amount_minor = StrictInteger(required=True)
    currency = Currency(required=True)
    display = fields.String(dump_only=True)


def money_dict(amount_minor: int, currency: str) -> dict[str, Any]:
    """The JSON shape of an amount: integer minor units, currency, and how people read it."""
    from payments.money import Money

    return {
        "amount_minor": amount_minor,
        "currency": currency,
        "display": Money(amount_minor, currency).format(),
    }


def init_app(app: Flask) -> Api:
    api = Api(
        app,
        spec_kwargs={
            "info": {
                "description": "Labelforce: labels bought with a budget and a deadline, routed optimally."
            }
        },
    )
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearerAuth": []}]
    return api
