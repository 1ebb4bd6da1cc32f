"""Legs and the posting machinery every ledger write goes through (accounts and their locks: payments.accounts).

Import the public names from `payments.ledger`; this module also holds the internals that `payments.holds`
shares (`record_transaction`, `record_once`, ...).

How a write stays correct under concurrency:

1. Validate everything that needs no database (legs positive, balanced per currency).
2. Lock the cached balance rows of the touched no-overdraft accounts in ascending account id
   (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's connection already holds the database's write lock since
   `BEGIN IMMEDIATE`). A fixed order means two postings can wait on each other but never deadlock, and the
   limit is checked on the latest committed balance.
3. Check the limits and raise before anything is written, so that a refusal leaves the session usable (a
   retry of a transaction recorded earlier, when the money was there, gets that transaction instead).
4. Insert the transaction row with `ON CONFLICT DO NOTHING ... RETURNING`: idempotency is the unique key's
   job, in the same round trip. If a transaction with the same key exists (a retry, or a concurrent request
   that won the race), it is returned when its content hash matches and refused as a conflict otherwise; if a
   hold's single resolution exists, HoldAlreadyResolved.
5. Insert the entries, update the cached balances, flush. Never commit: the edge does.

A posting `at_commit` locks nothing in step 2: it checks against the balances as last committed plus what its
transaction already queued, and step 5 queues the balances' change for the commit, which applies it under the row
locks, in the same order, checking the limits again (`payments.deferred_balances`). A lease's hold on its
project's busy budget goes this way, and so does every hold's resolution (`payments.holds`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from payments.accounts import AccountKey, accounts_for, lock_balances, validate_account_code
from payments.db import utcnow
from payments.deferred_balances import BalanceChange, balances_to_commit, queue_balance_changes
from payments.errors import (
    HoldAlreadyResolved,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    UnbalancedTransaction,
)
from payments.models import (
    Account,
    AccountBalance,
    LedgerEntry,
    LedgerTransaction,
    TransactionStatus,
)
from payments.money import Money

_MAX_KEY = 200
_MAX_KIND = 50

# --- legs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a transaction: debit or credit a strictly positive `amount` to `account_code`."""

    account_code: str
    direction: Literal["debit", "credit"]
    amount: Money

    def __post_init__(self) -> None:
        if self.direction not in ("debit", "credit"):
            raise InvalidAmount(f"a leg is a 'debit' or a 'credit', got {self.direction!r}")
        if not isinstance(self.amount, Money):
            raise InvalidAmount(f"a leg's amount is Money, got {type(self.amount).__name__}")
        if self.amount.amount <= 0:
            raise InvalidAmount(
                f"a leg moves a positive amount, got {self.amount.amount} on {self.account_code}"
            )
        validate_account_code(self.account_code)

    @property
    def key(self) -> AccountKey:
        """The account this leg touches: (code, currency)."""
        return (self.account_code, self.amount.currency)


def debit(account_code: str, amount: Money) -> Leg:
    """A debit leg."""
    return Leg(account_code, "debit", amount)


def credit(account_code: str, amount: Money) -> Leg:
    """A credit leg."""
    return Leg(account_code, "credit", amount)


def check_balanced(legs: Sequence[Leg]) -> None:
    """Raise UnbalancedTransaction unless debits equal credits in every currency."""
    difference: dict[str, int] = defaultdict(int)
    for leg in legs:
        difference[leg.amount.currency] += (
            leg.amount.amount if leg.direction == "debit" else -leg.amount.amount
        )
    off = {currency: diff for currency, diff in sorted(difference.items()) if diff != 0}
    if off:
        raise UnbalancedTransaction(
            "debits and credits differ: " + ", ".join(f"{c} debits - credits = {d}" for c, d in off.items()),
            details={"debits_minus_credits": off},
        )


def normalise_legs(legs: Sequence[Leg]) -> list[Leg]:
    """The legs as a list, each one checked to be a `Leg`."""
    if not isinstance(legs, Sequence):
        raise InvalidAmount("legs must be a sequence of Leg")
    for leg in legs:
        if not isinstance(leg, Leg):
            raise InvalidAmount(f"legs must be Leg values, got {type(leg).__name__}")
    return list(legs)


