"""Balances: read from the cached row of a no-overdraft account, or summed from the entries of any other.

A balance is signed in the account's normal direction. Pending amounts are those of holds not yet resolved.
Available is posted less the pending movements against the normal direction (for a budget: credits − debits −
pending debits): what can still be spent or paid out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from payments.accounts import AccountKey, accounts_for, get_account
from payments.deferred_balances import balances_to_commit
from payments.models import (
    Account,
    Direction,
    LedgerEntry,
    LedgerTransaction,
    TransactionStatus,
)
from payments.money import Money


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance in its normal direction, with what holds keep pending on either side."""

    account_code: str
    currency: str
    normal_balance: str
    posted: Money
    pending_debits: Money
    pending_credits: Money
    #: posted less the pending movements against the normal direction: what can still be spent or paid out
    available: Money


_RESOLUTION = aliased(LedgerTransaction, name="resolution")
#: SQL condition on `ledger_transactions`: a hold with no resolution yet (built once: aliasing is not free)
_UNRESOLVED_HOLD = (LedgerTransaction.status == TransactionStatus.PENDING.value) & ~exists().where(
    _RESOLUTION.resolves_hold_id == LedgerTransaction.id
)


def unresolved_hold_filter() -> Any:
    """SQL condition: the transaction is a hold with no resolution yet."""
    return _UNRESOLVED_HOLD


def entry_sums(session: Session, account_ids: Iterable[int] | None = None) -> dict[int, dict[str, int]]:
    """Sums of entries per account from the entries themselves: debits/credits, posted and pending."""
    result: dict[int, dict[str, int]] = defaultdict(
        lambda: {"posted_debit": 0, "posted_credit": 0, "pending_debit": 0, "pending_credit": 0}
    )
    ids = None if account_ids is None else sorted(set(account_ids))
    for phase, condition in (
        ("posted", LedgerTransaction.status == TransactionStatus.POSTED.value),
        ("pending", unresolved_hold_filter()),
    ):
        query = (
            select(LedgerEntry.account_id, LedgerEntry.direction, func.sum(LedgerEntry.amount_minor))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(condition)
            .group_by(LedgerEntry.account_id, LedgerEntry.direction)
        )
        if ids is not None:
            query = query.where(LedgerEntry.account_id.in_(ids))
        for account_id, direction, total in session.execute(query):
            result[account_id][f"{phase}_{direction}"] = int(total)
    return dict(result)


def balances_of(session: Session, accounts: Iterable[Account]) -> dict[int, Balance]:
    """Balances of several accounts by account id, in a few queries: cached rows, else summed entries."""
    accounts = list(accounts)
    if not accounts:
        return {}
    ids = [a.id for a in accounts]
    cached = balances_to_commit(session, ids)  # a session reads its own writes, without taking a lock
    uncached = [a.id for a in accounts if a.id not in cached]
    sums = entry_sums(session, uncached) if uncached else {}
    empty = {"posted_debit": 0, "posted_credit": 0, "pending_debit": 0, "pending_credit": 0}
    result: dict[int, Balance] = {}
    for account in accounts:
        credit_normal = account.normal_balance == Direction.CREDIT
        row = cached.get(account.id)
        if row is not None:
            posted = row.posted_minor
            pending_debits = row.pending_out_minor if credit_normal else row.pending_in_minor
            pending_credits = row.pending_in_minor if credit_normal else row.pending_out_minor
        else:
            s = sums.get(account.id, empty)
            net_debit = s["posted_debit"] - s["posted_credit"]
            posted = -net_debit if credit_normal else net_debit
            pending_debits, pending_credits = s["pending_debit"], s["pending_credit"]
        against = pending_debits if credit_normal else pending_credits
        currency = account.currency
        result[account.id] = Balance(
            account_code=account.code,
            currency=currency,
            normal_balance=account.normal_balance,
            posted=Money(posted, currency),
            pending_debits=Money(pending_debits, currency),
            pending_credits=Money(pending_credits, currency),
            available=Money(posted - against, currency),
        )
    return result


def balance(session: Session, *, account_code: str, currency: str) -> Balance:
    """The balance of one account; AccountNotFound if it does not exist."""
    account = get_account(session, code=account_code, currency=currency)
    return balances_of(session, [account])[account.id]


def balances(session: Session, *, accounts: Iterable[AccountKey]) -> dict[AccountKey, Balance]:
    """Balances of several accounts given as (code, currency); AccountNotFound naming any missing one."""
    found = accounts_for(session, accounts)
    by_id = balances_of(session, found.values())
    return {key: by_id[account.id] for key, account in found.items()}
