"""Payouts over HTTP: an annotator's payout account, payout runs and lists, and finance's reconciliation.

Views authorise, call `payments` and shape the answer; they never commit (the request's session is committed
by the edge) and payout runs commit per payout through `unit_of_work`, as the CLI does.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import marshmallow as ma
from flask import Flask, Response, current_app
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import select

from marketplace.accounts.auth import current_annotator, current_user, require_platform_role
from marketplace.accounts.models import PlatformRole, User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.api import Api, Blueprint, Currency, Day, PlainInteger, StrictInteger
from marketplace.billing.agreement import check_earnings
from marketplace.db import get_session, utcnow
from marketplace.errors import InvalidInput, NotFound
from marketplace.limits import MAX_AMOUNT_MINOR, MAX_ID
from marketplace.payouts import services
from payments import payout_runs, payouts, reconciliation
from payments.payout_models import Payout, PayoutRun, PayoutState

blp = Blueprint("payouts", __name__, url_prefix="/api/v1", description="Payouts and reconciliation")

#: the longest period one reconciliation request may cover
MAX_RECONCILIATION_DAYS = 366


class PayoutAccountRequest(ma.Schema):
    country = fields.String(
        required=True,
        validate=validate.Regexp(r"^[A-Z]{2}$", error="Expected an ISO country code like DE."),
        metadata={"description": "Where the annotator's bank account is (ISO 3166-1 alpha-2)."},
    )
    refresh_url = fields.Url(
        metadata={"description": "Where Stripe sends the annotator if the link expired."}
    )
    return_url = fields.Url(metadata={"description": "Where Stripe sends the annotator after onboarding."})


class PayoutAccountOut(ma.Schema):
    gateway = fields.String()
    account_id = fields.String()
    country = fields.String()
    currency = fields.String()
    payouts_enabled = fields.Boolean()
    details_submitted = fields.Boolean()
    onboarding_url = fields.String(allow_none=True)
    onboarding_expires_at = fields.DateTime(allow_none=True)


class RunRequest(ma.Schema):
    min_amount_minor = StrictInteger(validate=validate.Range(1, MAX_AMOUNT_MINOR))
    currency = Currency()
    dry_run = fields.Boolean(load_default=False)


class PayoutListQuery(ma.Schema):
    state = fields.String(validate=validate.OneOf([s.value for s in PayoutState]))
    payee = fields.String(validate=validate.Length(max=200))
    limit = PlainInteger(load_default=100, validate=validate.Range(1, 500))
    offset = PlainInteger(load_default=0, validate=validate.Range(0, MAX_ID))


class ReconciliationQuery(ma.Schema):
    start = Day(required=True, data_key="from", metadata={"description": "First day (UTC), YYYY-MM-DD."})
    end = Day(required=True, data_key="to", metadata={"description": "Last day (UTC), inclusive."})
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))


def _account_out(account: Any, link: Any = None) -> dict[str, Any]:
    return {
        "gateway": account.gateway,
        "account_id": account.gateway_account_id,
        "country": account.country,
        "currency": account.currency,
        "payouts_enabled": account.payouts_enabled,
        "details_submitted": account.details_submitted,
        "onboarding_url": link.url if link is not None else None,
        "onboarding_expires_at": link.expires_at if link is not None else None,
    }


@blp.route("/annotators/me/payout-account")
class MyPayoutAccount(MethodView):
    @blp.response(200, PayoutAccountOut)
    def get(self) -> dict[str, Any]:
        """The caller's payout account (annotators)."""
        session = get_session()
        profile = current_annotator(session)
        account = payouts.get_payout_account(session, reference=services.payee_reference(profile.id))
        if account is None:
            raise NotFound("No payout account yet: POST here to open one.")
        return _account_out(account)

    @blp.arguments(PayoutAccountRequest)
    @blp.response(201, PayoutAccountOut)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Open the caller's payout account (or reuse it) and get a fresh onboarding link (annotators)."""
        session = get_session()
        profile = current_annotator(session)
        account, link = services.open_account_and_onboard(
            session,
            profile=profile,
            email=current_user().email,
            country=body["country"],
            refresh_url=body.get("refresh_url"),
            return_url=body.get("return_url"),
        )
        return _account_out(account, link)


