"""The fault matrix: a crash at each step of a payout run, then a re-run. Whatever the crash, every payout ends
settled or failed-and-released, the fake Stripe holds at most one transfer per payout, and the ledger is
balanced with its clearing accounts back at zero."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from payments import ledger, payout_runs, payouts, webhooks
from payments.gateways.base import WebhookEvent
from payments.gateways.stripe import StripeGateway
from payments.money import Money
from payments.payout_models import Payout, StripeEvent
from payments.payout_runs import SessionScope
from payments.throttle import Throttle
from tests.payments.conftest import FrozenClock, available, earn, integrity, payee_account
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer, sign_payload

AMOUNTS = {"annotator:1": 2500, "annotator:2": 1800, "annotator:3": 1200}
RECOVERY = payouts.DEFAULT_LEASE + timedelta(minutes=1)


class Crash(Exception):
    """The process died here."""


def crash_once(step: str, *, on_payout_number: int = 2):  # type: ignore[no-untyped-def]
    """An `on_step` hook that raises the first time `step` is reached for the n-th payout it sees."""
    seen: list[int] = []
    fired: list[bool] = []

    def hook(name: str, payout_id: int) -> None:
        if name != step:
            return
        if payout_id not in seen:
            seen.append(payout_id)
        if not fired and len(seen) == on_payout_number:
            fired.append(True)
            raise Crash(f"crash at {step} of payout {payout_id}")

    return hook


@pytest.fixture
def gateway(fake_stripe_server: FakeStripeServer) -> StripeGateway:
    """No client retries: a lost answer stays lost, as after a real crash."""
    return StripeGateway(api_key=API_KEY, api_base=fake_stripe_server.url, max_network_retries=0)


@pytest.fixture
def world(scope: SessionScope, gateway: StripeGateway, fake_stripe: FakeStripe) -> None:
    fake_stripe.fund("eur", 100_000)
    for payee, amount in AMOUNTS.items():
        earn(scope, payee, Money(amount, "EUR"))
        payee_account(scope, gateway, payee, fake=fake_stripe)


def _run(scope: SessionScope, gateway: StripeGateway, throttle: Throttle, clock: FrozenClock, **kwargs):  # type: ignore[no-untyped-def]
    return payout_runs.run_payouts(
        scope,
        gateway=gateway,
        throttle=throttle,
        min_amount_minor=1000,
        requested_by="test",
        worker="w",
        clock=clock,
        **kwargs,
    )


def _deliver_all(scope: SessionScope, fake: FakeStripe, secret: str, *types: str) -> None:
    for event in fake.events_of(*types):
        body = json.dumps(event).encode()
        with scope() as session:
            webhooks.receive_event(
                session, payload=body, signature_header=sign_payload(body, secret), secret=secret
            )


def _assert_recovered(scope: SessionScope, fake: FakeStripe) -> None:
    with scope() as session:
        rows = list(session.scalars(select(Payout).order_by(Payout.id)))
        resolutions = {p.id: ledger.hold_resolution(session, hold_id=p.hold_id or 0) for p in rows}
    assert rows, "the scenario made no payouts"
    for payout in rows:
        sent = fake.transfers_in_group(f"payout:{payout.id}")
        if payout.state == "settled":
            assert [t["id"] for t in sent] == [payout.transfer_id]
            assert resolutions[payout.id] is not None
            assert resolutions[payout.id].status == "posted"
        else:
            assert payout.state == "failed", f"payout {payout.id} ended {payout.state}"
            assert sent == []
            assert resolutions[payout.id] is not None
            assert resolutions[payout.id].status == "voided"
    settled = [p for p in rows if p.state == "settled"]
    assert len(fake.transfers) == len(settled)
    assert {p.payee_reference for p in settled} == set(AMOUNTS)
    for payee in AMOUNTS:
        assert available(scope, payee) == 0
    assert fake.available["eur"] == 100_000 - sum(AMOUNTS.values())
    assert integrity(scope, clearing_at_zero=True) == []


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize("step", ["requested", "claimed", "transferred", "recorded"])
def test_a_crash_at_any_step_then_a_rerun_pays_everyone_once(
    step: str,
    scope: SessionScope,
    gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    with pytest.raises(Crash):
        _run(scope, gateway, throttle, clock, on_step=crash_once(step))

    clock.advance(RECOVERY)
    _run(scope, gateway, throttle, clock)

    _assert_recovered(scope, fake_stripe)


@pytest.mark.usefixtures("world")
def test_a_connection_dropped_after_stripe_created_the_transfer(
    scope: SessionScope,
    gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.inject("POST /v1/transfers", "drop_after", times=2)
    first = _run(scope, gateway, throttle, clock)
    assert len(first.submit.retrying) == 2
    assert len(fake_stripe.transfers) == 3  # all three moved; two of them unbeknown to us

    clock.advance(RECOVERY)
    _run(scope, gateway, throttle, clock)

    _assert_recovered(scope, fake_stripe)


@pytest.mark.usefixtures("world")
def test_a_crash_in_webhook_processing_is_retried_by_the_next_pass(
    scope: SessionScope,
    gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
    webhook_secret: str,
) -> None:
    # Every answer from Stripe is lost: only the webhooks can tell us what happened.
    fake_stripe.inject("POST /v1/transfers", "drop_after", times=3)
    _run(scope, gateway, throttle, clock)
    _deliver_all(scope, fake_stripe, webhook_secret, "transfer.created")
    failures: list[str] = []

    def flaky(session: object, event: WebhookEvent) -> None:
        if not failures:
            failures.append(event.id)
            raise Crash("the worker died while processing")

    registry = webhooks.HandlerRegistry()
    registry.register("transfer.created", flaky)
    first = webhooks.process_pending_events(scope, gateway=gateway, clock=clock, registry=registry)
    second = webhooks.process_pending_events(scope, gateway=gateway, clock=clock, registry=registry)

    assert list(first.failed) == failures
    assert len(first.processed) == 2
    assert second.processed == failures
    with scope() as session:
        (event,) = session.scalars(select(StripeEvent).where(StripeEvent.id == failures[0]))
        assert (event.status, event.attempts) == ("processed", 2)
        assert event.last_error is None
    clock.advance(RECOVERY)
    _run(scope, gateway, throttle, clock)  # nothing left to do: the webhooks settled everything
    assert fake_stripe.count_requests("POST", "/v1/transfers") == 3
    _assert_recovered(scope, fake_stripe)


@pytest.mark.usefixtures("world")
def test_payouts_stuck_for_a_day_are_resolved_by_lookup(
    scope: SessionScope,
    gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.inject("POST /v1/transfers", "drop_after")
    fake_stripe.inject("POST /v1/transfers", "drop_before")
    _run(scope, gateway, throttle, clock)
    clock.advance(payouts.DEFAULT_STALE_AFTER + timedelta(hours=1))
    fake_stripe.forget_idempotency_keys()

    report = _run(scope, gateway, throttle, clock).lookups  # the next run looks them up, never re-posts
    assert report.marked_stale == 2
    assert len(report.settled) == 1
    assert len(report.failed) == 1
    _run(scope, gateway, throttle, clock)  # pays the released balance with a new payout

    _assert_recovered(scope, fake_stripe)
