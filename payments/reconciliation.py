"""Reconciliation: our payouts, the ledger and the gateway's transfers compared, one row per payout.

For a period (payouts created in [start, end)), each payout gets one row with what we hold (state, amount,
idempotency key, transfer group, ledger transaction ids) and what the gateway holds (its transfer, amount and
reversals), and a match status:

- `matched`: the three agree (a failed payout with no transfer and a voided hold agrees too).
- `in_flight`: not resolved yet, and still young.
- `pending_past_due`: not resolved, older than `past_due_after`.
- `missing_in_stripe`: we booked a transfer the gateway does not have.
- `missing_in_ledger`: the gateway moved money the ledger does not show (a transfer for a failed or open
  payout, a reversal not booked, or a transfer of no payout of ours: those get rows without a payout id).
- `amount_mismatch`: the transfer's amount or currency differs from the payout's.
- `duplicate_transfer`: more than one transfer carries the payout's transfer group.
- `reversed`: (part of) the transfer was taken back, and the ledger shows it.

Totals per currency compare what the ledger says was paid (postings less reversals) with what the gateway
transferred (amounts less reversals) for the same payouts plus the unknown transfers. Reads only.

With the local gateway there is no outside record to compare with: rows then check the payout against the
ledger alone, and the gateway columns stay empty.
"""

from __future__ import annotations

import csv
import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from payments import ledger
from payments.gateways.base import PayoutGateway, TransferResult
from payments.models import LedgerTransaction, TransactionStatus
from payments.payout_models import OPEN_STATES, Payout, PayoutState
from payments.payouts import payable_account_code


class MatchStatus(enum.StrEnum):
    MATCHED = "matched"
    IN_FLIGHT = "in_flight"
    PENDING_PAST_DUE = "pending_past_due"
    MISSING_IN_STRIPE = "missing_in_stripe"
    MISSING_IN_LEDGER = "missing_in_ledger"
    AMOUNT_MISMATCH = "amount_mismatch"
    DUPLICATE_TRANSFER = "duplicate_transfer"
    REVERSED = "reversed"


#: statuses that need someone to look
DISCREPANCIES = frozenset(
    {
        MatchStatus.PENDING_PAST_DUE,
        MatchStatus.MISSING_IN_STRIPE,
        MatchStatus.MISSING_IN_LEDGER,
        MatchStatus.AMOUNT_MISMATCH,
        MatchStatus.DUPLICATE_TRANSFER,
    }
)

CSV_COLUMNS = (
    "payout_id",
    "payee",
    "amount_minor",
    "currency",
    "idempotency_key",
    "transfer_group",
    "state",
    "stripe_transfer_id",
    "stripe_amount_minor",
    "stripe_amount_reversed_minor",
    "ledger_transaction_ids",
    "status",
    "notes",
)


@dataclass(frozen=True)
class ReconciliationRow:
    """One payout (or one unknown transfer) and how it compares."""

    payout_id: int | None
    payee: str | None
    amount_minor: int | None
    currency: str
    idempotency_key: str | None
    transfer_group: str | None
    state: str | None
    stripe_transfer_id: str | None
    stripe_amount_minor: int | None
    stripe_amount_reversed_minor: int | None
    ledger_transaction_ids: tuple[int, ...]
    status: MatchStatus
    notes: str = ""

    def as_csv(self) -> list[str]:
        """The row as CSV cells, in `CSV_COLUMNS` order."""
        values = (
            self.payout_id,
            self.payee,
            self.amount_minor,
            self.currency,
            self.idempotency_key,
            self.transfer_group,
            self.state,
            self.stripe_transfer_id,
            self.stripe_amount_minor,
            self.stripe_amount_reversed_minor,
            ";".join(str(i) for i in self.ledger_transaction_ids),
            self.status.value,
            self.notes,
        )
        return ["" if v is None else str(v) for v in values]


@dataclass(frozen=True)
class CurrencyTotals:
    """Paid out in one currency: by the ledger's account and by the gateway's, and the difference."""

    currency: str
    ledger_minor: int
    stripe_minor: int

    @property
    def difference_minor(self) -> int:
        """Gateway minus ledger: positive when the gateway moved more than the ledger shows."""
        return self.stripe_minor - self.ledger_minor


@dataclass
class ReconciliationReport:
    """The rows and totals of one period."""

    start: datetime
    end: datetime
    gateway: str
    rows: list[ReconciliationRow] = field(default_factory=list)
    totals: list[CurrencyTotals] = field(default_factory=list)

    @property
    def discrepancies(self) -> list[ReconciliationRow]:
        """The rows that need someone to look."""
        return [row for row in self.rows if row.status in DISCREPANCIES]

    def counts(self) -> dict[str, int]:
        """How many rows have each status."""
        counts: dict[str, int] = defaultdict(int)
        for row in self.rows:
            counts[row.status.value] += 1
        return dict(sorted(counts.items()))