def legs_of(transaction: LedgerTransaction, accounts: Mapping[int, Account]) -> list[Leg]:
    """The legs of a recorded transaction, in entry order."""
    return [
        Leg(
            accounts[e.account_id].code,
            cast(Literal["debit", "credit"], e.direction),
            Money(e.amount_minor, e.currency),
        )
        for e in transaction.entries
    ]


# --- content hashing and idempotency ------------------------------------------------------------------------


def content_hash(
    *,
    kind: str,
    reference: str,
    status: str,
    legs: Sequence[Leg],
    metadata: Mapping[str, Any] | None,
    expires_at: datetime | None = None,
    resolves_hold_id: int | None = None,
) -> str:
    """SHA-256 of what a request asks for; leg order does not matter, everything else does."""
    payload = {
        "kind": kind,
        "reference": reference,
        "status": status,
        "legs": sorted(
            [leg.account_code, leg.amount.currency, leg.direction, leg.amount.amount] for leg in legs
        ),
        "metadata": dict(metadata or {}),
        "expires_at": expires_at.isoformat() if expires_at else None,
        "resolves_hold_id": resolves_hold_id,
    }
    try:
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except TypeError as exc:
        raise InvalidAmount(f"transaction metadata must be JSON: {exc}") from exc
    return hashlib.sha256(encoded.encode()).hexdigest()


def find_transaction(session: Session, *, idempotency_key: str) -> LedgerTransaction | None:
    """The transaction recorded under `idempotency_key`, if any."""
    return session.scalars(
        select(LedgerTransaction).where(LedgerTransaction.idempotency_key == idempotency_key)
    ).one_or_none()


def replay_or_conflict(existing: LedgerTransaction, expected_hash: str) -> LedgerTransaction:
    """The first transaction when its content matches the retry's; IdempotencyConflict otherwise."""
    if existing.content_hash != expected_hash:
        raise IdempotencyConflict(
            f"idempotency key {existing.idempotency_key!r} was already used for different content",
            details={"idempotency_key": existing.idempotency_key, "transaction_id": existing.id},
        )
    return existing


def validate_header(*, idempotency_key: str, kind: str, reference: str) -> None:
    """Refuse empty or oversized keys, kinds and references (they are stored in bounded columns)."""
    for name, value, limit in (
        ("idempotency_key", idempotency_key, _MAX_KEY),
        ("kind", kind, _MAX_KIND),
        ("reference", reference, _MAX_KEY),
    ):
        if not isinstance(value, str) or not value or len(value) > limit:
            raise InvalidAmount(f"{name} must be a non-empty string of at most {limit} characters")


# --- recording ----------------------------------------------------------------------------------------------


def _signed(account: Account, direction: str, amount: int) -> int:
    return amount if direction == account.normal_balance else -amount


