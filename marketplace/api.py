"""The flask-smorest `Api` (OpenAPI at /api/v1/openapi.json) and fields shared by every schema."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Flask
from flask_smorest import Api as SmorestApi
from marshmallow import fields, validate


class Api(SmorestApi):
    """flask-smorest's Api without its own error handler: `marketplace.errors` renders every error."""

    def _register_error_handlers(self) -> None:
        return None


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