def write_csv(report: ReconciliationReport, stream: IO[str]) -> None:
    """The report's rows as CSV with a header line."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow(row.as_csv())


@dataclass
class _LedgerView:
    ids: list[int]
    paid_minor: int
    reversed_minor: int
    hold_resolution: str | None
    notes: list[str]


def _ledger_view(session: Session, payout: Payout, transactions: dict[int, LedgerTransaction]) -> _LedgerView:
    payable = payable_account_code(payout.payee_reference)
    ids = [
        i
        for i in (payout.hold_id, payout.settle_transaction_id, payout.balance_ledger_transaction_id)
        if i is not None
    ]
    ids += [r.ledger_transaction_id for r in payout.reversals]
    notes: list[str] = []
    resolution = (
        ledger.hold_resolution(session, hold_id=payout.hold_id) if payout.hold_id is not None else None
    )
    if resolution is not None and resolution.id not in ids:
        ids.append(resolution.id)
    paid = 0
    if payout.settle_transaction_id is not None:
        posting = transactions.get(payout.settle_transaction_id)
        if posting is None or posting.status != TransactionStatus.POSTED:
            notes.append("the settle posting is missing from the ledger")
        else:
            paid = _debits_to(session, posting, payable)
    reversed_minor = 0
    for reversal in payout.reversals:
        posting = transactions.get(reversal.ledger_transaction_id)
        if posting is not None:
            reversed_minor += _credits_to(session, posting, payable)
    return _LedgerView(
        ids=sorted(set(ids)),
        paid_minor=paid,
        reversed_minor=reversed_minor,
        hold_resolution=resolution.status if resolution is not None else None,
        notes=notes,
    )


def _account_ids(session: Session, code: str) -> set[int]:
    return set(session.scalars(select(ledger.Account.id).where(ledger.Account.code == code)))


def _debits_to(session: Session, posting: LedgerTransaction, code: str) -> int:
    ids = _account_ids(session, code)
    return sum(e.amount_minor for e in posting.entries if e.account_id in ids and e.direction == "debit")


def _credits_to(session: Session, posting: LedgerTransaction, code: str) -> int:
    ids = _account_ids(session, code)
    return sum(e.amount_minor for e in posting.entries if e.account_id in ids and e.direction == "credit")


def _classify(
    payout: Payout,
    view: _LedgerView,
    transfers: list[TransferResult],
    *,
    compare_gateway: bool,
    now: datetime,
    past_due_after: timedelta,
) -> tuple[MatchStatus, list[str]]:
    notes = list(view.notes)
    state = PayoutState(payout.state)
    paid_state = state in {PayoutState.SETTLED, PayoutState.REVERSED}
    if compare_gateway and len(transfers) > 1:
        return MatchStatus.DUPLICATE_TRANSFER, [*notes, "transfers: " + ", ".join(t.id for t in transfers)]
    transfer = transfers[0] if transfers else None
    if state in OPEN_STATES:
        if compare_gateway and transfer is not None and now - payout.created_at >= past_due_after:
            return MatchStatus.MISSING_IN_LEDGER, [
                *notes,
                f"transfer {transfer.id} exists; the payout is {state}",
            ]
        if now - payout.created_at >= past_due_after:
            return MatchStatus.PENDING_PAST_DUE, notes
        return MatchStatus.IN_FLIGHT, notes
    if state == PayoutState.FAILED:
        if compare_gateway and transfer is not None:
            return MatchStatus.MISSING_IN_LEDGER, [
                *notes,
                f"transfer {transfer.id} exists; the payout failed",
            ]
        if view.hold_resolution not in {TransactionStatus.VOIDED, TransactionStatus.EXPIRED}:
            return MatchStatus.MISSING_IN_LEDGER, [*notes, "the payout failed but its hold is not released"]
        return MatchStatus.MATCHED, notes
    amount = payout.amount_minor
    if paid_state and view.paid_minor != amount:
        return MatchStatus.MISSING_IN_LEDGER, [
            *notes,
            f"the ledger shows {view.paid_minor} paid, not {amount}",
        ]
    if not compare_gateway:
        return (MatchStatus.REVERSED if view.reversed_minor else MatchStatus.MATCHED), notes
    if transfer is None:
        return MatchStatus.MISSING_IN_STRIPE, [*notes, f"no transfer {payout.transfer_id} at the gateway"]
    if transfer.amount.amount != amount or transfer.amount.currency != payout.currency:
        return MatchStatus.AMOUNT_MISMATCH, [*notes, f"the gateway transferred {transfer.amount.format()}"]
    if transfer.amount_reversed_minor != view.reversed_minor:
        return MatchStatus.MISSING_IN_LEDGER, [
            *notes,
            f"the gateway reversed {transfer.amount_reversed_minor}, the ledger {view.reversed_minor}",
        ]
    if payout.balance_ledger_transaction_id is None:
        notes.append("the gateway balance transaction is not booked yet")
    return (MatchStatus.REVERSED if view.reversed_minor else MatchStatus.MATCHED), notes


def reconcile(
    session: Session,
    *,
    gateway: PayoutGateway,
    start: datetime,
    end: datetime,
    now: datetime,
    past_due_after: timedelta = timedelta(hours=24),
    margin: timedelta = timedelta(days=2),
) -> ReconciliationReport:
    """Compare the payouts created in [start, end) with the ledger and the gateway."""
    if start >= end:
        raise ValueError("the period's start must be before its end")
    compare_gateway = gateway.name != "local"
    report = ReconciliationReport(start=start, end=end, gateway=gateway.name)
    period_payouts = list(
        session.scalars(
            select(Payout).where(Payout.created_at >= start, Payout.created_at < end).order_by(Payout.id)
        )
    )
    # A transfer is created a little after its payout row (and retried for up to a day): look wider.
    listed = (
        gateway.list_transfers(created_from=start - margin, created_to=end + margin)
        if compare_gateway
        else []
    )
    by_group: dict[str, list[TransferResult]] = defaultdict(list)
    by_id: dict[str, TransferResult] = {}
    for transfer in listed:
        by_id[transfer.id] = transfer
        if transfer.transfer_group:
            by_group[transfer.transfer_group].append(transfer)

    ledger_ids = {i for p in period_payouts for i in (p.settle_transaction_id,) if i is not None}
    ledger_ids |= {r.ledger_transaction_id for p in period_payouts for r in p.reversals}
    transactions = {
        t.id: t
        for t in session.scalars(select(LedgerTransaction).where(LedgerTransaction.id.in_(ledger_ids)))
    }
    ledger_totals: dict[str, int] = defaultdict(int)
    gateway_totals: dict[str, int] = defaultdict(int)

    for payout in period_payouts:
        transfers = list(by_group.get(payout.transfer_group or "", []))
        if compare_gateway and payout.transfer_id and all(t.id != payout.transfer_id for t in transfers):
            fetched = by_id.get(payout.transfer_id) or gateway.retrieve_transfer(payout.transfer_id)
            if fetched is not None:
                transfers.append(fetched)
        view = _ledger_view(session, payout, transactions)
        status, notes = _classify(
            payout, view, transfers, compare_gateway=compare_gateway, now=now, past_due_after=past_due_after
        )
        primary = next(
            (t for t in transfers if t.id == payout.transfer_id), transfers[0] if transfers else None
        )
        ledger_totals[payout.currency] += view.paid_minor - view.reversed_minor
        for transfer in transfers:
            gateway_totals[transfer.amount.currency] += (
                transfer.amount.amount - transfer.amount_reversed_minor
            )
        report.rows.append(
            ReconciliationRow(
                payout_id=payout.id,
                payee=payout.payee_reference,
                amount_minor=payout.amount_minor,
                currency=payout.currency,
                idempotency_key=payout.idempotency_key,
                transfer_group=payout.transfer_group,
                state=payout.state,
                stripe_transfer_id=primary.id if primary else None,
                stripe_amount_minor=primary.amount.amount if primary else None,
                stripe_amount_reversed_minor=primary.amount_reversed_minor if primary else None,
                ledger_transaction_ids=tuple(view.ids),
                status=status,
                notes="; ".join(notes),
            )
        )

    for transfer in _unknown_transfers(session, listed, start=start, end=end):
        gateway_totals[transfer.amount.currency] += transfer.amount.amount - transfer.amount_reversed_minor
        report.rows.append(
            ReconciliationRow(
                payout_id=None,
                payee=None,
                amount_minor=None,
                currency=transfer.amount.currency,
                idempotency_key=None,
                transfer_group=transfer.transfer_group,
                state=None,
                stripe_transfer_id=transfer.id,
                stripe_amount_minor=transfer.amount.amount,
                stripe_amount_reversed_minor=transfer.amount_reversed_minor,
                ledger_transaction_ids=(),
                status=MatchStatus.MISSING_IN_LEDGER,
                notes=f"transfer to {transfer.destination} matches no payout",
            )
        )
    currencies = sorted(ledger_totals.keys() | gateway_totals.keys())
    report.totals = [
        CurrencyTotals(
            currency=c,
            ledger_minor=ledger_totals.get(c, 0),
            stripe_minor=gateway_totals.get(c, 0) if compare_gateway else ledger_totals.get(c, 0),
        )
        for c in currencies
    ]
    return report


def _unknown_transfers(
    session: Session, transfers: Iterable[TransferResult], *, start: datetime, end: datetime
) -> list[TransferResult]:
    in_period = [t for t in transfers if start <= t.created < end]
    if not in_period:
        return []
    groups = [t.transfer_group for t in in_period if t.transfer_group]
    ids = [t.id for t in in_period]
    known = session.execute(
        select(Payout.transfer_group, Payout.transfer_id).where(
            or_(Payout.transfer_group.in_(groups), Payout.transfer_id.in_(ids))
        )
    ).all()
    known_groups = {g for g, _ in known if g}
    known_ids = {i for _, i in known if i}
    return [t for t in in_period if t.transfer_group not in known_groups and t.id not in known_ids]
