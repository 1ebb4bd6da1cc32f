"""The finance console: payouts of a period, their totals, the reconciliation summary and CSV downloads."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from flask import Response, render_template, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.db import get_session, utcnow
from marketplace.errors import InvalidInput
from marketplace.payouts.services import get_gateway
from marketplace.web.access import FINANCE, area_required
from marketplace.web.blueprint import bp, csv_response
from marketplace.web.forms import PeriodForm
from payments import reconciliation
from payments.money import Money
from payments.payout_models import Payout

DEFAULT_DAYS = 30
MAX_DAYS = 366
PAYOUTS_SHOWN = 500
PAYOUT_CSV_COLUMNS = [
    "payout_id",
    "payee",
    "amount_minor",
    "currency",
    "amount",
    "state",
    "created_at",
    "settled_at",
    "failed_at",
    "transfer_id",
    "failure_code",
]


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: the start of the day after the last."""
        return datetime.combine(self.last_day + timedelta(days=1), time.min, tzinfo=UTC)

    def query(self) -> dict[str, str]:
        return {"since": self.first_day.isoformat(), "until": self.last_day.isoformat()}


def _period(form: PeriodForm) -> Period:
    """The asked period (default: the last 30 days up to today, UTC); at most a year."""
    today = utcnow().date()
    form.validate()
    if form.errors:
        raise InvalidInput("Dates are written YYYY-MM-DD, between 1970 and 9000.", details=form.errors)
    last = form.until.data or today
    first = form.since.data or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidInput("The period starts after it ends.")
    if (last - first).days >= MAX_DAYS:
        raise InvalidInput(f"Choose a period of at most {MAX_DAYS} days.")
    return Period(first, last)


def _payee_names(session: Session, references: set[str]) -> dict[str, str]:
    """'annotator:17' → the annotator's display name, for all the references in one query."""
    prefix = "annotator:"
    ids = {
        int(ref[len(prefix) :])
        for ref in references
        if ref.startswith(prefix) and ref[len(prefix) :].isdigit()
    }
    if not ids:
        return {}
    rows = session.execute(
        select(AnnotatorProfile.id, AnnotatorProfile.display_name).where(AnnotatorProfile.id.in_(ids))
    ).tuples()
    return {f"annotator:{pid}": name for pid, name in rows}


@bp.get("/finance")
@area_required(FINANCE)
def finance() -> str:
    """Payouts created in the period with totals per state, and how they reconcile."""
    session = get_session()
    form = PeriodForm(request.args)
    period = _period(form)
    in_period = (Payout.created_at >= period.start, Payout.created_at < period.end)
    totals = [
        (state, Money(int(amount), currency), int(count))
        for state, currency, count, amount in session.execute(
            select(Payout.state, Payout.currency, func.count(), func.sum(Payout.amount_minor))
            .where(*in_period)
            .group_by(Payout.state, Payout.currency)
            .order_by(Payout.currency, Payout.state)
        ).tuples()
    ]
    payouts = list(
        session.scalars(select(Payout).where(*in_period).order_by(Payout.id.desc()).limit(PAYOUTS_SHOWN + 1))
    )
    more = len(payouts) > PAYOUTS_SHOWN
    payouts = payouts[:PAYOUTS_SHOWN]
    report = reconciliation.reconcile(
        session, gateway=get_gateway(), start=period.start, end=period.end, now=utcnow()
    )
    return render_template(
        "web/finance/payouts.html",
        form=form,
        period=period,
        totals=totals,
        payouts=payouts,
        more=more,
        names=_payee_names(session, {p.payee_reference for p in payouts}),
        report=report,
        now=utcnow(),
    )


@bp.get("/finance/payouts.csv")
@area_required(FINANCE)
def payouts_csv() -> Response:
    """Every payout created in the period, as CSV (amounts in minor units and formatted)."""
    session = get_session()
    period = _period(PeriodForm(request.args))
    payouts = list(
        session.scalars(
            select(Payout)
            .where(Payout.created_at >= period.start, Payout.created_at < period.end)
            .order_by(Payout.id)
        )
    )

    def rows() -> Iterator[list[str]]:
        yield PAYOUT_CSV_COLUMNS
        for p in payouts:
            yield [
                str(p.id),
                p.payee_reference,
                str(p.amount_minor),
                p.currency,
                Money(p.amount_minor, p.currency).format(),
                p.state,
                p.created_at.isoformat(),
                p.settled_at.isoformat() if p.settled_at else "",
                p.failed_at.isoformat() if p.failed_at else "",
                p.transfer_id or "",
                p.failure_code or "",
            ]

    return csv_response(f"payouts-{period.first_day}-{period.last_day}.csv", rows())


@bp.get("/finance/reconciliation.csv")
@area_required(FINANCE)
def reconciliation_csv() -> Response:
    """The reconciliation of the period, one row per payout, as payments.reconciliation writes it."""
    session = get_session()
    period = _period(PeriodForm(request.args))
    report = reconciliation.reconcile(
        session, gateway=get_gateway(), start=period.start, end=period.end, now=utcnow()
    )
    buffer = io.StringIO()
    reconciliation.write_csv(report, buffer)
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="reconciliation-{period.first_day}-{period.last_day}.csv"'
    )
    return response
