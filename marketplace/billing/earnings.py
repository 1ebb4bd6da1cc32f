"""An annotator's earnings: per label and per day pending, accepted, rejected, bonuses and paid out, with the
payable balance as it is now. Read from the labels and from what the ledger credited and debited the annotator's
payable account (`marketplace.billing.services` writes those flows)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.models import Bonus
from marketplace.billing.services import KIND_PAYOUT, KIND_PAYOUT_REVERSAL, payable_account_code
from marketplace.db import utcnow
from marketplace.errors import InvalidInput, NotFound
from marketplace.work.models import Assignment, Label, ReviewState
from payments import ledger
from payments.models import Account, LedgerEntry, LedgerTransaction, TransactionStatus
from payments.money import Money


@dataclass(frozen=True, slots=True)
class LabelEarning:
    """One label and what it earns."""

    label_id: int
    project_id: int
    submitted_at: datetime
    review_state: str
    #: the assignment's price, paid if the label is accepted
    price: Money
    #: what the ledger actually credited the annotator for it
    earned: Money


@dataclass(frozen=True, slots=True)
class BonusEarning:
    """One bonus: from which project, how much and why."""

    bonus_id: int
    project_id: int
    granted_at: datetime
    amount: Money
    reason: str


@dataclass(frozen=True, slots=True)
class DayEarnings:
    """One day: labels by review state (on the day submitted), bonuses and payouts (on the day given or made)."""

    day: date
    pending: Money
    accepted: Money
    rejected: Money
    paid_out: Money
    bonuses: Money


@dataclass(frozen=True, slots=True)
class Earnings:
    """An annotator's earnings over a period, with the payable balance as it is now."""

    annotator_id: int
    currency: str
    since: datetime
    until: datetime
    #: price of labels awaiting review
    pending: Money
    #: earned by accepted labels
    accepted: Money
    #: price of rejected labels (not earned)
    rejected: Money
    #: bonuses given in the period (already payable)
    bonuses: Money
    #: sent to the annotator's connected account by confirmed payouts, less reversed transfers
    paid_out: Money
    #: in payouts requested and not yet confirmed (all time)
    payout_pending: Money
    #: earned and not yet paid out or requested (all time)
    payable: Money
    days: list[DayEarnings]
    labels: list[LabelEarning]
    bonus_items: list[BonusEarning]


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def annotator_earnings(
    session: Session,
    *,
    annotator_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    currency: str | None = None,
    label_limit: int = 1000,
    bonus_limit: int = 1000,
) -> Earnings:
    """Per label and per day: pending, accepted, rejected, bonuses and paid out, in [since, until) (default:
    30 days)."""
    profile = session.get(AnnotatorProfile, annotator_id)
    if profile is None:
        raise NotFound(f"Annotator {annotator_id} not found.")
    currency = currency or profile.currency
    until = until or utcnow()
    since = since or until - timedelta(days=30)
    if since >= until:
        raise InvalidInput("since must be before until", details={"since": "after until"})
    zero = Money.zero(currency)

    rows = session.execute(
        select(Label.id, Label.project_id, Label.created_at, Label.review_state, Assignment.price_minor)
        .join(Assignment, Assignment.id == Label.assignment_id)
        .where(
            Label.annotator_id == annotator_id,
            Assignment.currency == currency,
            Label.created_at >= since,
            Label.created_at < until,
        )
        .order_by(Label.created_at.desc(), Label.id.desc())
    ).all()

    payable_code = payable_account_code(annotator_id)
    payable = session.scalar(
        select(Account).where(Account.code == payable_code, Account.currency == currency)
    )
    earned: dict[int, int] = {}
    paid_by_day: dict[date, int] = defaultdict(int)
    payable_now = payout_pending = zero
    if payable is not None:
        references = [f"label:{row.id}" for row in rows if row.review_state == ReviewState.ACCEPTED]
        for chunk in _chunks(references):
            for reference, total in session.execute(
                select(LedgerTransaction.reference, func.sum(LedgerEntry.amount_minor))
                .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
                .where(
                    LedgerEntry.account_id == payable.id,
                    LedgerEntry.direction == "credit",
                    LedgerTransaction.status == TransactionStatus.POSTED.value,
                    LedgerTransaction.reference.in_(chunk),
                )
                .group_by(LedgerTransaction.reference)
            ):
                earned[int(reference.split(":", 1)[1])] = int(total)
        # Paid out: confirmed payouts debit the payable; a reversed transfer credits it back (net of both).
        for created_at, direction, amount in session.execute(
            select(LedgerTransaction.created_at, LedgerEntry.direction, LedgerEntry.amount_minor)
            .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
            .where(
                LedgerEntry.account_id == payable.id,
                LedgerTransaction.kind.in_([KIND_PAYOUT, KIND_PAYOUT_REVERSAL]),
                LedgerTransaction.status == TransactionStatus.POSTED.value,
                LedgerTransaction.created_at >= since,
                LedgerTransaction.created_at < until,
            )
        ):
            paid_by_day[created_at.date()] += int(amount) if direction == "debit" else -int(amount)
        balance = ledger.balance(session, account_code=payable_code, currency=currency)
        payable_now, payout_pending = balance.available, balance.pending_debits

    bonus_rows = session.scalars(
        select(Bonus)
        .where(
            Bonus.annotator_id == annotator_id,
            Bonus.currency == currency,
            Bonus.created_at >= since,
            Bonus.created_at < until,
        )
        .order_by(Bonus.id.desc())
    ).all()
    bonus_by_day: dict[date, int] = defaultdict(int)
    for bonus in bonus_rows:
        bonus_by_day[bonus.created_at.date()] += bonus.amount_minor

    by_day: dict[date, dict[str, int]] = defaultdict(lambda: {"pending": 0, "accepted": 0, "rejected": 0})
    labels: list[LabelEarning] = []
    for row in rows:
        state = row.review_state
        amount = earned.get(row.id, 0) if state == ReviewState.ACCEPTED else row.price_minor
        if state in by_day[row.created_at.date()]:
            by_day[row.created_at.date()][state] += amount
        if len(labels) < label_limit:
            labels.append(
                LabelEarning(
                    label_id=row.id,
                    project_id=row.project_id,
                    submitted_at=row.created_at,
                    review_state=state,
                    price=Money(row.price_minor, currency),
                    earned=Money(earned.get(row.id, 0), currency),
                )
            )
    days = [
        DayEarnings(
            day=day,
            pending=Money(by_day[day]["pending"], currency) if day in by_day else zero,
            accepted=Money(by_day[day]["accepted"], currency) if day in by_day else zero,
            rejected=Money(by_day[day]["rejected"], currency) if day in by_day else zero,
            paid_out=Money(paid_by_day.get(day, 0), currency),
            bonuses=Money(bonus_by_day.get(day, 0), currency),
        )
        for day in sorted(by_day.keys() | paid_by_day.keys() | bonus_by_day.keys())
    ]
    return Earnings(
        annotator_id=annotator_id,
        currency=currency,
        since=since,
        until=until,
        pending=Money.total((d.pending for d in days), currency),
        accepted=Money.total((d.accepted for d in days), currency),
        rejected=Money.total((d.rejected for d in days), currency),
        paid_out=Money.total((d.paid_out for d in days), currency),
        bonuses=Money.total((d.bonuses for d in days), currency),
        payout_pending=payout_pending,
        payable=payable_now,
        days=days,
        labels=labels,
        bonus_items=[
            BonusEarning(
                bonus_id=bonus.id,
                project_id=bonus.project_id,
                granted_at=bonus.created_at,
                amount=Money(bonus.amount_minor, currency),
                reason=bonus.reason,
            )
            for bonus in bonus_rows[:bonus_limit]
        ],
    )
