"""The ledger's API: accounts, postings, idempotency, holds, balances, integrity, retries and database guards."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from payments import ledger
from payments.db import utcnow
from payments.errors import (
    AccountConflict,
    AccountNotFound,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    UnbalancedTransaction,
)
from payments.ledger import Leg, credit, debit
from payments.models import LedgerTransaction
from payments.money import Money

BUDGET, PAYABLE, FEES, FUNDING, CLEARING = (
    "project:1:budget",
    "annotator:1:payable",
    "platform:fees",
    "platform:funding_received",
    "clearing:stripe_transfers",
)


def eur(amount: int) -> Money:
    return Money(amount, "EUR")


@pytest.fixture
def books(db_session: Session) -> Session:
    """A chart of accounts in EUR, committed."""
    ledger.ensure_account(db_session, code=BUDGET, currency="EUR", kind="liability", no_overdraft=True)
    ledger.ensure_account(db_session, code=PAYABLE, currency="EUR", kind="liability", no_overdraft=True)
    ledger.ensure_account(db_session, code=FEES, currency="EUR", kind="revenue")
    ledger.ensure_account(db_session, code=FUNDING, currency="EUR", kind="asset")
    ledger.ensure_account(db_session, code=CLEARING, currency="EUR", kind="liability")
    db_session.commit()
    return db_session


def fund(session: Session, amount: int, key: str = "fund-1") -> LedgerTransaction:
    return ledger.post_transaction(
        session,
        idempotency_key=key,
        kind="funding",
        reference="project:1",
        legs=[debit(FUNDING, eur(amount)), credit(BUDGET, eur(amount))],
    )


def label_legs(price: int, fee: int) -> list[Leg]:
    legs = [debit(BUDGET, eur(price + fee)), credit(PAYABLE, eur(price))]
    return [*legs, credit(FEES, eur(fee))] if fee else legs


def test_ensure_account_is_idempotent_and_follows_kind(db_session: Session) -> None:
    first = ledger.ensure_account(
        db_session, code="project:9:budget", currency="EUR", kind="liability", no_overdraft=True
    )
    again = ledger.ensure_account(
        db_session, code="project:9:budget", currency="EUR", kind="liability", no_overdraft=True
    )
    usd = ledger.ensure_account(
        db_session, code="project:9:budget", currency="USD", kind="liability", no_overdraft=True
    )
    asset = ledger.ensure_account(db_session, code="platform:stripe_balance", currency="EUR", kind="asset")
    db_session.commit()
    assert first.id == again.id != usd.id
    assert (first.normal_balance, asset.normal_balance) == ("credit", "debit")
    with pytest.raises(AccountConflict):
        ledger.ensure_account(db_session, code="project:9:budget", currency="EUR", kind="asset")
    for bad in ({"code": "Project 9", "kind": "asset"}, {"code": "platform:x", "kind": "cash"}):
        with pytest.raises(InvalidAmount):
            ledger.ensure_account(db_session, currency="EUR", **bad)


def test_an_account_created_in_a_rolled_back_transaction_is_not_found_afterwards(db_session: Session) -> None:
    ledger.ensure_account(db_session, code="project:77:budget", currency="EUR", kind="liability")
    kept = ledger.ensure_account(db_session, code="platform:kept", currency="EUR", kind="asset")
    db_session.commit()
    ledger.ensure_account(db_session, code="project:78:budget", currency="EUR", kind="liability")
    assert ledger.balance(db_session, account_code="project:78:budget", currency="EUR").posted == Money(
        0, "EUR"
    )
    db_session.rollback()
    with pytest.raises(AccountNotFound):  # not the rolled-back row, expired in the session
        ledger.balance(db_session, account_code="project:78:budget", currency="EUR")
    assert ledger.get_account(db_session, code="platform:kept", currency="EUR").id == kept.id


def test_ensure_accounts_reads_and_creates_several_at_once(books: Session) -> None:
    specs = [
        ledger.AccountSpec(code=BUDGET, currency="EUR", kind="liability", no_overdraft=True),
        ledger.AccountSpec(code="annotator:7:payable", currency="EUR", kind="liability", no_overdraft=True),
        ledger.AccountSpec(code=FEES, currency="EUR", kind="revenue"),
    ]
    accounts = ledger.ensure_accounts(books, specs)
    books.commit()
    assert set(accounts) == {(s.code, s.currency) for s in specs}
    assert accounts[(BUDGET, "EUR")].id == ledger.get_account(books, code=BUDGET, currency="EUR").id
    created = accounts[("annotator:7:payable", "EUR")]
    assert (created.kind, created.no_overdraft) == ("liability", True)
    # the new no-overdraft account has its balance row: a posting to it works at once
    fund(books, 100)
    ledger.post_transaction(
        books,
        idempotency_key="pay-7",
        kind="label_payment",
        reference="label:7",
        legs=[debit(BUDGET, eur(100)), credit("annotator:7:payable", eur(100))],
    )
    books.commit()
    assert ledger.balance(books, account_code="annotator:7:payable", currency="EUR").available == eur(100)
    with pytest.raises(AccountConflict):
        ledger.ensure_accounts(
            books, [*specs[:2], ledger.AccountSpec(code=FEES, currency="EUR", kind="asset")]
        )


def test_post_transaction_moves_balances(books: Session) -> None:
    fund(books, 10_000)
    ledger.post_transaction(
        books, idempotency_key="pay-1", kind="label_payment", reference="label:1", legs=label_legs(1000, 200)
    )
    books.commit()
    assert ledger.balance(books, account_code=BUDGET, currency="EUR").posted == eur(8800)
    assert ledger.balance(books, account_code=PAYABLE, currency="EUR").available == eur(1000)
    assert ledger.balance(books, account_code=FEES, currency="EUR").posted == eur(200)
    assert ledger.balance(books, account_code=FUNDING, currency="EUR").posted == eur(10_000)
    assert ledger.check_integrity(books) == []


def test_unbalanced_and_malformed_transactions_are_refused(books: Session) -> None:
    cases: list[tuple[list[Leg], type[Exception]]] = [
        ([debit(FUNDING, eur(100)), credit(BUDGET, eur(99))], UnbalancedTransaction),
        ([debit(FUNDING, eur(100)), credit(BUDGET, Money(100, "USD"))], UnbalancedTransaction),
        ([debit(FUNDING, eur(100))], UnbalancedTransaction),
        ([], InvalidAmount),
    ]
    for legs, error in cases:
        with pytest.raises(error):
            ledger.post_transaction(books, idempotency_key="bad", kind="funding", reference="x", legs=legs)
    for amount in (0, -5):
        with pytest.raises(InvalidAmount):
            debit(FUNDING, eur(amount))
    with pytest.raises(InvalidAmount):
        Leg(FUNDING, "sideways", eur(1))  # type: ignore[arg-type]
    with pytest.raises(AccountNotFound):
        ledger.post_transaction(
            books,
            idempotency_key="nobody",
            kind="funding",
            reference="x",
            legs=[debit("platform:nowhere", eur(1)), credit(BUDGET, eur(1))],
        )
    books.commit()
    assert books.query(LedgerTransaction).count() == 0


def test_idempotency_same_content_returns_first_other_content_conflicts(books: Session) -> None:
    first = fund(books, 5000, key="k")
    books.commit()
    legs = [credit(BUDGET, eur(5000)), debit(FUNDING, eur(5000))]  # the same legs in another order
    again = ledger.post_transaction(
        books, idempotency_key="k", kind="funding", reference="project:1", legs=legs
    )
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        fund(books, 5001, key="k")
    with pytest.raises(IdempotencyConflict):
        ledger.post_transaction(
            books, idempotency_key="k", kind="funding", reference="project:1", legs=legs, metadata={"x": 1}
        )
    books.commit()
    assert ledger.balance(books, account_code=BUDGET, currency="EUR").posted == eur(5000)


def test_a_retry_after_the_money_is_gone_gets_the_first_transaction(books: Session) -> None:
    fund(books, 1000)
    hold = ledger.place_hold(
        books, idempotency_key="lease-1", kind="label_payment", reference="a:1", legs=label_legs(800, 100)
    )
    books.commit()
    # the rest of the budget is spent; the same hold asked again is answered, not refused
    ledger.post_transaction(
        books, idempotency_key="spend", kind="label_payment", reference="l", legs=label_legs(100, 0)
    )
    again = ledger.place_hold(
        books, idempotency_key="lease-1", kind="label_payment", reference="a:1", legs=label_legs(800, 100)
    )
    assert again.id == hold.id
    with pytest.raises(InsufficientFunds):
        ledger.place_hold(
            books, idempotency_key="lease-2", kind="label_payment", reference="a:2", legs=label_legs(800, 100)
        )
    with pytest.raises(IdempotencyConflict):
        ledger.place_hold(
            books, idempotency_key="lease-1", kind="label_payment", reference="a:1", legs=label_legs(1, 0)
        )
    books.commit()
    assert ledger.balance(books, account_code=BUDGET, currency="EUR").available == eur(0)
    assert ledger.check_integrity(books) == []


def test_no_overdraft_refuses_and_leaves_the_session_usable(books: Session) -> None:
    fund(books, 1000)
    with pytest.raises(InsufficientFunds) as refused:
        ledger.post_transaction(
            books, idempotency_key="too-much", kind="label_payment", reference="l", legs=label_legs(900, 101)
        )
    assert refused.value.details["available_minor"] == 1000
    ledger.post_transaction(
        books, idempotency_key="fits", kind="label_payment", reference="l", legs=label_legs(900, 100)
    )
    books.commit()
    assert ledger.balance(books, account_code=BUDGET, currency="EUR").available == eur(0)
    assert ledger.find_transaction(books, idempotency_key="too-much") is None


def test_hold_counts_against_available_then_posts(books: Session) -> None:
    fund(books, 1000)
    hold = ledger.place_hold(
        books,
        idempotency_key="assignment:1:hold",
        kind="label_payment",
        reference="assignment:1",
        legs=label_legs(500, 100),
    )
    books.commit()
    budget = ledger.balance(books, account_code=BUDGET, currency="EUR")
    assert (budget.posted, budget.pending_debits, budget.available) == (eur(1000), eur(600), eur(400))
    payable = ledger.balance(books, account_code=PAYABLE, currency="EUR")
    assert (payable.posted, payable.pending_credits, payable.available) == (eur(0), eur(500), eur(0))
    with pytest.raises(InsufficientFunds):
        ledger.place_hold(
            books, idempotency_key="h2", kind="label_payment", reference="a:2", legs=label_legs(350, 70)
        )

    posted = ledger.post_hold(books, hold_id=hold.id, idempotency_key="label:1:accept")
    assert ledger.post_hold(books, hold_id=hold.id, idempotency_key="label:1:accept").id == posted.id
    books.commit()
    assert posted.resolves_hold_id == hold.id
    assert posted.status == "posted"
    assert posted.kind == "label_payment"
    budget = ledger.balance(books, account_code=BUDGET, currency="EUR")
    assert (budget.posted, budget.pending_debits, budget.available) == (eur(400), eur(0), eur(400))
    assert ledger.balance(books, account_code=PAYABLE, currency="EUR").available == eur(500)
    with pytest.raises(HoldAlreadyResolved):
        ledger.post_hold(books, hold_id=hold.id, idempotency_key="label:1:accept-again")
    with pytest.raises(HoldAlreadyResolved):
        ledger.void_hold(books, hold_id=hold.id, reason="too late")
    assert ledger.check_integrity(books) == []


def test_post_hold_for_less_and_never_more(books: Session) -> None:
    fund(books, 1000)
    hold = ledger.place_hold(
        books, idempotency_key="h", kind="label_payment", reference="a:1", legs=label_legs(500, 100)
    )
    with pytest.raises(InvalidAmount):
        ledger.post_hold(books, hold_id=hold.id, legs=label_legs(501, 100))
    with pytest.raises(InvalidAmount):  # an account the hold never reserved
        ledger.post_hold(books, hold_id=hold.id, legs=[debit(BUDGET, eur(10)), credit(CLEARING, eur(10))])
    with pytest.raises(UnbalancedTransaction):
        ledger.post_hold(books, hold_id=hold.id, legs=[debit(BUDGET, eur(10)), credit(PAYABLE, eur(9))])
    ledger.post_hold(books, hold_id=hold.id, legs=label_legs(400, 80))
    books.commit()
    budget = ledger.balance(books, account_code=BUDGET, currency="EUR")
    assert (budget.posted, budget.pending_debits, budget.available) == (eur(520), eur(0), eur(520))
    assert ledger.check_integrity(books) == []


def test_void_is_idempotent_and_final(books: Session) -> None:
    fund(books, 1000)
    hold = ledger.place_hold(
        books, idempotency_key="h", kind="label_payment", reference="a:1", legs=label_legs(500, 100)
    )
    void = ledger.void_hold(books, hold_id=hold.id, reason="rejected")
    assert ledger.void_hold(books, hold_id=hold.id, reason="asked twice").id == void.id
    books.commit()
    assert (void.status, void.resolves_hold_id, void.entries) == ("voided", hold.id, [])
    assert ledger.balance(books, account_code=BUDGET, currency="EUR").available == eur(1000)
    with pytest.raises(HoldAlreadyResolved):
        ledger.post_hold(books, hold_id=hold.id)
    with pytest.raises(HoldNotFound):
        ledger.void_hold(books, hold_id=9999, reason="x")
    with pytest.raises(HoldNotFound):  # a posted transaction is not a hold
        ledger.void_hold(books, hold_id=void.id, reason="x")
    assert ledger.hold_resolution(books, hold_id=hold.id) is not None


def test_expire_holds(books: Session) -> None:
    fund(books, 1000)
    now = utcnow()
    past = ledger.place_hold(
        books, idempotency_key="old", kind="payout", reference="p:1", legs=label_legs(100, 0), expires_at=now
    )
    future = ledger.place_hold(
        books,
        idempotency_key="new",
        kind="payout",
        reference="p:2",
        legs=label_legs(100, 0),
        expires_at=now + timedelta(hours=1),
    )
    forever = ledger.place_hold(
        books, idempotency_key="nil", kind="payout", reference="p:3", legs=label_legs(100, 0)
    )
    voided = ledger.place_hold(
        books, idempotency_key="gone", kind="payout", reference="p:4", legs=label_legs(100, 0), expires_at=now
    )
    ledger.void_hold(books, hold_id=voided.id, reason="cancelled")
    books.commit()
    assert ledger.expire_holds(books, now=now) == 1
    assert ledger.expire_holds(books, now=now) == 0
    books.commit()
    resolution = ledger.hold_resolution(books, hold_id=past.id)
    assert resolution is not None
    assert resolution.status == "expired"
    assert ledger.hold_resolution(books, hold_id=future.id) is None
    assert ledger.hold_resolution(books, hold_id=forever.id) is None
    assert ledger.balance(books, account_code=BUDGET, currency="EUR").available == eur(800)
    with pytest.raises(HoldAlreadyResolved):
        ledger.post_hold(books, hold_id=past.id)
    with pytest.raises(ValueError, match="timezone"):
        ledger.expire_holds(books, now=now.replace(tzinfo=None))
    assert ledger.check_integrity(books) == []


def test_empty_hold_is_allowed(books: Session) -> None:
    hold = ledger.place_hold(books, idempotency_key="free", kind="label_payment", reference="a:1", legs=[])
    posted = ledger.post_hold(books, hold_id=hold.id)
    books.commit()
    assert posted.entries == []
    assert posted.idempotency_key == f"hold:{hold.id}:post"


def test_balance_of_unknown_account(books: Session) -> None:
    with pytest.raises(AccountNotFound):
        ledger.balance(books, account_code="project:404:budget", currency="EUR")
    with pytest.raises(AccountNotFound):  # the account exists in EUR only
        ledger.balance(books, account_code=BUDGET, currency="USD")


def test_integrity_check_finds_tampering(books: Session, backend: str) -> None:
    fund(books, 1000)
    ledger.post_transaction(
        books, idempotency_key="p", kind="label_payment", reference="l", legs=label_legs(500, 100)
    )
    books.commit()
    assert ledger.check_integrity(books) == []
    assert ledger.check_integrity(books, clearing_at_zero=True) == []
    books.execute(text("UPDATE ledger_balances SET posted_minor = posted_minor + 1"))
    problems = ledger.check_integrity(books)
    assert any("cached balance" in p for p in problems), problems
    books.rollback()
    if backend == "sqlite":  # PostgreSQL refuses the tampering itself (see the trigger tests)
        books.execute(text("UPDATE ledger_entries SET amount_minor = amount_minor + 7 WHERE id = 1"))
        problems = ledger.check_integrity(books)
        assert any("does not balance" in p for p in problems), problems
        assert any("does not sum to zero" in p for p in problems), problems
        books.rollback()
    clearing_hold = ledger.place_hold(
        books,
        idempotency_key="po",
        kind="payout",
        reference="payout:1",
        legs=[debit(PAYABLE, eur(500)), credit(CLEARING, eur(500))],
    )
    ledger.post_hold(books, hold_id=clearing_hold.id)
    books.commit()
    assert ledger.check_integrity(books) == []
    assert ledger.check_integrity(books, clearing_at_zero=True) == [
        "clearing account clearing:stripe_transfers (EUR) is at €5.00, not zero"
    ]


def test_the_database_refuses_an_overdraft_even_past_the_service(books: Session) -> None:
    fund(books, 100)
    books.commit()
    with pytest.raises(IntegrityError, match="no_overdraft"):
        books.execute(text("UPDATE ledger_balances SET pending_out_minor = 101"))
    books.rollback()


def _flaky(failures: list[BaseException]) -> tuple[list[int], object]:
    calls: list[int] = []

    def unit_of_work() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    return calls, unit_of_work


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_with_retries_retries_only_retryable_failures() -> None:
    serialization = OperationalError("UPDATE", {}, _Orig("40001"))
    deadlock = DBAPIError("UPDATE", {}, _Orig("40P01"))
    calls, work = _flaky([serialization, deadlock])
    assert ledger.with_retries(work, base_delay=0) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3

    calls, work = _flaky([serialization] * 5)
    with pytest.raises(OperationalError):
        ledger.with_retries(work, attempts=3, base_delay=0)  # type: ignore[arg-type]
    assert len(calls) == 3

    unique = IntegrityError("INSERT", {}, _Orig("23505"))
    calls, work = _flaky([unique])
    with pytest.raises(IntegrityError):
        ledger.with_retries(work, base_delay=0)  # type: ignore[arg-type]
    assert len(calls) == 1
    calls, work = _flaky([InsufficientFunds("no")])
    with pytest.raises(InsufficientFunds):
        ledger.with_retries(work, base_delay=0)  # type: ignore[arg-type]
    assert len(calls) == 1


@pytest.mark.postgres
def test_postgresql_refuses_updates_and_deletes_of_ledger_rows(books: Session) -> None:
    fund(books, 1000)
    books.commit()
    for statement in (
        "UPDATE ledger_entries SET amount_minor = amount_minor + 1",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_transactions SET status = 'voided'",
        "DELETE FROM ledger_transactions",
        "UPDATE ledger_accounts SET no_overdraft = false",
    ):
        with pytest.raises(IntegrityError, match="append-only"):
            books.execute(text(statement))
        books.rollback()
    assert ledger.check_integrity(books) == []


@pytest.mark.postgres
def test_postgresql_refuses_an_unbalanced_transaction_at_commit(books: Session, engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_transactions (id, idempotency_key, kind, reference, status, content_hash, "
                "metadata, created_at) VALUES (1000, 'raw', 'raw', 'raw', 'posted', '', '{}', now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ledger_entries (transaction_id, account_id, currency, direction, amount_minor) "
                "SELECT 1000, id, 'EUR', 'debit', 100 FROM ledger_accounts WHERE code = :code"
            ),
            {"code": FUNDING},
        )
        with pytest.raises(IntegrityError, match="does not balance"):
            conn.commit()


def test_ledger_cli(books: Session, runner) -> None:
    fund(books, 1234)
    books.commit()
    checked = runner.invoke(args=["ledger", "check", "--clearing"])
    shown = runner.invoke(args=["ledger", "balance", BUDGET, "eur"])
    missing = runner.invoke(args=["ledger", "balance", "project:404:budget", "EUR"])
    assert checked.exit_code == 0, checked.output
    assert shown.exit_code == 0
    assert "posted €12.34" in shown.output
    assert "available €12.34" in shown.output
    assert missing.exit_code == 1
    assert "no account" in missing.output
    books.execute(text("UPDATE ledger_balances SET posted_minor = 1"))
    books.commit()
    broken = runner.invoke(args=["ledger", "check"])
    assert broken.exit_code == 1
    assert "cached balance" in broken.output