@blp.route("/payouts/runs")
class PayoutRuns(MethodView):
    @blp.arguments(RunRequest)
    @blp.response(202)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Start a payout run (answered at once; it runs after the answer), or with `dry_run` only say what it
        would pay (platform finance)."""
        user = require_platform_role(PlatformRole.FINANCE)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        minimum = body.get("min_amount_minor") or int(app.config["PAYOUT_MIN_AMOUNT_MINOR"])
        currency = body.get("currency")
        session = get_session()
        if body["dry_run"]:
            plan = payouts.plan_payouts(session, min_amount_minor=minimum, currency=currency)
            return _plan_out(plan, minimum, currency, dry_run=True), 200, {}
        run = payout_runs.start_run(
            session, requested_by=f"user:{user.id}", min_amount_minor=minimum, currency=currency
        )
        how = services.schedule_payout_run(app, run.id)
        location = f"/api/v1/payouts/runs/{run.id}"
        return {**_run_out(run), "execution": how}, 202, {"Location": location}


@blp.route("/payouts/runs/<int:run_id>")
class PayoutRunDetail(MethodView):
    @blp.response(200)
    def get(self, run_id: int) -> dict[str, Any]:
        """A payout run: its threshold, what it requested and whether it finished (platform finance)."""
        require_platform_role(PlatformRole.FINANCE)
        run = get_session().get(PayoutRun, run_id)
        if run is None:
            raise NotFound(f"Payout run {run_id} not found.")
        return _run_out(run)


def _run_out(run: PayoutRun) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "requested_by": run.requested_by,
        "min_amount_minor": run.min_amount_minor,
        "currency": run.currency,
        "payouts_requested": run.payouts_requested,
        "totals": run.totals or {},
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "payouts": [{"id": p.id, "state": p.state} for p in sorted(run.payouts, key=lambda p: p.id)],
    }


def _plan_out(
    plan: payouts.PayoutPlan, minimum: int, currency: str | None, *, dry_run: bool
) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "min_amount_minor": minimum,
        "currency": currency,
        "totals": plan.totals(),
        "payouts": [
            {"payee": p.payee_reference, "amount_minor": p.amount.amount, "currency": p.amount.currency}
            for p in plan.payouts
        ],
        "skipped": [
            {
                "payee": s.payee_reference,
                "amount_minor": s.amount.amount,
                "currency": s.amount.currency,
                "reason": s.reason,
            }
            for s in plan.skipped
        ],
    }


def _list(query: Any, args: dict[str, Any]) -> list[dict[str, Any]]:
    if args.get("state"):
        query = query.where(Payout.state == args["state"])
    query = query.order_by(Payout.id.desc()).limit(args["limit"]).offset(args["offset"])
    return [services.payout_dict(p) for p in get_session().scalars(query)]


@blp.route("/payouts")
class PayoutList(MethodView):
    @blp.arguments(PayoutListQuery, location="query")
    @blp.response(200)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every payout, newest first (platform finance)."""
        require_platform_role(PlatformRole.FINANCE)
        query = select(Payout)
        if args.get("payee"):
            query = query.where(Payout.payee_reference == args["payee"])
        return {"items": _list(query, args)}


def _may_see(user: User, payout: Payout) -> bool:
    if user.platform_role in {PlatformRole.ADMIN, PlatformRole.FINANCE}:
        return True
    profile = get_session().scalar(select(AnnotatorProfile).where(AnnotatorProfile.user_id == user.id))
    return profile is not None and payout.payee_reference == services.payee_reference(profile.id)


@blp.route("/payouts/<int:payout_id>")
class PayoutDetail(MethodView):
    @blp.response(200)
    def get(self, payout_id: int) -> dict[str, Any]:
        """One payout: finance sees any, an annotator their own (another's is not found)."""
        user = current_user()
        payout = get_session().get(Payout, payout_id)
        if payout is None or not _may_see(user, payout):
            raise NotFound(f"Payout {payout_id} not found.")
        return services.payout_dict(payout)


@blp.route("/me/payouts")
class MyPayouts(MethodView):
    @blp.arguments(PayoutListQuery, location="query")
    @blp.response(200)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The caller's payouts, newest first (annotators)."""
        profile = current_annotator(get_session())
        query = select(Payout).where(Payout.payee_reference == services.payee_reference(profile.id))
        return {"items": _list(query, args)}


def _period(start: date, end: date) -> tuple[datetime, datetime]:
    if end < start:
        raise InvalidInput("'to' is before 'from'.", details={"to": "before from"})
    if (end - start).days >= MAX_RECONCILIATION_DAYS:
        raise InvalidInput(
            f"A period covers at most {MAX_RECONCILIATION_DAYS} days.", details={"to": "too far"}
        )
    return datetime.combine(start, time.min, UTC), datetime.combine(end + timedelta(days=1), time.min, UTC)


@blp.route("/finance/reconciliation")
class Reconciliation(MethodView):
    @blp.arguments(ReconciliationQuery, location="query")
    @blp.response(200)
    def get(self, args: dict[str, Any]) -> Any:
        """Payouts vs ledger vs Stripe for a period: one row per payout, totals per currency (platform finance)."""
        require_platform_role(PlatformRole.FINANCE)
        start, end = _period(args["start"], args["end"])
        report = reconciliation.reconcile(
            get_session(), gateway=services.get_gateway(), start=start, end=end, now=utcnow()
        )
        if args["format"] == "csv":
            stream = io.StringIO()
            reconciliation.write_csv(report, stream)
            filename = f"reconciliation_{args['start']}_{args['end']}.csv"
            return Response(
                stream.getvalue(),
                mimetype="text/csv",
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )
        return {
            "from": args["start"].isoformat(),
            "to": args["end"].isoformat(),
            "gateway": report.gateway,
            "counts": report.counts(),
            "discrepancies": len(report.discrepancies),
            "totals": [
                {
                    "currency": t.currency,
                    "ledger_minor": t.ledger_minor,
                    "stripe_minor": t.stripe_minor,
                    "difference_minor": t.difference_minor,
                }
                for t in report.totals
            ],
            "rows": [dict(zip(reconciliation.CSV_COLUMNS, _json_row(r), strict=True)) for r in report.rows],
            # the accepted labels of the period against the ledger's payments for them
            "earnings": check_earnings(get_session(), start=start, end=end).to_json(),
        }


def _json_row(row: reconciliation.ReconciliationRow) -> list[Any]:
    return [
        row.payout_id,
        row.payee,
        row.amount_minor,
        row.currency,
        row.idempotency_key,
        row.transfer_group,
        row.state,
        row.stripe_transfer_id,
        row.stripe_amount_minor,
        row.stripe_amount_reversed_minor,
        list(row.ledger_transaction_ids),
        row.status.value,
        row.notes,
    ]


def init_app(app: Flask, api: Api) -> None:
    """Register the payout endpoints."""
    api.register_blueprint(blp)