def record_transaction(
    session: Session,
    *,
    idempotency_key: str,
    kind: str,
    reference: str,
    status: TransactionStatus,
    legs: Sequence[Leg],
    metadata: Mapping[str, Any] | None,
    digest: str,
    resolves: LedgerTransaction | None = None,
    expires_at: datetime | None = None,
    at_commit: bool = False,
) -> LedgerTransaction:
    """Write one transaction (and release `resolves`'s pending entries), checking limits under row locks.

    `at_commit`: check the limits against the balances as last committed plus this transaction's queued changes,
    and queue the cached balances' change for the commit (`payments.deferred_balances`) instead of locking them
    now."""
    accounts = accounts_for(session, (leg.key for leg in legs))
    released = list(resolves.entries) if resolves is not None else []
    touched = {a.id for a in accounts.values()} | {e.account_id for e in released}
    by_id = {a.id: a for a in accounts.values()}
    missing_ids = touched - by_id.keys()
    if missing_ids:
        by_id.update({a.id: a for a in session.scalars(select(Account).where(Account.id.in_(missing_ids)))})

    changes: dict[int, BalanceChange] = defaultdict(BalanceChange)
    for entry in released:
        account = by_id[entry.account_id]
        change = changes[account.id]
        if entry.direction == account.normal_balance:
            change.pending_in -= entry.amount_minor
        else:
            change.pending_out -= entry.amount_minor
    for leg in legs:
        account = accounts[leg.key]
        change = changes[account.id]
        if status == TransactionStatus.POSTED:
            change.posted += _signed(account, leg.direction, leg.amount.amount)
        elif leg.direction == account.normal_balance:
            change.pending_in += leg.amount.amount
        else:
            change.pending_out += leg.amount.amount

    if at_commit:
        # Only a change that lowers what an account has available can break its limit: read those balances.
        # (A hold's resolution lowers none, and reads nothing.)
        locked = balances_to_commit(
            session,
            {i for i, c in changes.items() if by_id[i].no_overdraft and c.posted - c.pending_out < 0},
        )
    else:
        locked = lock_balances(session, touched)

    for account_id, change in sorted(changes.items()):
        cached = locked.get(account_id)
        if cached is None:
            continue
        available = (cached.posted_minor + change.posted) - (cached.pending_out_minor + change.pending_out)
        if available < 0:
            # A retry of a transaction that was recorded when the money was there is answered with it.
            earlier = find_transaction(session, idempotency_key=idempotency_key)
            if earlier is not None:
                return replay_or_conflict(earlier, digest)
            account = by_id[account_id]
            have = cached.posted_minor - cached.pending_out_minor
            raise InsufficientFunds(
                f"{account.code} has {Money(have, account.currency).format()} available, "
                f"{Money(have - available, account.currency).format()} needed",
                details={
                    "account": account.code,
                    "currency": account.currency,
                    "available_minor": have,
                    "requested_minor": have - available,
                },
            )

    transaction = _insert_transaction(
        session,
        {
            "idempotency_key": idempotency_key,
            "kind": kind,
            "reference": reference,
            "status": status.value,
            "resolves_hold_id": resolves.id if resolves is not None else None,
            "expires_at": expires_at,
            "content_hash": digest,
            "meta": dict(metadata or {}),
        },
    )
    if transaction is None:  # the key, or the hold's resolution, was recorded by someone else
        winner = find_transaction(session, idempotency_key=idempotency_key)
        if winner is not None:
            return replay_or_conflict(winner, digest)
        if resolves is not None:
            raise HoldAlreadyResolved(
                f"hold {resolves.id} was resolved concurrently", details={"hold_id": resolves.id}
            )
        raise IdempotencyConflict(
            f"transaction {idempotency_key!r} conflicts with one already recorded",
            details={"idempotency_key": idempotency_key},
        )

    if legs:
        session.execute(
            insert(LedgerEntry),
            [
                {
                    "transaction_id": transaction.id,
                    "account_id": accounts[leg.key].id,
                    "currency": leg.amount.currency,
                    "direction": leg.direction,
                    "amount_minor": leg.amount.amount,
                }
                for leg in legs
            ],
        )
    if at_commit:
        queue_balance_changes(
            session,
            # a no-overdraft account is one with a cached balance row (`ensure_accounts`; `check_integrity`)
            {account_id: change for account_id, change in changes.items() if by_id[account_id].no_overdraft},
            idempotency_key=idempotency_key,
        )
    else:
        _apply_changes(session, locked, changes)
    session.flush()
    return transaction


_ADD_TO_BALANCE = (
    update(AccountBalance)
    .where(AccountBalance.account_id == bindparam("changed_id"))
    .values(
        posted_minor=AccountBalance.posted_minor + bindparam("posted"),
        pending_out_minor=AccountBalance.pending_out_minor + bindparam("pending_out"),
        pending_in_minor=AccountBalance.pending_in_minor + bindparam("pending_in"),
    )
)


def _apply_changes(
    session: Session, locked: dict[int, AccountBalance], changes: dict[int, BalanceChange]
) -> None:
    """Add the changes to the locked cached balances: one statement for all of them (executemany, which the
    PostgreSQL driver pipelines), and the session's copies set to the new values without a flush of their own."""
    rows = [
        {
            "changed_id": account_id,
            "posted": change.posted,
            "pending_out": change.pending_out,
            "pending_in": change.pending_in,
        }
        for account_id, change in sorted(changes.items())
        if account_id in locked and (change.posted or change.pending_out or change.pending_in)
    ]
    if not rows:
        return
    session.connection().execute(_ADD_TO_BALANCE, rows)
    for row in rows:
        cached = locked[row["changed_id"]]
        set_committed_value(cached, "posted_minor", cached.posted_minor + row["posted"])
        set_committed_value(cached, "pending_out_minor", cached.pending_out_minor + row["pending_out"])
        set_committed_value(cached, "pending_in_minor", cached.pending_in_minor + row["pending_in"])


