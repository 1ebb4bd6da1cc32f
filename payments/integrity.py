"""The ledger's self-check: every invariant the design promises, recomputed from the entries.

Run it from `flask --app wsgi ledger check`, from a scheduled job, or after every step of a property test. It
reads only; an empty list means the books are consistent.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from payments.balances import entry_sums
from payments.deferred_balances import apply_queued_balance_changes
from payments.models import (
    Account,
    AccountBalance,
    Direction,
    LedgerEntry,
    LedgerTransaction,
    TransactionStatus,
)
from payments.money import Money

_SIGNED = case(
    (LedgerEntry.direction == Direction.DEBIT.value, LedgerEntry.amount_minor),
    else_=-LedgerEntry.amount_minor,
)


def _unbalanced_transactions(session: Session) -> list[str]:
    rows = session.execute(
        select(LedgerEntry.transaction_id, LedgerEntry.currency, func.sum(_SIGNED))
        .group_by(LedgerEntry.transaction_id, LedgerEntry.currency)
        .having(func.sum(_SIGNED) != 0)
        .order_by(LedgerEntry.transaction_id, LedgerEntry.currency)
    )
    return [
        f"transaction {tx} does not balance in {cur}: debits - credits = {diff}" for tx, cur, diff in rows
    ]


def _resolution_problems(session: Session) -> list[str]:
    problems: list[str] = []
    twice = session.execute(
        select(LedgerTransaction.resolves_hold_id, func.count())
        .where(LedgerTransaction.resolves_hold_id.is_not(None))
        .group_by(LedgerTransaction.resolves_hold_id)
        .having(func.count() > 1)
    )
    problems += [f"hold {hold_id} resolved {count} times" for hold_id, count in twice]
    hold = aliased(LedgerTransaction)
    not_holds = session.execute(
        select(LedgerTransaction.id, hold.id, hold.status)
        .join(hold, hold.id == LedgerTransaction.resolves_hold_id)
        .where(hold.status != TransactionStatus.PENDING.value)
    )
    problems += [
        f"transaction {r} resolves transaction {h}, which is {s}, not a hold" for r, h, s in not_holds
    ]
    releases_with_entries = session.execute(
        select(LedgerTransaction.id, LedgerTransaction.status)
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .where(
            LedgerTransaction.status.in_([TransactionStatus.VOIDED.value, TransactionStatus.EXPIRED.value])
        )
        .distinct()
    )
    problems += [f"{status} transaction {tx} carries entries" for tx, status in releases_with_entries]

    # A posting may take less than its hold reserved, never more, per account and direction.
    resolution = aliased(LedgerTransaction)
    posted = session.execute(
        select(
            resolution.resolves_hold_id,
            LedgerEntry.account_id,
            LedgerEntry.direction,
            func.sum(LedgerEntry.amount_minor),
        )
        .join(resolution, resolution.id == LedgerEntry.transaction_id)
        .where(resolution.resolves_hold_id.is_not(None), resolution.status == TransactionStatus.POSTED.value)
        .group_by(resolution.resolves_hold_id, LedgerEntry.account_id, LedgerEntry.direction)
    ).all()
    if posted:
        hold_ids = sorted({row[0] for row in posted})
        reserved = {
            (h, a, d): int(total)
            for h, a, d, total in session.execute(
                select(
                    LedgerEntry.transaction_id,
                    LedgerEntry.account_id,
                    LedgerEntry.direction,
                    func.sum(LedgerEntry.amount_minor),
                )
                .where(LedgerEntry.transaction_id.in_(hold_ids))
                .group_by(LedgerEntry.transaction_id, LedgerEntry.account_id, LedgerEntry.direction)
            )
        }
        for hold_id, account_id, direction, total in sorted(posted):
            if int(total) > reserved.get((hold_id, account_id, direction), 0):
                problems.append(
                    f"hold {hold_id} posted {total} as {direction} of account {account_id}, "
                    f"more than the {reserved.get((hold_id, account_id, direction), 0)} it reserved"
                )
    return problems


def _balance_problems(session: Session, *, clearing_at_zero: bool) -> list[str]:
    problems: list[str] = []
    apply_queued_balance_changes(session)  # compare what this transaction will commit
    # Plain rows, not ORM objects: the check reads every account and must stay cheap on a large ledger.
    accounts = session.execute(
        select(
            Account.id, Account.code, Account.currency, Account.normal_balance, Account.no_overdraft
        ).order_by(Account.id)
    ).all()
    cached = {
        row.account_id: (row.posted_minor, row.pending_out_minor, row.pending_in_minor)
        for row in session.execute(
            select(
                AccountBalance.account_id,
                AccountBalance.posted_minor,
                AccountBalance.pending_out_minor,
                AccountBalance.pending_in_minor,
            )
        )
    }
    sums = entry_sums(session)
    empty = {"posted_debit": 0, "posted_credit": 0, "pending_debit": 0, "pending_credit": 0}
    known: set[int] = set()
    for account in accounts:
        known.add(account.id)
        s = sums.get(account.id, empty)
        credit_normal = account.normal_balance == Direction.CREDIT
        sign = -1 if credit_normal else 1
        posted = sign * (s["posted_debit"] - s["posted_credit"])
        pending_out = s["pending_debit"] if credit_normal else s["pending_credit"]
        pending_in = s["pending_credit"] if credit_normal else s["pending_debit"]
        name = f"{account.code} ({account.currency})"
        row = cached.get(account.id)
        if account.no_overdraft and row is None:
            problems.append(f"{name} has no cached balance row although it must never be overdrawn")
        if row is not None and not account.no_overdraft:
            problems.append(f"{name} has a cached balance row but no overdraft rule")
        if row is not None and row != (posted, pending_out, pending_in):
            problems.append(
                f"{name} cached balance (posted {row[0]}, pending out {row[1]}, pending in {row[2]}) differs "
                f"from its entries (posted {posted}, pending out {pending_out}, pending in {pending_in})"
            )
        if account.no_overdraft and posted - pending_out < 0:
            available = Money(posted - pending_out, account.currency).format()
            problems.append(f"{name} must never be overdrawn but has {available} available")
        if clearing_at_zero and account.code.startswith("clearing:") and posted != 0:
            problems.append(
                f"clearing account {name} is at {Money(posted, account.currency).format()}, not zero"
            )
    problems += [
        f"cached balance row for unknown account {account_id}" for account_id in sorted(cached.keys() - known)
    ]
    return problems


def check_integrity(session: Session, *, clearing_at_zero: bool = False) -> list[str]:
    """Every inconsistency found in the ledger, as sentences; empty when the books are sound.

    Checks: each transaction balances per currency; no hold is resolved twice or resolved by something that is
    not a hold; a posting never exceeds its hold; voids and expiries carry no entries; cached balances equal
    their entries; no no-overdraft account is below zero; with `clearing_at_zero`, every `clearing:` account's
    posted balance is zero (true only once every flow through it has been reconciled).
    """
    problems = _unbalanced_transactions(session)
    problems += _resolution_problems(session)
    problems += _balance_problems(session, clearing_at_zero=clearing_at_zero)
    per_currency: dict[str, int] = defaultdict(int)
    for currency, total in session.execute(
        select(LedgerEntry.currency, func.sum(_SIGNED)).group_by(LedgerEntry.currency)
    ):
        per_currency[currency] += int(total)
    problems += [
        f"the ledger does not sum to zero in {currency}: debits - credits = {total}"
        for currency, total in sorted(per_currency.items())
        if total != 0
    ]
    return problems
