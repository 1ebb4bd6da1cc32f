"""Budget races: many sessions place holds on one budget at the same instant; exactly as many as it covers win.

Each worker runs its whole unit of work (open a session, place the hold, commit) under `with_retries`, the way a
request would. On PostgreSQL the budget's balance row is locked (`SELECT ... FOR UPDATE`), so the workers queue on
it and each one checks the limit against the latest committed balance; on SQLite `BEGIN IMMEDIATE` serialises
the writers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from marketplace.db import build_engine
from payments import ledger
from payments.errors import HoldAlreadyResolved, InsufficientFunds
from payments.ledger import credit, debit
from payments.money import Money

PRICE, FEE = 100, 20


def _open_books(engine: Engine, race: str, workers: int, labels: int) -> str:
    budget = f"project:{race}:budget"
    with Session(engine) as session:
        ledger.ensure_account(session, code=budget, currency="EUR", kind="liability", no_overdraft=True)
        ledger.ensure_account(session, code="platform:fees", currency="EUR", kind="revenue")
        ledger.ensure_account(session, code="platform:funding_received", currency="EUR", kind="asset")
        for worker in range(workers):
            ledger.ensure_account(
                session,
                code=f"annotator:{race}-{worker}:payable",
                currency="EUR",
                kind="liability",
                no_overdraft=True,
            )
        amount = Money(labels * (PRICE + FEE), "EUR")
        ledger.post_transaction(
            session,
            idempotency_key=f"race:{race}:funding",
            kind="funding",
            reference=f"project:{race}",
            legs=[debit("platform:funding_received", amount), credit(budget, amount)],
        )
        session.commit()
    return budget


def _race(engine: Engine, race: str, *, workers: int, labels: int) -> None:
    budget = _open_books(engine, race, workers, labels)
    start = threading.Barrier(workers)

    def lease(worker: int) -> str:
        def unit_of_work() -> str:
            with Session(engine) as session:
                ledger.place_hold(
                    session,
                    idempotency_key=f"race:{race}:assignment:{worker}:hold",
                    kind="label_payment",
                    reference=f"assignment:{race}-{worker}",
                    legs=[
                        debit(budget, Money(PRICE + FEE, "EUR")),
                        credit(f"annotator:{race}-{worker}:payable", Money(PRICE, "EUR")),
                        credit("platform:fees", Money(FEE, "EUR")),
                    ],
                )
                session.commit()
                return "held"

        start.wait()
        try:
            return ledger.with_retries(unit_of_work)
        except InsufficientFunds:
            return "refused"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lease, range(workers)))

    assert outcomes.count("held") == labels
    assert outcomes.count("refused") == workers - labels
    with Session(engine) as session:
        balance = ledger.balance(session, account_code=budget, currency="EUR")
        assert balance.available == Money(0, "EUR")
        assert balance.pending_debits == Money(labels * (PRICE + FEE), "EUR")
        assert ledger.check_integrity(session) == []


@pytest.mark.postgres
def test_fifty_leases_race_for_forty_labels_on_postgresql(database_url: str) -> None:
    engine = build_engine(database_url)  # the app's engine: a pool of 30 for 50 workers, as under load
    try:
        for race in ("a", "b", "c"):
            _race(engine, race, workers=50, labels=40)
    finally:
        engine.dispose()


@pytest.mark.parametrize("immediate", [True, False], ids=["begin-immediate", "pysqlite-deferred"])
def test_leases_race_on_sqlite_too(database_url: str, backend: str, immediate: bool) -> None:
    """The app's engine begins with BEGIN IMMEDIATE; the ledger must hold even on an engine that does not."""
    if backend != "sqlite":
        pytest.skip("the PostgreSQL race above is the larger one")
    engine = build_engine(database_url, sqlite_begin="IMMEDIATE" if immediate else None)
    try:
        _race(engine, "s", workers=12, labels=9)
    finally:
        engine.dispose()


def _in_threads(workers: int, work: Callable[[int], str]) -> list[str]:
    start = threading.Barrier(workers)

    def run(worker: int) -> str:
        start.wait()
        return work(worker)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(workers)))


def test_the_same_key_posted_at_once_is_written_once(database_url: str) -> None:
    """Concurrent retries of one request: every caller gets the one transaction (the SAVEPOINT path)."""
    engine = build_engine(database_url)
    budget = _open_books(engine, "k", workers=1, labels=1)
    amount = Money(500, "EUR")

    def fund(_: int) -> str:
        def unit_of_work() -> str:
            with Session(engine) as session:
                posted = ledger.post_transaction(
                    session,
                    idempotency_key="race:k:top-up",
                    kind="funding",
                    reference="project:k",
                    legs=[debit("platform:funding_received", amount), credit(budget, amount)],
                )
                session.commit()
                return str(posted.id)

        return ledger.with_retries(unit_of_work)

    try:
        assert len(set(_in_threads(8, fund))) == 1
        with Session(engine) as session:
            assert ledger.balance(session, account_code=budget, currency="EUR").posted == amount + Money(
                PRICE + FEE, "EUR"
            )
            assert ledger.check_integrity(session) == []
    finally:
        engine.dispose()


def test_a_hold_raced_by_posters_and_voiders_is_resolved_once(database_url: str) -> None:
    engine = build_engine(database_url)
    budget = _open_books(engine, "h", workers=1, labels=1)
    with Session(engine) as session:
        hold = ledger.place_hold(
            session,
            idempotency_key="race:h:hold",
            kind="label_payment",
            reference="assignment:h",
            legs=[
                debit(budget, Money(PRICE + FEE, "EUR")),
                credit("annotator:h-0:payable", Money(PRICE, "EUR")),
                credit("platform:fees", Money(FEE, "EUR")),
            ],
        )
        session.commit()
        hold_id = hold.id

    def resolve(worker: int) -> str:
        def unit_of_work() -> str:
            with Session(engine) as session:
                if worker % 2:
                    result = ledger.void_hold(session, hold_id=hold_id, reason="race")
                else:
                    result = ledger.post_hold(
                        session, hold_id=hold_id, idempotency_key=f"race:h:accept:{worker}"
                    )
                session.commit()
                return f"{result.status}:{result.id}"

        try:
            return ledger.with_retries(unit_of_work)
        except HoldAlreadyResolved:
            return "already resolved"

    try:
        outcomes = _in_threads(10, resolve)
        winners = {outcome for outcome in outcomes if outcome != "already resolved"}
        assert len(winners) == 1, outcomes
        (winner,) = winners
        # posting under another key is refused; voiding a voided hold returns the first void
        refused = outcomes.count("already resolved")
        assert refused == (5 if winner.startswith("voided") else 9), outcomes
        with Session(engine) as session:
            resolution = ledger.hold_resolution(session, hold_id=hold_id)
            assert resolution is not None
            assert f"{resolution.status}:{resolution.id}" == winner
            assert ledger.check_integrity(session) == []
    finally:
        engine.dispose()