_TRANSACTION_COLUMNS = (
    "idempotency_key",
    "kind",
    "reference",
    "status",
    "resolves_hold_id",
    "expires_at",
    "content_hash",
    "metadata",
    "created_at",
)

#: Insert a transaction row unless a unique key refuses it; the row comes back as an entity. Plain SQL that
#: PostgreSQL and SQLite both speak: SQLAlchemy does not cache a dialect's INSERT ... ON CONFLICT construct, and
#: compiling it on every posting cost more than the statement.
_INSERT_TRANSACTION = select(LedgerTransaction).from_statement(
    text(
        "INSERT INTO ledger_transactions (idempotency_key, kind, reference, status, resolves_hold_id, expires_at,"
        " content_hash, metadata, created_at) VALUES (:idempotency_key, :kind, :reference, :status,"
        " :resolves_hold_id, :expires_at, :content_hash, :metadata, :created_at) ON CONFLICT DO NOTHING"
        " RETURNING id, idempotency_key, kind, reference, status, resolves_hold_id, expires_at, content_hash,"
        " metadata, created_at"
    )
    .bindparams(
        *(bindparam(name, type_=LedgerTransaction.__table__.c[name].type) for name in _TRANSACTION_COLUMNS)
    )
    .columns(*LedgerTransaction.__table__.columns)
)


def _insert_transaction(session: Session, values: dict[str, Any]) -> LedgerTransaction | None:
    """Insert a transaction row in one round trip; None if a unique key (the idempotency key, or the hold's
    single resolution) refused it. Nothing else of the unit of work is undone."""
    if session.get_bind().dialect.name in ("postgresql", "sqlite"):
        # the entity's attribute `meta` is the column `metadata`; created_at is the model's default
        params = {**values, "metadata": values["meta"], "created_at": utcnow()}
        return session.scalars(_INSERT_TRANSACTION, params).one_or_none()
    transaction = LedgerTransaction(**values)
    try:
        with session.begin_nested():
            session.add(transaction)
            session.flush()  # the unique key and resolves_hold_id are checked here
    except IntegrityError:
        return None
    return transaction


def post_transaction(
    session: Session,
    *,
    idempotency_key: str,
    kind: str,
    reference: str,
    legs: Sequence[Leg],
    metadata: dict[str, Any] | None = None,
    at_commit: bool = False,
) -> LedgerTransaction:
    """Post a balanced transaction once per idempotency key; a same-content retry returns the first.

    `at_commit`: check the limits now against the committed balances, and change (and lock) the balance rows
    only at the commit (`payments.deferred_balances`), which may then raise the retryable FundsTakenBeforeCommit.
    """
    validate_header(idempotency_key=idempotency_key, kind=kind, reference=reference)
    legs = normalise_legs(legs)
    if not legs:
        raise InvalidAmount("a transaction needs at least one debit and one credit")
    check_balanced(legs)
    return record_once(
        session,
        idempotency_key=idempotency_key,
        kind=kind,
        reference=reference,
        status=TransactionStatus.POSTED,
        legs=legs,
        metadata=metadata,
        at_commit=at_commit,
    )


def record_once(
    session: Session,
    *,
    idempotency_key: str,
    kind: str,
    reference: str,
    status: TransactionStatus,
    legs: list[Leg],
    metadata: dict[str, Any] | None,
    expires_at: datetime | None = None,
    at_commit: bool = False,
) -> LedgerTransaction:
    """Record validated legs under `idempotency_key` once: the same content again returns the first transaction,
    other content under the same key is an IdempotencyConflict."""
    digest = content_hash(
        kind=kind, reference=reference, status=status, legs=legs, metadata=metadata, expires_at=expires_at
    )
    # No lookup first: the insert itself refuses a used key in the same round trip, and a retry is answered
    # with the first transaction from there (or before a limit check could refuse it).
    return record_transaction(
        session,
        idempotency_key=idempotency_key,
        kind=kind,
        reference=reference,
        status=status,
        legs=legs,
        metadata=metadata,
        digest=digest,
        expires_at=expires_at,
        at_commit=at_commit,
    )
