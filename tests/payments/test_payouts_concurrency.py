"""Concurrent payout workers on PostgreSQL: they split the due payouts between them and never submit one twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select, text

from payments import payout_runs, payouts
from payments.db import utcnow
from payments.gateways.local import LocalGateway
from payments.money import Money
from payments.payout_models import Payout
from payments.payout_runs import SessionScope
from payments.throttle import Throttle
from tests.payments.conftest import earn, integrity, payee_account

pytestmark = pytest.mark.postgres


class CountingGateway(LocalGateway):
    """The local gateway, a little slow, counting the calls made under each idempotency key."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.callers: dict[str, str] = {}
        self._count_lock = threading.Lock()

    def create_transfer(self, **kwargs):  # type: ignore[no-untyped-def, override]
        with self._count_lock:
            self.calls[kwargs["idempotency_key"]] += 1
            self.callers[kwargs["idempotency_key"]] = threading.current_thread().name
        time.sleep(self.delay)
        return super().create_transfer(**kwargs)


def _request_all(scope: SessionScope, gateway: LocalGateway, count: int) -> list[int]:
    for n in range(1, count + 1):
        earn(scope, f"annotator:{n}", Money(1000 + n, "EUR"))
        payee_account(scope, gateway, f"annotator:{n}")
    ids = []
    with scope() as session:
        for planned in payouts.plan_payouts(session, min_amount_minor=1000).payouts:
            payout = payouts.request_payout(session, planned=planned, min_amount_minor=1000)
            assert payout is not None
            ids.append(payout.id)
    return ids


def test_two_workers_split_the_batch_and_submit_each_payout_once(
    scope: SessionScope, throttle: Throttle
) -> None:
    gateway = CountingGateway(delay=0.01)
    ids = _request_all(scope, gateway, 16)
    start = threading.Barrier(2)
    reports: dict[str, payout_runs.SubmitReport] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            start.wait()
            reports[name] = payout_runs.submit_due_payouts(
                scope, gateway=gateway, throttle=throttle, worker=name, batch_size=2
            )
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,), name=name) for name in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert set(gateway.calls.values()) == {1}
    assert len(gateway.calls) == len(ids)
    first, second = set(reports["w1"].settled), set(reports["w2"].settled)
    assert first.isdisjoint(second)
    assert first | second == set(ids)
    assert first
    assert second  # both workers took part: the batch really was contended
    with scope() as session:
        rows = list(session.scalars(select(Payout)))
    assert {p.state for p in rows} == {"settled"}
    assert {p.claimed_by for p in rows} == {None}
    assert {gateway.callers[p.idempotency_key or ""] for p in rows} == {"w1", "w2"}
    assert integrity(scope) == []


def test_a_claim_in_progress_is_skipped_not_waited_for(scope: SessionScope) -> None:
    gateway = LocalGateway()
    ids = _request_all(scope, gateway, 6)
    with scope() as holder:
        held = payouts.claim_payouts(holder, worker="holder", now=utcnow(), limit=3)
        # The holder has not committed: its rows are locked. A second worker must not wait for them.
        with scope() as other:
            other.execute(text("SET LOCAL lock_timeout = '1s'"))
            taken = payouts.claim_payouts(other, worker="other", now=utcnow(), limit=10)
    assert [c.payout_id for c in held] == ids[:3]
    assert [c.payout_id for c in taken] == ids[3:]


def test_two_requests_opening_the_same_payees_account_at_once_get_the_same_account(
    scope: SessionScope,
) -> None:
    """A double click on "start onboarding": the second request's insert waits for the first's, then finds the
    account recorded rather than failing on the unique key (the gateway's idempotency gave both the same id)."""
    gateway = LocalGateway()
    opened: dict[str, object] = {}
    errors: list[BaseException] = []
    with scope() as first:
        mine = payouts.open_payout_account(
            first, gateway=gateway, reference="annotator:7", country="DE", currency="EUR"
        )

        def second_request() -> None:
            try:
                with scope() as second:
                    theirs = payouts.open_payout_account(
                        second, gateway=gateway, reference="annotator:7", country="DE", currency="EUR"
                    )
                    opened["id"] = theirs.id
            except BaseException as exc:  # the assertion below names it
                errors.append(exc)

        thread = threading.Thread(target=second_request)
        thread.start()
        time.sleep(0.3)  # the second request is now waiting on the first's uncommitted row
        assert thread.is_alive()
    thread.join(timeout=30)
    assert errors == []
    assert opened["id"] == mine.id
    with scope() as session:
        assert session.scalar(text("SELECT count(*) FROM payout_accounts")) == 1
