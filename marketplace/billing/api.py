"""Billing API: fund a project, read its budget, pay bonuses, read my earnings (/api/v1)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import marshmallow as ma
from flask import Flask, Response, current_app, jsonify, request
from flask.views import MethodView
from marshmallow import fields, validate

from marketplace.accounts.auth import current_annotator, current_user, project_for
from marketplace.accounts.models import OrgRole
from marketplace.api import Api, Blueprint, Currency, Moment, MoneySchema, PlainInteger, StrictInteger
from marketplace.billing import bonuses, services
from marketplace.billing import earnings as earnings_report
from marketplace.billing.bonuses import MAX_REASON
from marketplace.billing.models import Bonus
from marketplace.db import get_session
from marketplace.errors import InvalidInput
from marketplace.limits import MAX_AMOUNT_MINOR, MAX_ID
from marketplace.projects.models import Project
from payments.money import Money

blp = Blueprint(
    "billing", __name__, url_prefix="/api/v1", description="Project funding, budgets and earnings"
)

FUNDERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value)
BUDGET_READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.FINANCE.value)
#: a client's key is scoped to the project in the ledger, so it only has to be unique per project
_KEY_PATTERN = r"^[A-Za-z0-9_.:\-]{1,120}$"
_KEY_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,120}")


def _validate_key(value: str) -> None:
    if not _KEY_RE.fullmatch(value):
        raise ma.ValidationError("Use 1 to 120 of the characters A-Z a-z 0-9 _ . : -")


class FundingIn(ma.Schema):
    amount_minor = StrictInteger(required=True, validate=validate.Range(1, MAX_AMOUNT_MINOR))
    currency = Currency(required=True)
    idempotency_key = fields.String(validate=_validate_key, metadata={"pattern": _KEY_PATTERN})


class FundingOut(ma.Schema):
    transaction_id = fields.Integer()
    idempotency_key = fields.String()
    amount = fields.Nested(MoneySchema)
    created_at = fields.AwareDateTime()


class BudgetOut(ma.Schema):
    project_id = fields.Integer()
    currency = fields.String()
    funded = fields.Nested(MoneySchema, metadata={"description": "credited by fundings"})
    held = fields.Nested(
        MoneySchema, metadata={"description": "reserved by live leases and labels in review"}
    )
    spent = fields.Nested(MoneySchema, metadata={"description": "paid to annotators for accepted labels"})
    bonuses = fields.Nested(MoneySchema, metadata={"description": "paid to annotators as bonuses"})
    fees = fields.Nested(MoneySchema, metadata={"description": "platform fees on labels and bonuses"})
    remaining = fields.Nested(MoneySchema, metadata={"description": "funded less spent, bonuses and fees"})
    available = fields.Nested(MoneySchema, metadata={"description": "remaining less held"})
    label_cost = fields.Nested(MoneySchema, metadata={"description": "pay per label plus the platform fee"})
    affordable_labels = fields.Integer(
        allow_none=True,
        metadata={"description": "labels the available budget still covers (null: free labels)"},
    )
    funding = fields.Nested(FundingOut, metadata={"description": "the funding just made (POST only)"})


class EarningsQuery(ma.Schema):
    since = Moment()
    until = Moment()


class DayOut(ma.Schema):
    day = fields.Date()
    pending = fields.Nested(MoneySchema)
    accepted = fields.Nested(MoneySchema)
    rejected = fields.Nested(MoneySchema)
    bonuses = fields.Nested(MoneySchema)
    paid_out = fields.Nested(MoneySchema)


class BonusEarningOut(ma.Schema):
    bonus_id = fields.Integer()
    project_id = fields.Integer()
    granted_at = fields.AwareDateTime()
    amount = fields.Nested(MoneySchema)
    reason = fields.String()


class LabelEarningOut(ma.Schema):
    label_id = fields.Integer()
    project_id = fields.Integer()
    submitted_at = fields.AwareDateTime()
    review_state = fields.String()
    price = fields.Nested(MoneySchema)
    earned = fields.Nested(MoneySchema)


class EarningsOut(ma.Schema):
    annotator_id = fields.Integer()
    currency = fields.String()
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    pending = fields.Nested(MoneySchema, metadata={"description": "labels awaiting review"})
    accepted = fields.Nested(MoneySchema, metadata={"description": "earned by accepted labels"})
    rejected = fields.Nested(MoneySchema, metadata={"description": "price of rejected labels"})
    bonuses = fields.Nested(MoneySchema, metadata={"description": "bonuses given in the period"})
    paid_out = fields.Nested(MoneySchema, metadata={"description": "confirmed payouts in the period"})
    payout_pending = fields.Nested(MoneySchema, metadata={"description": "payouts requested, not confirmed"})
    payable = fields.Nested(MoneySchema, metadata={"description": "earned and not yet paid out"})
    days = fields.List(fields.Nested(DayOut))
    labels = fields.List(fields.Nested(LabelEarningOut))
    bonus_items = fields.List(fields.Nested(BonusEarningOut), metadata={"description": "latest first"})


def _budget_dict(project: Any) -> dict[str, Any]:
    session = get_session()
    fee_bps = int(current_app.config["PLATFORM_FEE_BPS"])
    summary = services.project_budget(session, project=project)
    cost = services.label_cost(project, fee_bps=fee_bps)
    affordable = summary.available.amount // cost.amount if cost.is_positive else None
    return {**summary.to_json(), "label_cost": cost.to_json(), "affordable_labels": affordable}


def _key_header(description: str) -> dict[str, Any]:
    """The OpenAPI description of the Idempotency-Key header (the body's idempotency_key may stand for it)."""
    return {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string", "pattern": _KEY_PATTERN},
        "description": description,
    }


def _client_key(body: dict[str, Any], *, required: bool = False) -> str:
    header = request.headers.get("Idempotency-Key")
    if header is not None and not _KEY_RE.fullmatch(header):
        raise InvalidInput(
            "The Idempotency-Key header is not a valid key.", details={"Idempotency-Key": "invalid"}
        )
    key = body.get("idempotency_key")
    if header is not None and key is not None and header != key:
        raise InvalidInput(
            "The Idempotency-Key header and the body's idempotency_key differ.",
            details={"idempotency_key": "differs from the Idempotency-Key header"},
        )
    if required and header is None and key is None:
        raise InvalidInput(
            "Send an Idempotency-Key header (or the body's idempotency_key): a retry then pays once.",
            details={"Idempotency-Key": "required"},
        )
    # Without a key every funding is a new one, as the client asked; with one, retries are safe.
    return header or key or f"auto-{uuid.uuid4().hex}"


@blp.route("/projects/<int:project_id>/funding")
class ProjectFunding(MethodView):
    @blp.arguments(FundingIn)
    @blp.response(201, BudgetOut)
    @blp.doc(parameters=[_key_header("Retrying with the same key funds once and answers the same funding.")])
    def post(self, body: dict[str, Any], project_id: int) -> dict[str, Any]:
        """Add money to a project's budget (its organisation's admins and managers)."""
        session = get_session()
        project = project_for(session, project_id, *FUNDERS)
        amount = Money.parse_minor(body["amount_minor"], body["currency"])
        if amount.currency != project.currency:
            raise InvalidInput(
                f"This project is budgeted in {project.currency}.",
                details={"currency": f"must be {project.currency}"},
            )
        key = _client_key(body)
        if current_app.config.get("PAYOUT_GATEWAY") == "stripe":
            return _request_stripe_funding(session, project=project, amount=amount, key=key)
        transaction = services.fund_project(session, project=project, amount=amount, idempotency_key=key)
        funding = {
            "transaction_id": transaction.id,
            "idempotency_key": key,
            "amount": amount.to_json(),
            "created_at": transaction.created_at,
        }
        return {**_budget_dict(project), "funding": funding}


def _request_stripe_funding(session: Any, *, project: Project, amount: Money, key: str) -> Response:
    """With Stripe the platform collects the money first: a PaymentIntent now, the budget credited by the
    `payment_intent.succeeded` webhook (once, whatever Stripe redelivers). 202: nothing is booked yet."""
    from marketplace.payouts.services import get_gateway
    from payments.webhooks import request_funding

    row, intent = request_funding(
        session,
        gateway=get_gateway(),
        reference=f"project:{project.id}",
        amount=amount,
        idempotency_key=f"project:{project.id}:{key}",
    )
    body = {
        **BudgetOut().dump(_budget_dict(project)),
        "funding": {
            "status": "awaiting_payment",
            "idempotency_key": key,
            "amount": amount.to_json(),
            "payment_intent": intent.id,
            "client_secret": intent.client_secret,
            "funding_id": row.id,
        },
    }
    response = jsonify(body)
    response.status_code = 202
    return response


@blp.route("/projects/<int:project_id>/budget")
class ProjectBudget(MethodView):
    @blp.response(200, BudgetOut)
    def get(self, project_id: int) -> dict[str, Any]:
        """Where a project's money stands: funded, held, spent, fees, remaining, available."""
        session = get_session()
        return _budget_dict(project_for(session, project_id, *BUDGET_READERS))


@blp.route("/me/earnings")
class MyEarnings(MethodView):
    @blp.arguments(EarningsQuery, location="query")
    @blp.response(200, EarningsOut)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """My earnings per label and per day: pending, accepted, rejected and paid out (default: 30 days)."""
        session = get_session()
        profile = current_annotator(session)
        earnings = earnings_report.annotator_earnings(
            session, annotator_id=profile.id, since=query.get("since"), until=query.get("until")
        )
        return {
            "annotator_id": earnings.annotator_id,
            "currency": earnings.currency,
            "since": earnings.since,
            "until": earnings.until,
            **{
                name: getattr(earnings, name).to_json()
                for name in (
                    "pending",
                    "accepted",
                    "rejected",
                    "bonuses",
                    "paid_out",
                    "payout_pending",
                    "payable",
                )
            },
            "days": [
                {
                    "day": d.day,
                    **{
                        n: getattr(d, n).to_json()
                        for n in ("pending", "accepted", "rejected", "bonuses", "paid_out")
                    },
                }
                for d in earnings.days
            ],
            "labels": [
                {
                    "label_id": item.label_id,
                    "project_id": item.project_id,
                    "submitted_at": item.submitted_at,
                    "review_state": item.review_state,
                    "price": item.price.to_json(),
                    "earned": item.earned.to_json(),
                }
                for item in earnings.labels
            ],
            "bonus_items": [
                {
                    "bonus_id": item.bonus_id,
                    "project_id": item.project_id,
                    "granted_at": item.granted_at,
                    "amount": item.amount.to_json(),
                    "reason": item.reason,
                }
                for item in earnings.bonus_items
            ],
        }


# --- bonuses ------------------------------------------------------------------------------------------------


class BonusIn(ma.Schema):
    annotator_id = StrictInteger(
        required=True,
        validate=validate.Range(1, MAX_ID),
        metadata={"description": "someone with a label in this project"},
    )
    amount_minor = StrictInteger(required=True, validate=validate.Range(1, MAX_AMOUNT_MINOR))
    currency = Currency(required=True)
    reason = fields.String(
        required=True,
        validate=validate.Length(1, MAX_REASON),
        metadata={"description": "shown to the annotator"},
    )
    idempotency_key = fields.String(
        validate=_validate_key,
        metadata={"pattern": _KEY_PATTERN, "description": "or the Idempotency-Key header; one is required"},
    )


class BonusOut(ma.Schema):
    id = fields.Integer()
    project_id = fields.Integer()
    annotator_id = fields.Integer()
    amount = fields.Nested(MoneySchema, metadata={"description": "what the annotator receives"})
    fee = fields.Nested(
        MoneySchema, metadata={"description": "the platform's fee, paid by the budget on top"}
    )
    reason = fields.String()
    idempotency_key = fields.String()
    granted_by_id = fields.Integer(allow_none=True)
    transaction_id = fields.Integer()
    created_at = fields.AwareDateTime()


class BonusPage(ma.Schema):
    items = fields.List(fields.Nested(BonusOut))
    next_after = fields.Integer(allow_none=True)


class BonusQuery(ma.Schema):
    after = PlainInteger(load_default=0, validate=validate.Range(0, MAX_ID))
    limit = PlainInteger(load_default=100, validate=validate.Range(1, 1000))


def _bonus_dict(bonus: Bonus) -> dict[str, Any]:
    return {
        "id": bonus.id,
        "project_id": bonus.project_id,
        "annotator_id": bonus.annotator_id,
        "amount": Money(bonus.amount_minor, bonus.currency).to_json(),
        "fee": Money(bonus.fee_minor, bonus.currency).to_json(),
        "reason": bonus.reason,
        "idempotency_key": bonus.client_key,
        "granted_by_id": bonus.granted_by_id,
        "transaction_id": bonus.transaction_id,
        "created_at": bonus.created_at,
    }


@blp.route("/projects/<int:project_id>/bonuses")
class ProjectBonuses(MethodView):
    @blp.arguments(BonusQuery, location="query")
    @blp.response(200, BonusPage)
    def get(self, query: dict[str, Any], project_id: int) -> dict[str, Any]:
        """The project's bonuses in the order given, keyset-paginated: pass `next_after` back as `after`."""
        session = get_session()
        project = project_for(session, project_id, *BUDGET_READERS)
        items = bonuses.project_bonuses(
            session, project_id=project.id, after=query["after"], limit=query["limit"]
        )
        next_after = items[-1].id if len(items) == query["limit"] else None
        return {"items": [_bonus_dict(b) for b in items], "next_after": next_after}

    @blp.arguments(BonusIn)
    @blp.response(201, BonusOut)
    @blp.alt_response(200, schema=BonusOut, description="A retry: the bonus its key already gave.")
    @blp.doc(parameters=[_key_header("Required here or as the body's idempotency_key: a retry pays once.")])
    def post(self, body: dict[str, Any], project_id: int) -> tuple[dict[str, Any], int]:
        """Pay an annotator who labelled in the project a bonus, with a reason, from the project's budget
        (its organisation's admins and managers). The budget pays the bonus plus the platform's fee."""
        session = get_session()
        project = project_for(session, project_id, *FUNDERS)
        key = _client_key(body, required=True)
        granted = bonuses.grant_bonus(
            session,
            project=project,
            annotator_id=body["annotator_id"],
            amount=Money.parse_minor(body["amount_minor"], body["currency"]),
            reason=body["reason"],
            client_key=key,
            granted_by_id=current_user().id,
            fee_bps=int(current_app.config["PLATFORM_FEE_BPS"]),
        )
        return _bonus_dict(granted.bonus), 201 if granted.created else 200


def init_app(app: Flask, api: Api) -> None:
    """Register the billing API and the `ledger` CLI group."""
    from marketplace.billing.cli import register_cli
    from marketplace.db import unit_of_work

    api.register_blueprint(blp)
    register_cli(app.cli, open_session=lambda: unit_of_work(app))
