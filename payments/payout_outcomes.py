"""Payout outcomes: what the gateway said about a transfer, booked on the payout row and in the ledger.

A transfer reported by the worker that made the call, by a webhook or by a lookup settles its payout (the hold
is posted, then the gateway's balance transaction moves the money out of clearing); a refusal fails it (the
hold is voided); reversals book the money back to the payee. See `payments.payouts` for the state machine
and the entries. Every function takes the caller's session and flushes, never commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from payments import ledger
from payments.errors import (
    GatewayError,
    HoldAlreadyResolved,
    InsufficientFunds,
    PayoutError,
    TransferDeclinedError,
)
from payments.gateways.base import TransferResult
from payments.money import Money
from payments.payout_models import Payout, PayoutReversal, PayoutState
from payments.payouts import (
    CLEARING_ACCOUNT,
    DEFAULT_RETRY_DELAY,
    GATEWAY_BALANCE_ACCOUNT,
    KIND_PAYOUT,
    KIND_PAYOUT_REVERSAL,
    KIND_PAYOUT_SETTLEMENT,
    payable_account_code,
)


def _lock_payout(session: Session, payout_id: int) -> Payout:
    payout = session.scalars(
        select(Payout)
        .where(Payout.id == payout_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if payout is None:
        raise PayoutError(f"no payout {payout_id}", details={"payout_id": payout_id})
    return payout


def _finish_transition(payout: Payout, state: PayoutState, now: datetime) -> None:
    payout.state = state.value
    payout.version += 1
    payout.claimed_by = None
    payout.next_attempt_at = None
    payout.updated_at = now


def record_transfer(session: Session, *, payout_id: int, transfer: TransferResult, now: datetime) -> Payout:
    """The gateway holds `transfer` for this payout: settle it (idempotent; any claim version may report it).

    A transfer is a fact, whoever learns of it (the worker that made the call, a webhook, a lookup), so this is
    not fenced by the claim's version. A second, different transfer for the same payout is recorded as an
    error and left to reconciliation (`duplicate_transfer`), never booked twice.
    """
    payout = _lock_payout(session, payout_id)
    if payout.transfer_id is not None and payout.transfer_id != transfer.id:
        payout.failure_code = "duplicate_transfer"
        payout.last_error = (
            f"the gateway also holds transfer {transfer.id} for this payout (booked {payout.transfer_id})"
        )
        session.flush()
        return payout
    if (
        transfer.amount != Money(payout.amount_minor, payout.currency)
        or transfer.destination != payout.destination
    ):
        payout.failure_code = "transfer_mismatch"
        payout.last_error = (
            f"transfer {transfer.id} is {transfer.amount.format()} to {transfer.destination}, "
            f"not {Money(payout.amount_minor, payout.currency).format()} to {payout.destination}"
        )
        if payout.state in {PayoutState.REQUESTED, PayoutState.SUBMITTING}:
            _finish_transition(payout, PayoutState.NEEDS_LOOKUP, now)
        session.flush()
        return payout
    if payout.state in {PayoutState.REQUESTED, PayoutState.SUBMITTING, PayoutState.NEEDS_LOOKUP}:
        assert payout.hold_id is not None
        posting = ledger.post_hold(
            session, hold_id=payout.hold_id, idempotency_key=f"payout:{payout.id}:settle"
        )
        _settle(payout, transfer, posting.id, now)
    elif payout.state == PayoutState.FAILED:
        _settle_late(session, payout, transfer, now)
    _record_gateway_balance(session, payout, transfer)
    _record_reversals(session, payout, transfer, now)
    session.flush()
    return payout


def _settle(payout: Payout, transfer: TransferResult, posting_id: int, now: datetime) -> None:
    payout.transfer_id = transfer.id
    payout.settle_transaction_id = posting_id
    payout.settled_at = now
    payout.failure_code = None
    _finish_transition(payout, PayoutState.SETTLED, now)


def _settle_late(session: Session, payout: Payout, transfer: TransferResult, now: datetime) -> None:
    # The hold was voided when the payout failed; the money did leave, so book it as a plain posting if the
    # payable still covers it. If it does not (a later payout already paid it), the payee was paid twice:
    # that is left visible on the row for reconciliation, not papered over.
    amount = Money(payout.amount_minor, payout.currency)
    payable = payable_account_code(payout.payee_reference)
    try:
        with session.begin_nested():
            posting = ledger.post_transaction(
                session,
                idempotency_key=f"payout:{payout.id}:late_settle",
                kind=KIND_PAYOUT,
                reference=f"payout:{payout.id}",
                legs=[ledger.debit(payable, amount), ledger.credit(CLEARING_ACCOUNT, amount)],
                metadata={"transfer": transfer.id, "late": True},
            )
    except InsufficientFunds:
        payout.transfer_id = transfer.id
        payout.failure_code = "late_transfer_unbooked"
        payout.last_error = (
            f"transfer {transfer.id} arrived after the payout failed; the payable no longer covers it"
        )
        return
    _settle(payout, transfer, posting.id, now)


def _record_gateway_balance(session: Session, payout: Payout, transfer: TransferResult) -> None:
    txn = transfer.balance_transaction
    if (
        payout.balance_ledger_transaction_id is not None
        or txn is None
        or payout.settle_transaction_id is None
    ):
        return
    amount = Money(payout.amount_minor, payout.currency)
    if txn.currency != payout.currency or txn.amount_minor != -payout.amount_minor:
        payout.last_error = (
            f"balance transaction {txn.id} moved {txn.amount_minor} {txn.currency}, not -{amount.format()}"
        )
        return
    posting = ledger.post_transaction(
        session,
        idempotency_key=f"payout:{payout.id}:gateway_balance",
        kind=KIND_PAYOUT_SETTLEMENT,
        reference=f"payout:{payout.id}",
        legs=[ledger.debit(CLEARING_ACCOUNT, amount), ledger.credit(GATEWAY_BALANCE_ACCOUNT, amount)],
        metadata={"balance_transaction": txn.id, "transfer": transfer.id},
    )
    payout.balance_transaction_id = txn.id
    payout.balance_ledger_transaction_id = posting.id


def _record_reversals(session: Session, payout: Payout, transfer: TransferResult, now: datetime) -> None:
    if payout.settle_transaction_id is None or payout.transfer_id != transfer.id:
        return
    known = {r.gateway_reversal_id for r in payout.reversals}
    payable = payable_account_code(payout.payee_reference)
    for reversal in sorted(transfer.reversals, key=lambda r: (r.created, r.id)):
        if reversal.id in known:
            continue
        posting = ledger.post_transaction(
            session,
            idempotency_key=f"payout:{payout.id}:reversal:{reversal.id}",
            kind=KIND_PAYOUT_REVERSAL,
            reference=f"payout:{payout.id}",
            legs=[
                ledger.debit(GATEWAY_BALANCE_ACCOUNT, reversal.amount),
                ledger.credit(payable, reversal.amount),
            ],
            metadata={"reversal": reversal.id, "transfer": transfer.id},
        )
        row = PayoutReversal(
            payout_id=payout.id,
            gateway_reversal_id=reversal.id,
            amount_minor=reversal.amount.amount,
            currency=reversal.amount.currency,
            ledger_transaction_id=posting.id,
        )
        session.add(row)
        payout.reversals.append(row)
        known.add(reversal.id)
    payout.amount_reversed_minor = sum(r.amount_minor for r in payout.reversals)
    if payout.amount_reversed_minor < transfer.amount_reversed_minor:
        payout.last_error = (
            f"the gateway reports {transfer.amount_reversed_minor} reversed but listed only "
            f"{payout.amount_reversed_minor}; fetch the remaining reversals"
        )
    if payout.amount_reversed_minor >= payout.amount_minor and payout.state == PayoutState.SETTLED:
        payout.reversed_at = now
        _finish_transition(payout, PayoutState.REVERSED, now)


def record_gateway_error(
    session: Session,
    *,
    payout_id: int,
    version: int,
    error: GatewayError,
    now: datetime,
    retry_delay: timedelta = DEFAULT_RETRY_DELAY,
) -> Payout:
    """A call for this payout failed: fail it and release its hold if the gateway declined, else retry later.

    Fenced: only the holder of the current claim (`version`) may record a failure; a worker whose lease was
    taken over learns nothing new and must not undo what the newer claim did.
    """
    payout = _lock_payout(session, payout_id)
    if payout.version != version or payout.state not in {PayoutState.SUBMITTING, PayoutState.NEEDS_LOOKUP}:
        return payout
    details = error.details if isinstance(error.details, dict) else {}
    payout.last_error = str(error)[:2000]
    payout.failure_code = str(details.get("stripe_code") or error.code)
    if isinstance(error, TransferDeclinedError) and payout.state == PayoutState.SUBMITTING:
        _fail(session, payout, reason=payout.failure_code, now=now)
        if details.get("stripe_code") == "insufficient_capabilities_for_transfer":
            # the account cannot receive transfers any more: skip it until `account.updated` says otherwise
            payout.account.payouts_enabled = False
    else:
        payout.claimed_by = None
        payout.next_attempt_at = now + retry_delay
        payout.updated_at = now
    session.flush()
    return payout


def _fail(session: Session, payout: Payout, *, reason: str, now: datetime) -> None:
    assert payout.hold_id is not None
    try:
        ledger.void_hold(session, hold_id=payout.hold_id, reason=reason)
    except HoldAlreadyResolved as exc:
        raise PayoutError(
            f"payout {payout.id}'s hold was already resolved; it cannot fail",
            details={"payout_id": payout.id},
        ) from exc
    payout.failed_at = now
    _finish_transition(payout, PayoutState.FAILED, now)


def resolve_lookup(
    session: Session, *, payout_id: int, version: int, transfers: list[TransferResult], now: datetime
) -> Payout:
    """Settle a payout in needs_lookup with the transfer the gateway holds for it, or fail it if there is none."""
    payout = _lock_payout(session, payout_id)
    if payout.version != version or payout.state != PayoutState.NEEDS_LOOKUP:
        return payout
    ours = [t for t in transfers if t.metadata.get("payout_id", str(payout.id)) == str(payout.id)]
    if not ours:
        payout.failure_code = "not_found_at_gateway"
        payout.last_error = f"no transfer in group {payout.transfer_group} at the gateway"
        _fail(session, payout, reason="not_found_at_gateway", now=now)
        session.flush()
        return payout
    ours.sort(key=lambda t: (t.created, t.id))
    record_transfer(session, payout_id=payout.id, transfer=ours[0], now=now)
    for extra in ours[1:]:
        record_transfer(session, payout_id=payout.id, transfer=extra, now=now)
    return payout


def find_payout_for_transfer(session: Session, *, transfer: TransferResult) -> Payout | None:
    """Our payout for a gateway transfer: by transfer id, else by its group `payout:{id}`."""
    payout = session.scalars(select(Payout).where(Payout.transfer_id == transfer.id)).one_or_none()
    if payout is None and transfer.transfer_group:
        payout = session.scalars(
            select(Payout).where(Payout.transfer_group == transfer.transfer_group)
        ).one_or_none()
    return payout


def sync_transfer(session: Session, *, transfer: TransferResult, now: datetime) -> Payout | None:
    """Apply what the gateway says about a transfer (created, reversed) to its payout; None if not ours."""
    payout = find_payout_for_transfer(session, transfer=transfer)
    if payout is None:
        return None
    return record_transfer(session, payout_id=payout.id, transfer=transfer, now=now)


def unbalanced_settled_payouts(session: Session, *, limit: int = 100) -> list[tuple[int, str]]:
    """Settled payouts whose gateway balance transaction is not booked yet: (payout id, transfer id)."""
    rows = session.execute(
        select(Payout.id, Payout.transfer_id)
        .where(
            Payout.state.in_([PayoutState.SETTLED.value, PayoutState.REVERSED.value]),
            Payout.balance_ledger_transaction_id.is_(None),
            Payout.transfer_id.is_not(None),
        )
        .order_by(Payout.id)
        .limit(limit)
    )
    return [(payout_id, str(transfer_id)) for payout_id, transfer_id in rows]
