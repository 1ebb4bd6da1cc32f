"""Holds whose cached-balance change waits for the commit (`at_commit=True`): the limit is checked when the hold is
placed and again, under the row lock, at the commit; the session reads its own writes; a savepoint's rollback
drops them; a lost race is a retryable refusal and leaves the ledger whole."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from payments import ledger
from payments.accounts import lock_balances
from payments.db import utcnow
from payments.errors import FundsTakenBeforeCommit, InsufficientFunds
from payments.ledger import credit, debit
from payments.money import Money

BUDGET, PAYABLE, FUNDING = "project:1:budget", "annotator:1:payable", "platform:funding_received"


def eur(amount: int) -> Money:
    return Money(amount, "EUR")


@pytest.fixture
def funded(db_session: Session) -> Session:
    """A budget of €10.00, committed."""
    ledger.ensure_account(db_session, code=BUDGET, currency="EUR", kind="liability", no_overdraft=True)
    ledger.ensure_account(db_session, code=PAYABLE, currency="EUR", kind="liability", no_overdraft=True)
    ledger.ensure_account(db_session, code=FUNDING, currency="EUR", kind="asset")
    ledger.post_transaction(
        db_session,
        idempotency_key="fund",
        kind="funding",
        reference="project:1",
        legs=[debit(FUNDING, eur(1000)), credit(BUDGET, eur(1000))],
    )
    db_session.commit()
    return db_session


def hold(
    session: Session, key: str, amount: int, *, expires_at: datetime | None = None
) -> ledger.LedgerTransaction:
    return ledger.place_hold(
        session,
        idempotency_key=key,
        kind="label_payment",
        reference=key,
        legs=[debit(BUDGET, eur(amount)), credit(PAYABLE, eur(amount))],
        expires_at=expires_at,
        at_commit=True,
    )


def cached_row(session: Session, code: str) -> tuple[int, int]:
    """(posted, pending_out) of the balance row as stored, without applying anything queued."""
    row = session.execute(
        text(
            "SELECT b.posted_minor, b.pending_out_minor FROM ledger_balances b"
            " JOIN ledger_accounts a ON a.id = b.account_id WHERE a.code = :code"
        ),
        {"code": code},
    ).one()
    return int(row[0]), int(row[1])


def available(session: Session, code: str = BUDGET) -> int:
    return ledger.balance(session, account_code=code, currency="EUR").available.amount


def test_the_balance_row_changes_at_commit_and_the_session_reads_its_own_writes(funded: Session) -> None:
    hold(funded, "lease-1", 300)
    assert cached_row(funded, BUDGET) == (1000, 0)  # the row is not touched (nor locked) yet
    assert available(funded) == 700  # a read of the balance adds the queued change...
    assert cached_row(funded, BUDGET) == (1000, 0)  # ...and still leaves the row alone
    lock_balances(funded, [ledger.get_account(funded, code=BUDGET, currency="EUR").id])
    assert cached_row(funded, BUDGET) == (1000, 300)  # a lock applies it first
    hold(funded, "lease-2", 200)
    assert available(funded) == 500
    funded.commit()
    assert cached_row(funded, BUDGET) == (1000, 500)
    assert ledger.check_integrity(funded) == []


def test_the_limit_counts_what_the_transaction_already_queued(funded: Session) -> None:
    hold(funded, "lease-1", 600)
    with pytest.raises(InsufficientFunds, match=r"€4\.00 available"):
        hold(funded, "lease-2", 600)
    # a posting that locks the row in the same transaction sees the queued hold too
    with pytest.raises(InsufficientFunds):
        ledger.post_transaction(
            funded,
            idempotency_key="spend",
            kind="label_payment",
            reference="spend",
            legs=[debit(BUDGET, eur(500)), credit(PAYABLE, eur(500))],
        )
    funded.commit()
    assert available(funded) == 400
    assert ledger.check_integrity(funded) == []


def test_a_savepoint_that_rolls_back_takes_its_queued_change_with_it(funded: Session) -> None:
    kept = hold(funded, "lease-kept", 100)
    savepoint = funded.begin_nested()
    hold(funded, "lease-undone", 250)
    savepoint.rollback()
    funded.commit()
    assert cached_row(funded, BUDGET) == (1000, 100)
    assert ledger.find_transaction(funded, idempotency_key="lease-undone") is None
    assert ledger.find_transaction(funded, idempotency_key="lease-kept").id == kept.id
    assert ledger.check_integrity(funded) == []


def test_a_change_applied_by_a_lock_inside_a_savepoint_that_rolls_back_is_applied_again(
    funded: Session,
) -> None:
    hold(funded, "lease-before", 300)  # queued by the outer transaction
    savepoint = funded.begin_nested()
    # the lock applies the queued change, inside the savepoint
    lock_balances(funded, [ledger.get_account(funded, code=BUDGET, currency="EUR").id])
    assert cached_row(funded, BUDGET) == (1000, 300)
    savepoint.rollback()  # which undoes that UPDATE, but not the hold
    assert cached_row(funded, BUDGET) == (1000, 0)
    assert available(funded) == 700
    funded.commit()
    assert cached_row(funded, BUDGET) == (1000, 300)
    assert ledger.check_integrity(funded) == []


def test_a_transaction_that_rolls_back_leaves_nothing_for_the_next(funded: Session) -> None:
    hold(funded, "lease-1", 900)
    funded.rollback()
    hold(funded, "lease-2", 900)  # the rolled-back 900 no longer counts against the limit
    funded.commit()
    assert cached_row(funded, BUDGET) == (1000, 900)
    assert ledger.check_integrity(funded) == []


@pytest.mark.postgres
def test_a_race_for_the_last_funds_is_lost_at_commit_and_retried(funded: Session, engine: Engine) -> None:
    """Two transactions each see €10.00 available and hold €6.00; neither locks the row until its commit. The
    second to commit finds the money gone: FundsTakenBeforeCommit, retryable, and nothing of it is kept."""
    first = Session(engine)
    second = Session(engine)
    try:
        hold(first, "lease-a", 600)
        hold(second, "lease-b", 600)  # not blocked: the first holds no lock on the row yet
        first.commit()
        with pytest.raises(FundsTakenBeforeCommit) as refused:
            second.commit()
        assert ledger.is_retryable(refused.value)
        second.rollback()
        with pytest.raises(InsufficientFunds):  # run again, the unit of work sees the new balance
            hold(second, "lease-b", 600)
        second.rollback()
    finally:
        first.close()
        second.close()
    funded.expire_all()
    assert cached_row(funded, BUDGET) == (1000, 600)
    assert ledger.find_transaction(funded, idempotency_key="lease-b") is None
    assert ledger.check_integrity(funded) == []


@pytest.mark.parametrize("resolve", ["post", "void", "expire"])
def test_a_hold_is_resolved_at_commit_without_reading_the_balances_first(
    funded: Session, resolve: str
) -> None:
    """A resolution never lowers what an account has available: it changes the balance rows at the commit only,
    and the session reads its own resolution before that."""
    placed = hold(funded, "lease", 300, expires_at=utcnow() + timedelta(minutes=30))
    funded.commit()
    assert cached_row(funded, BUDGET) == (1000, 300)
    assert cached_row(funded, PAYABLE) == (0, 0)
    if resolve == "post":
        ledger.post_hold(funded, hold_id=placed.id)
    elif resolve == "void":
        ledger.void_hold(funded, hold_id=placed.id, reason="rejected")
    else:
        assert ledger.expire_holds(funded, now=utcnow() + timedelta(hours=1)) == 1
    assert cached_row(funded, BUDGET) == (1000, 300)  # not touched (nor locked) before the commit
    paid = 300 if resolve == "post" else 0
    assert available(funded) == 1000 - paid  # the session reads its own resolution
    assert available(funded, PAYABLE) == paid
    funded.commit()
    assert cached_row(funded, BUDGET) == (1000 - paid, 0)
    assert cached_row(funded, PAYABLE) == (paid, 0)
    assert ledger.check_integrity(funded) == []


@pytest.mark.postgres
def test_resolving_a_hold_leaves_the_budget_row_free_until_the_commit(
    funded: Session, engine: Engine
) -> None:
    """A reviewer's accept (or a sweep voiding expired leases) does not make the project's leases queue behind
    it: another transaction can lock the budget row while the resolution's transaction is still open."""
    placed = hold(funded, "lease", 300)
    funded.commit()
    deciding = Session(engine)
    other = Session(engine)
    try:
        ledger.post_hold(deciding, hold_id=placed.id)
        # NOWAIT: refused at once if any transaction held the row
        other.execute(
            text(
                "SELECT b.account_id FROM ledger_balances b JOIN ledger_accounts a ON a.id = b.account_id"
                " WHERE a.code = :code FOR UPDATE OF b NOWAIT"
            ),
            {"code": BUDGET},
        ).one()
        other.rollback()
        deciding.commit()
    finally:
        deciding.close()
        other.close()
    funded.expire_all()
    assert cached_row(funded, BUDGET) == (700, 0)
    assert ledger.check_integrity(funded) == []
