"""Holds: pending transactions that are later posted, voided or expired, exactly once.

A hold reserves money: its entries count against the available balance of the accounts it debits (for
credit-normal accounts) but not in their posted balance. Its resolution is a new transaction whose
`resolves_hold_id` is unique in the database, so a hold cannot be resolved twice even by two processes racing.
Each resolver first locks the hold's row (`FOR UPDATE`), then looks for an existing resolution with a fresh
statement. The balances change at the commit (`payments.deferred_balances`), in ascending account id: holds
before balances, always, so resolvers never deadlock each other.

A resolution never lowers what an account has available: posting a hold moves its reserved amounts (or less) from
pending to posted, voiding or expiring it frees them. So it needs no lock on the balances before the commit: the
check there always passes, and the busiest row of all, a project's budget that every lease and every decision
touches, is locked only for the commit's few statements, however long the rest of the unit of work takes.

Idempotency keys beginning with `hold:` are reserved for resolutions (`hold:{id}:post`, `hold:{id}:void`,
`hold:{id}:expire`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from payments.balances import unresolved_hold_filter
from payments.errors import HoldAlreadyResolved, HoldNotFound, InvalidAmount
from payments.models import Account, LedgerTransaction, TransactionStatus
from payments.postings import (
    Leg,
    check_balanced,
    content_hash,
    find_transaction,
    legs_of,
    normalise_legs,
    record_once,
    record_transaction,
    replay_or_conflict,
    validate_header,
)


def _require_aware(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (use payments.db.utcnow())")
    return moment


def place_hold(
    session: Session,
    *,
    idempotency_key: str,
    kind: str,
    reference: str,
    legs: Sequence[Leg],
    expires_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    at_commit: bool = False,
) -> LedgerTransaction:
    """Reserve balanced legs as a pending transaction, counted against the debited accounts' availability.

    A hold with no legs is allowed (free work follows the same lease → accept path and moves nothing).
    `at_commit`: lock and update the cached balances at the commit rather than now, for a hold on an account that
    many concurrent transactions hold money on (`payments.deferred_balances`); the commit may then raise the
    retryable FundsTakenBeforeCommit.
    """
    validate_header(idempotency_key=idempotency_key, kind=kind, reference=reference)
    legs = normalise_legs(legs)
    check_balanced(legs)
    if expires_at is not None:
        _require_aware(expires_at, "expires_at")
    return record_once(
        session,
        idempotency_key=idempotency_key,
        kind=kind,
        reference=reference,
        status=TransactionStatus.PENDING,
        legs=legs,
        metadata=metadata,
        expires_at=expires_at,
        at_commit=at_commit,
    )


def _lock_hold(session: Session, hold_id: int) -> LedgerTransaction:
    hold = session.scalars(
        select(LedgerTransaction)
        .where(LedgerTransaction.id == hold_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if hold is None:
        raise HoldNotFound(f"no hold {hold_id}", details={"hold_id": hold_id})
    if hold.status != TransactionStatus.PENDING:
        raise HoldNotFound(
            f"transaction {hold_id} is not a hold (it is {hold.status})", details={"hold_id": hold_id}
        )
    return hold


def hold_resolution(session: Session, *, hold_id: int) -> LedgerTransaction | None:
    """The transaction that posted, voided or expired the hold, or None while it is still pending."""
    return session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.resolves_hold_id == hold_id)
    ).one_or_none()


def hold_legs(session: Session, *, hold: LedgerTransaction) -> list[Leg]:
    """The legs a hold reserved."""
    ids = {e.account_id for e in hold.entries}
    accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(ids)))} if ids else {}
    return legs_of(hold, accounts)


def _already_resolved(hold: LedgerTransaction, resolution: LedgerTransaction) -> HoldAlreadyResolved:
    return HoldAlreadyResolved(
        f"hold {hold.id} was already {resolution.status}",
        details={"hold_id": hold.id, "resolution": resolution.status, "transaction_id": resolution.id},
    )


def _check_within_hold(held: Sequence[Leg], chosen: Sequence[Leg], hold_id: int) -> None:
    limits: dict[tuple[str, str, str], int] = defaultdict(int)
    for leg in held:
        limits[(leg.account_code, leg.amount.currency, leg.direction)] += leg.amount.amount
    asked: dict[tuple[str, str, str], int] = defaultdict(int)
    for leg in chosen:
        asked[(leg.account_code, leg.amount.currency, leg.direction)] += leg.amount.amount
    for key, amount in sorted(asked.items()):
        if amount > limits.get(key, 0):
            code, currency, direction = key
            raise InvalidAmount(
                f"cannot post {amount} {currency} as a {direction} of {code}: hold {hold_id} reserved "
                f"{limits.get(key, 0)}",
                details={"hold_id": hold_id, "account": code, "direction": direction},
            )


def post_hold(
    session: Session,
    *,
    hold_id: int,
    idempotency_key: str | None = None,
    legs: Sequence[Leg] | None = None,
    reference: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> LedgerTransaction:
    """Post a hold: all it reserved, or `legs` (same accounts and directions, no more per leg, balanced).

    The same key again returns the first posting; a hold already voided, expired or posted under another key
    raises HoldAlreadyResolved. The posting inherits the hold's kind and, unless given, its reference.
    """
    key = idempotency_key if idempotency_key is not None else f"hold:{hold_id}:post"
    hold = _lock_hold(session, hold_id)
    reference = reference if reference is not None else hold.reference
    validate_header(idempotency_key=key, kind=hold.kind, reference=reference)
    held = hold_legs(session, hold=hold)
    chosen = held if legs is None else normalise_legs(legs)
    check_balanced(chosen)
    _check_within_hold(held, chosen, hold.id)
    digest = content_hash(
        kind=hold.kind,
        reference=reference,
        status=TransactionStatus.POSTED,
        legs=chosen,
        metadata=metadata,
        resolves_hold_id=hold.id,
    )
    existing = find_transaction(session, idempotency_key=key)
    if existing is not None:
        return replay_or_conflict(existing, digest)
    resolution = hold_resolution(session, hold_id=hold.id)
    if resolution is not None:
        raise _already_resolved(hold, resolution)
    return record_transaction(
        session,
        idempotency_key=key,
        kind=hold.kind,
        reference=reference,
        status=TransactionStatus.POSTED,
        legs=chosen,
        metadata=metadata,
        digest=digest,
        resolves=hold,
        at_commit=True,
    )


def _release(
    session: Session,
    hold: LedgerTransaction,
    status: TransactionStatus,
    metadata: dict[str, Any],
) -> LedgerTransaction:
    verb = "void" if status == TransactionStatus.VOIDED else "expire"
    # The reason is commentary, not content: a retried void with other words is still the same void.
    digest = content_hash(
        kind=hold.kind,
        reference=hold.reference,
        status=status,
        legs=[],
        metadata=None,
        resolves_hold_id=hold.id,
    )
    return record_transaction(
        session,
        idempotency_key=f"hold:{hold.id}:{verb}",
        kind=hold.kind,
        reference=hold.reference,
        status=status,
        legs=[],
        metadata=metadata,
        digest=digest,
        resolves=hold,
        at_commit=True,
    )


def void_hold(session: Session, *, hold_id: int, reason: str) -> LedgerTransaction:
    """Release a hold without moving money; voiding a voided hold returns the first void."""
    hold = _lock_hold(session, hold_id)
    resolution = hold_resolution(session, hold_id=hold.id)
    if resolution is not None:
        if resolution.status == TransactionStatus.VOIDED:
            return resolution
        raise _already_resolved(hold, resolution)
    return _release(session, hold, TransactionStatus.VOIDED, {"reason": str(reason)[:500]})


def expire_holds(session: Session, *, now: datetime, limit: int = 500) -> int:
    """Expire up to `limit` unresolved holds whose `expires_at` is at or before `now`; returns how many."""
    _require_aware(now, "now")
    # SKIP LOCKED: a hold being posted or voided right now is left to that writer, and two expiry jobs share
    # the work instead of queueing behind each other. (SQLite ignores the clause: its writers are serialised.)
    candidates = list(
        session.scalars(
            select(LedgerTransaction)
            .where(unresolved_hold_filter(), LedgerTransaction.expires_at <= now)
            .order_by(LedgerTransaction.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=LedgerTransaction)
            .options(selectinload(LedgerTransaction.entries))
            .execution_options(populate_existing=True)
        )
    )
    if not candidates:
        return 0
    # A resolver that committed between our snapshot and our lock left the row unchanged (a lock is not an
    # update), so PostgreSQL did not re-check the WHERE clause for it: look again with a fresh statement.
    resolved = set(
        session.scalars(
            select(LedgerTransaction.resolves_hold_id).where(
                LedgerTransaction.resolves_hold_id.in_([h.id for h in candidates])
            )
        )
    )
    holds = [h for h in candidates if h.id not in resolved]
    for hold in holds:
        _release(session, hold, TransactionStatus.EXPIRED, {"expired_at": now.isoformat()})
    return len(holds)
