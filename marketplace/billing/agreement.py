"""Labels against the ledger: every accepted label of a period was paid exactly its price, and nothing else was.

`payments` reconciles payouts with the ledger and Stripe but knows no labels; this is the marketplace's half of
finance's check, reported beside it by `flask finance reconcile` and `GET /api/v1/finance/reconciliation`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.billing.services import payable_account_code
from marketplace.projects.models import Project
from marketplace.work.models import Assignment, Label, ReviewState
from payments.models import Account, LedgerEntry, LedgerTransaction

#: at most this many disagreeing labels are listed (all are counted)
LISTED = 200


@dataclass
class EarningsAgreement:
    """Per currency: what accepted labels earned, what the ledger paid for them, and the labels that disagree."""

    labels_accepted: int = 0
    unpaid_by_policy: int = 0
    earned_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    paid_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    disagreeing: list[dict[str, Any]] = field(default_factory=list)
    disagreeing_count: int = 0

    def to_json(self) -> dict[str, Any]:
        currencies = sorted(set(self.earned_minor) | set(self.paid_minor))
        return {
            "labels_accepted": self.labels_accepted,
            "unpaid_by_policy": self.unpaid_by_policy,
            "totals": [
                {
                    "currency": c,
                    "earned_minor": self.earned_minor.get(c, 0),
                    "paid_minor": self.paid_minor.get(c, 0),
                    "difference_minor": self.paid_minor.get(c, 0) - self.earned_minor.get(c, 0),
                }
                for c in currencies
            ],
            "disagreeing_labels": self.disagreeing_count,
            "disagreements": self.disagreeing,
        }


def check_earnings(session: Session, *, start: datetime, end: datetime) -> EarningsAgreement:
    """Compare the labels accepted in [start, end) with the ledger's payments keyed by them."""
    report = EarningsAgreement()
    rows = session.execute(
        select(
            Label.id,
            Label.annotator_id,
            Label.is_gold,
            Assignment.price_minor,
            Assignment.currency,
            Project.review_params,
        )
        .join(Assignment, Assignment.id == Label.assignment_id)
        .join(Project, Project.id == Label.project_id)
        .where(
            Label.review_state == ReviewState.ACCEPTED.value,
            Label.reviewed_at >= start,
            Label.reviewed_at < end,
        )
        .order_by(Label.id)
    ).tuples()
    expected: dict[str, tuple[int, int, str]] = {}
    for label_id, annotator_id, is_gold, price, currency, params in rows:
        report.labels_accepted += 1
        if is_gold and not params.get("pay_correct_gold", True):
            report.unpaid_by_policy += 1
            continue
        report.earned_minor[currency] += price
        expected[f"label:{label_id}:accept"] = (label_id, price, payable_account_code(annotator_id))
    paid: dict[str, int] = defaultdict(int)
    keys = list(expected)
    for start_at in range(0, len(keys), 500):
        chunk = keys[start_at : start_at + 500]
        for key, code, currency, direction, amount in session.execute(
            select(
                LedgerTransaction.idempotency_key,
                Account.code,
                Account.currency,
                LedgerEntry.direction,
                LedgerEntry.amount_minor,
            )
            .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
            .join(Account, Account.id == LedgerEntry.account_id)
            .where(LedgerTransaction.idempotency_key.in_(chunk))
        ).tuples():
            if code == expected[key][2] and direction == "credit":
                paid[key] += amount
                report.paid_minor[currency] += amount
    for key, (label_id, price, _code) in expected.items():
        if paid.get(key, 0) != price:
            report.disagreeing_count += 1
            if len(report.disagreeing) < LISTED:
                report.disagreeing.append(
                    {"label_id": label_id, "price_minor": price, "paid_minor": paid.get(key, 0)}
                )
    return report
