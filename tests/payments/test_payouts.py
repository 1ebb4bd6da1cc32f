"""Payout runs: planning, requesting (row + hold), submitting with our key, and every way a payout ends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from payments import ledger, payout_outcomes, payout_runs, payouts
from payments.errors import GatewayOutcomeUnknownError, PayoutError, TransferDeclinedError
from payments.gateways.local import LocalGateway
from payments.gateways.stripe import StripeGateway
from payments.models import LedgerEntry, LedgerTransaction
from payments.money import Money
from payments.payout_models import Payout, PayoutRun
from payments.payout_runs import SessionScope
from payments.throttle import Throttle
from tests.payments.conftest import FrozenClock, available, earn, integrity, payee_account
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer

EUR = "EUR"


def eur(amount: int) -> Money:
    return Money(amount, EUR)


def _run(scope: SessionScope, gateway, throttle: Throttle, clock: FrozenClock, **kwargs):  # type: ignore[no-untyped-def]
    options = {"min_amount_minor": 1000, "requested_by": "test", "worker": "w1", "clock": clock}
    options.update(kwargs)
    return payout_runs.run_payouts(scope, gateway=gateway, throttle=throttle, **options)


def _payouts(scope: SessionScope) -> list[Payout]:
    with scope() as session:
        return list(session.scalars(select(Payout).order_by(Payout.id)))


def _count(scope: SessionScope, model: type) -> int:
    with scope() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_local_run_pays_every_due_payee_in_the_ledger_only(
    scope: SessionScope, throttle: Throttle, clock: FrozenClock
) -> None:
    gateway = LocalGateway()
    for n, amount in ((1, 2500), (2, 1000), (3, 999)):
        earn(scope, f"annotator:{n}", eur(amount))
        payee_account(scope, gateway, f"annotator:{n}")

    report = _run(scope, gateway, throttle, clock)

    rows = _payouts(scope)
    assert [(p.payee_reference, p.amount_minor, p.state) for p in rows] == [
        ("annotator:1", 2500, "settled"),
        ("annotator:2", 1000, "settled"),
    ]
    assert report.submit.settled == [p.id for p in rows]
    assert [(s.payee_reference, s.reason) for s in report.plan.skipped] == [("annotator:3", "below_minimum")]
    assert [p.idempotency_key for p in rows] == [f"payout:{p.id}:transfer:v1" for p in rows]
    assert available(scope, "annotator:1") == 0
    assert available(scope, "annotator:3") == 999
    with scope() as session:
        assert ledger.balance(session, account_code="platform:stripe_balance", currency=EUR).posted == eur(
            -3500
        )
        run = session.get_one(PayoutRun, report.run_id)
        assert (run.payouts_requested, run.totals, run.finished_at is not None) == (
            2,
            {EUR: {"count": 2, "amount_minor": 3500}},
            True,
        )
    assert integrity(scope) == []


def test_a_stripe_run_transfers_with_our_keys_and_books_clearing_back_to_zero(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 100_000)
    earn(scope, "annotator:1", eur(2500))
    earn(scope, "annotator:2", eur(1200))
    earn(scope, "annotator:3", eur(5000))  # no payout account yet
    earn(scope, "annotator:4", eur(5000))  # onboarding not finished
    payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)
    payee_account(scope, stripe_gateway, "annotator:2", fake=fake_stripe)
    payee_account(scope, stripe_gateway, "annotator:4", fake=fake_stripe, enabled=False)

    report = _run(scope, stripe_gateway, throttle, clock)

    rows = _payouts(scope)
    assert [(p.payee_reference, p.state) for p in rows] == [
        ("annotator:1", "settled"),
        ("annotator:2", "settled"),
    ]
    assert {(s.payee_reference, s.reason) for s in report.plan.skipped} == {
        ("annotator:3", "no_payout_account"),
        ("annotator:4", "payouts_disabled"),
    }
    for payout in rows:
        sent = fake_stripe.transfers_in_group(f"payout:{payout.id}")
        assert [t["id"] for t in sent] == [payout.transfer_id]
        assert sent[0]["amount"] == payout.amount_minor
        assert payout.balance_ledger_transaction_id is not None
        assert payout.attempts == 1
    keys = [
        r.idempotency_key for r in fake_stripe.requests if (r.method, r.path) == ("POST", "/v1/transfers")
    ]
    assert keys == [p.idempotency_key for p in rows]
    assert fake_stripe.available["eur"] == 100_000 - 3700
    with scope() as session:
        clearing = ledger.balance(session, account_code="clearing:stripe_transfers", currency=EUR)
        assert clearing.posted == eur(0)
        assert clearing.pending_credits == eur(0)
    assert integrity(scope) == []


def test_the_entries_of_a_settled_payout(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 10_000)
    earn(scope, "annotator:1", eur(1800))
    payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)

    _run(scope, stripe_gateway, throttle, clock)

    (payout,) = _payouts(scope)
    with scope() as session:
        entries = session.execute(
            select(LedgerTransaction.id, LedgerTransaction.status, ledger.Account.code, LedgerEntry.direction)
            .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
            .join(ledger.Account, ledger.Account.id == LedgerEntry.account_id)
            .where(LedgerTransaction.reference == f"payout:{payout.id}")
            .order_by(LedgerTransaction.id, LedgerEntry.id)
        ).all()
    assert [(tx, status, code, direction) for tx, status, code, direction in entries] == [
        (payout.hold_id, "pending", "annotator:1:payable", "debit"),
        (payout.hold_id, "pending", "clearing:stripe_transfers", "credit"),
        (payout.settle_transaction_id, "posted", "annotator:1:payable", "debit"),
        (payout.settle_transaction_id, "posted", "clearing:stripe_transfers", "credit"),
        (payout.balance_ledger_transaction_id, "posted", "clearing:stripe_transfers", "debit"),
        (payout.balance_ledger_transaction_id, "posted", "platform:stripe_balance", "credit"),
    ]


def test_a_dry_run_writes_nothing_and_totals_per_currency(scope: SessionScope, clock: FrozenClock) -> None:
    gateway = LocalGateway()
    earn(scope, "annotator:1", eur(2500))
    earn(scope, "annotator:2", Money(4000, "USD"))
    earn(scope, "annotator:3", Money(1500, "USD"))
    payee_account(scope, gateway, "annotator:1")
    payee_account(scope, gateway, "annotator:2", currency="USD", country="US")
    payee_account(scope, gateway, "annotator:3", currency="USD", country="US")
    before = (_count(scope, Payout), _count(scope, PayoutRun), _count(scope, LedgerTransaction))

    plan = payout_runs.dry_run(scope, min_amount_minor=1000)
    usd_only = payout_runs.dry_run(scope, min_amount_minor=1000, currency="USD")

    assert plan.totals() == {
        "EUR": {"count": 1, "amount_minor": 2500},
        "USD": {"count": 2, "amount_minor": 5500},
    }
    assert usd_only.totals() == {"USD": {"count": 2, "amount_minor": 5500}}
    assert (_count(scope, Payout), _count(scope, PayoutRun), _count(scope, LedgerTransaction)) == before
    assert available(scope, "annotator:2", "USD") == 4000


def test_a_declined_transfer_fails_the_payout_and_releases_the_money(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 500)  # less than the payout
    earn(scope, "annotator:1", eur(2000))
    payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)

    report = _run(scope, stripe_gateway, throttle, clock)

    (payout,) = _payouts(scope)
    assert report.submit.failed == [payout.id]
    assert (payout.state, payout.failure_code) == ("failed", "balance_insufficient")
    with scope() as session:
        resolution = ledger.hold_resolution(session, hold_id=payout.hold_id or 0)
    assert resolution is not None
    assert resolution.status == "voided"
    assert available(scope, "annotator:1") == 2000

    fake_stripe.fund("eur", 10_000)
    _run(scope, stripe_gateway, throttle, clock)  # the next run pays it with a new payout and a new key

    first, second = _payouts(scope)
    assert (first.state, second.state) == ("failed", "settled")
    assert second.idempotency_key != first.idempotency_key
    assert available(scope, "annotator:1") == 0
    assert integrity(scope) == []


def test_an_unknown_outcome_is_retried_with_the_same_key_after_the_delay(
    scope: SessionScope,
    fake_stripe: FakeStripe,
    fake_stripe_server: FakeStripeServer,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    gateway = StripeGateway(api_key=API_KEY, api_base=fake_stripe_server.url, max_network_retries=0)
    fake_stripe.fund("eur", 10_000)
    earn(scope, "annotator:1", eur(2000))
    payee_account(scope, gateway, "annotator:1", fake=fake_stripe)
    fake_stripe.inject("POST /v1/transfers", "drop_after")

    report = _run(scope, gateway, throttle, clock)

    (payout,) = _payouts(scope)
    assert report.submit.retrying == [payout.id]
    assert payout.state == "submitting"
    assert payout.failure_code == GatewayOutcomeUnknownError.code
    assert len(fake_stripe.transfers_in_group(f"payout:{payout.id}")) == 1  # it went through, unseen

    early = payout_runs.submit_due_payouts(
        scope, gateway=gateway, throttle=throttle, worker="w2", clock=clock
    )
    assert early.settled == []  # not due yet: the retry delay has not passed

    clock.advance(payouts.DEFAULT_RETRY_DELAY + timedelta(seconds=1))
    later = payout_runs.submit_due_payouts(
        scope, gateway=gateway, throttle=throttle, worker="w2", clock=clock
    )

    (payout,) = _payouts(scope)
    assert later.settled == [payout.id]
    assert (payout.state, payout.attempts) == ("settled", 2)
    assert [t["id"] for t in fake_stripe.transfers_in_group(f"payout:{payout.id}")] == [payout.transfer_id]
    keys = {
        r.idempotency_key for r in fake_stripe.requests if (r.method, r.path) == ("POST", "/v1/transfers")
    }
    assert keys == {payout.idempotency_key}
    assert integrity(scope) == []


def test_stale_payouts_are_looked_up_never_reposted(
    scope: SessionScope,
    fake_stripe: FakeStripe,
    fake_stripe_server: FakeStripeServer,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    gateway = StripeGateway(api_key=API_KEY, api_base=fake_stripe_server.url, max_network_retries=0)
    fake_stripe.fund("eur", 10_000)
    for n in (1, 2):
        earn(scope, f"annotator:{n}", eur(1000 * n))
        payee_account(scope, gateway, f"annotator:{n}", fake=fake_stripe)
    # the first transfer happens but its answer is lost; the second never reaches Stripe
    fake_stripe.inject("POST /v1/transfers", "drop_after")
    fake_stripe.inject("POST /v1/transfers", "drop_before")
    _run(scope, gateway, throttle, clock)
    assert [p.state for p in _payouts(scope)] == ["submitting", "submitting"]

    clock.advance(payouts.DEFAULT_STALE_AFTER + timedelta(minutes=1))
    fake_stripe.forget_idempotency_keys()  # a re-post now would create a second transfer
    posts_before = fake_stripe.count_requests("POST", "/v1/transfers")
    due = payout_runs.submit_due_payouts(scope, gateway=gateway, throttle=throttle, worker="w2", clock=clock)
    assert due.settled == due.retrying == due.failed == []
    report = payout_runs.resolve_stale_payouts(scope, gateway=gateway, worker="w2", clock=clock)

    first, second = _payouts(scope)
    assert report.marked_stale == 2
    assert (report.settled, report.failed) == ([first.id], [second.id])
    assert first.state == "settled"
    assert (second.state, second.failure_code) == ("failed", "not_found_at_gateway")
    assert fake_stripe.count_requests("POST", "/v1/transfers") == posts_before
    assert len(fake_stripe.transfers_in_group(f"payout:{first.id}")) == 1
    assert available(scope, "annotator:2") == 2000
    assert integrity(scope) == []


def test_a_worker_whose_claim_was_taken_over_cannot_fail_the_payout(
    scope: SessionScope, clock: FrozenClock
) -> None:
    gateway = LocalGateway()
    earn(scope, "annotator:1", eur(2000))
    payee_account(scope, gateway, "annotator:1")
    with scope() as session:
        plan = payouts.plan_payouts(session, min_amount_minor=1000)
        payouts.request_payout(session, planned=plan.payouts[0], min_amount_minor=1000)
    with scope() as session:
        (old,) = payouts.claim_payouts(session, worker="slow", now=clock())
    clock.advance(payouts.DEFAULT_LEASE + timedelta(seconds=1))
    with scope() as session:
        (new,) = payouts.claim_payouts(session, worker="fast", now=clock())
    assert new.version > old.version
    assert new.idempotency_key == old.idempotency_key

    with scope() as session:
        stale = payout_outcomes.record_gateway_error(
            session,
            payout_id=old.payout_id,
            version=old.version,
            error=TransferDeclinedError("late news"),
            now=clock(),
        )
        assert stale.state == "submitting"
    transfer = gateway.create_transfer(
        amount=new.amount,
        destination=new.destination,
        idempotency_key=new.idempotency_key,
        transfer_group=new.transfer_group,
        metadata=new.metadata,
    )
    with scope() as session:
        assert payout_outcomes.record_transfer(
            session, payout_id=new.payout_id, transfer=transfer, now=clock()
        ).state == ("settled")
    assert integrity(scope) == []


def test_one_open_payout_per_payee(scope: SessionScope) -> None:
    gateway = LocalGateway()
    earn(scope, "annotator:1", eur(5000))
    payee_account(scope, gateway, "annotator:1")
    with scope() as session:
        (planned,) = payouts.plan_payouts(session, min_amount_minor=1000).payouts
    with scope() as session:
        first = payouts.request_payout(session, planned=planned, min_amount_minor=1000)
    earn(scope, "annotator:1", eur(3000))
    with scope() as session:
        second = payouts.request_payout(session, planned=planned, min_amount_minor=1000)
        plan = payouts.plan_payouts(session, min_amount_minor=1000)

    assert first is not None
    assert second is None
    assert [(s.payee_reference, s.reason) for s in plan.skipped] == [("annotator:1", "payout_in_progress")]
    assert available(scope, "annotator:1") == 3000  # the first payout holds its 5000


def test_reversals_return_money_to_the_payee(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 10_000)
    earn(scope, "annotator:1", eur(2000))
    payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)
    _run(scope, stripe_gateway, throttle, clock)
    (payout,) = _payouts(scope)
    assert payout.transfer_id is not None

    fake_stripe.reverse(payout.transfer_id, 500)
    for _ in range(2):  # applying the same news twice books it once
        with scope() as session:
            payout_outcomes.sync_transfer(
                session, transfer=stripe_gateway.retrieve_transfer(payout.transfer_id), now=clock()
            )
    (partly,) = _payouts(scope)
    assert (partly.state, partly.amount_reversed_minor) == ("settled", 500)
    assert available(scope, "annotator:1") == 500

    fake_stripe.reverse(payout.transfer_id)
    with scope() as session:
        payout_outcomes.sync_transfer(
            session, transfer=stripe_gateway.retrieve_transfer(payout.transfer_id), now=clock()
        )
    (reversed_,) = _payouts(scope)
    assert (reversed_.state, reversed_.amount_reversed_minor) == ("reversed", 2000)
    assert len(reversed_.reversals) == 2
    assert available(scope, "annotator:1") == 2000
    with scope() as session:
        assert ledger.balance(session, account_code="platform:stripe_balance", currency=EUR).posted == eur(0)
    assert integrity(scope) == []


def test_a_transfer_that_appears_after_the_payout_failed_is_booked_late(
    scope: SessionScope, stripe_gateway: StripeGateway, fake_stripe: FakeStripe, clock: FrozenClock
) -> None:
    fake_stripe.fund("eur", 10_000)
    earn(scope, "annotator:1", eur(2000))
    destination = payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)
    with scope() as session:
        (planned,) = payouts.plan_payouts(session, min_amount_minor=1000).payouts
        payout = payouts.request_payout(session, planned=planned, min_amount_minor=1000)
        assert payout is not None
        payout_id = payout.id
    with scope() as session:
        (claim,) = payouts.claim_payouts(session, worker="w", now=clock())
        payout_outcomes.record_gateway_error(
            session,
            payout_id=payout_id,
            version=claim.version,
            error=TransferDeclinedError("x"),
            now=clock(),
        )
    assert available(scope, "annotator:1") == 2000
    transfer = stripe_gateway.create_transfer(
        amount=eur(2000),
        destination=destination,
        idempotency_key=claim.idempotency_key,
        transfer_group=claim.transfer_group,
        metadata=claim.metadata,
    )

    with scope() as session:
        late = payout_outcomes.sync_transfer(session, transfer=transfer, now=clock())

    assert late is not None
    assert late.state == "settled"
    assert available(scope, "annotator:1") == 0
    assert integrity(scope) == []


def test_a_minimum_below_one_minor_unit_is_refused(scope: SessionScope) -> None:
    with scope() as session, pytest.raises(PayoutError):
        payouts.plan_payouts(session, min_amount_minor=0)
