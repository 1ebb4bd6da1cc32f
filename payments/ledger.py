"""The double-entry ledger's public API: accounts, postings, holds, balances, integrity and retries.

Everything takes the caller's `Session` first and keyword arguments after it, flushes but never commits: the
edge (a request, a CLI command, a job) owns the transaction. Amounts are `payments.money.Money`. See
docs/payments.md for the chart of accounts and the entries of each flow.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from payments.accounts import AccountSpec, ensure_account, ensure_accounts, get_account
from payments.balances import Balance, balance, balances
from payments.errors import FundsTakenBeforeCommit
from payments.holds import expire_holds, hold_legs, hold_resolution, place_hold, post_hold, void_hold
from payments.integrity import check_integrity
from payments.models import Account, LedgerEntry, LedgerTransaction
from payments.postings import Leg, credit, debit, find_transaction, post_transaction

__all__ = [
    "Account",
    "AccountSpec",
    "Balance",
    "LedgerEntry",
    "LedgerTransaction",
    "Leg",
    "balance",
    "balances",
    "check_integrity",
    "credit",
    "debit",
    "ensure_account",
    "ensure_accounts",
    "expire_holds",
    "find_transaction",
    "get_account",
    "hold_legs",
    "hold_resolution",
    "is_retryable",
    "place_hold",
    "post_hold",
    "post_transaction",
    "void_hold",
    "with_retries",
]

T = TypeVar("T")


#: serialization_failure and deadlock_detected: the database rolled the transaction back and asks for a retry
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable(exc: BaseException) -> bool:
    """True for a serialization failure or deadlock (PostgreSQL), a busy database (SQLite), or funds a hold
    reserved that a concurrent transaction took before the commit."""
    if isinstance(exc, FundsTakenBeforeCommit):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(original)


def with_retries(
    fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 0.02, max_delay: float = 0.5
) -> T:
    """Run a whole unit of work, retrying it on serialization failures, deadlocks and funds taken before the
    commit (`is_retryable`) with jittered backoff.

    `fn` must open its own session and commit it: after such a failure the database has already rolled the
    transaction back, so only the whole unit of work can be repeated, never the failed statement.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (DBAPIError, FundsTakenBeforeCommit) as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            # Full jitter: concurrent losers spread out instead of colliding again on the same schedule.
            time.sleep(random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1))))
    raise AssertionError("unreachable: the loop returns or raises")
