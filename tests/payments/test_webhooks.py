"""Stripe webhooks: signature and timestamp checks, storage once per event id, and processing that gives the
same final state whatever the order of delivery and however many duplicates."""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from payments import ledger, payout_runs, webhooks
from payments.errors import WebhookSignatureError
from payments.gateways.base import WebhookEvent
from payments.gateways.stripe import StripeGateway, verify_webhook
from payments.money import Money
from payments.payout_models import Payout, PayoutAccount, StripeBankPayout, StripeEvent, StripeFunding
from payments.payout_runs import SessionScope
from payments.throttle import Throttle
from tests.payments.conftest import FrozenClock, available, earn, integrity, payee_account
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer, sign_payload


def _event(type_: str = "transfer.created", *, obj: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_test_{type_.replace('.', '_')}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "data": {"object": obj or {"id": "tr_1", "object": "transfer"}},
        "livemode": False,
        "type": type_,
    }


def _receive(scope: SessionScope, body: bytes, header: str | None, secret: str) -> tuple[StripeEvent, bool]:
    with scope() as session:
        return webhooks.receive_event(session, payload=body, signature_header=header, secret=secret)


def _stored(scope: SessionScope) -> int:
    with scope() as session:
        return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)


def test_a_signed_event_is_stored_once(scope: SessionScope, webhook_secret: str) -> None:
    body = json.dumps(_event()).encode()

    row, created = _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)
    again, created_again = _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)

    assert (row.id, row.type, row.status, created) == (
        "evt_test_transfer_created",
        "transfer.created",
        "pending",
        True,
    )
    assert (again.id, created_again) == (row.id, False)
    assert _stored(scope) == 1


@pytest.mark.parametrize(
    "tamper",
    ["body", "signature", "secret", "missing_header", "old_timestamp", "future_timestamp", "not_an_event"],
)
def test_forged_or_stale_deliveries_are_refused(webhook_secret: str, tamper: str) -> None:
    body = json.dumps(_event()).encode()
    header: str | None = sign_payload(body, webhook_secret)
    if tamper == "body":
        body = body.replace(b"tr_1", b"tr_2")
    elif tamper == "signature":
        assert header is not None
        header = header[:-1] + ("1" if header.endswith("0") else "0")
    elif tamper == "secret":
        header = sign_payload(body, "whsec_someone_else")
    elif tamper == "missing_header":
        header = None
    elif tamper == "old_timestamp":
        header = sign_payload(body, webhook_secret, timestamp=int(time.time()) - 301)
    elif tamper == "future_timestamp":
        header = sign_payload(body, webhook_secret, timestamp=int(time.time()) + 301)
    elif tamper == "not_an_event":
        body = json.dumps({"id": "x", "object": "charge"}).encode()
        header = sign_payload(body, webhook_secret)

    with pytest.raises(WebhookSignatureError):
        verify_webhook(payload=body, signature_header=header, secret=webhook_secret)


def test_timestamps_within_five_minutes_either_way_are_accepted(webhook_secret: str) -> None:
    body = json.dumps(_event()).encode()
    for offset in (-290, 0, 290):
        header = sign_payload(body, webhook_secret, timestamp=int(time.time()) + offset)
        assert verify_webhook(payload=body, signature_header=header, secret=webhook_secret).id == (
            "evt_test_transfer_created"
        )


def test_either_of_several_configured_secrets_verifies(webhook_secret: str) -> None:
    body = json.dumps(_event()).encode()
    connect_secret = "whsec_connect_endpoint"
    configured = f"{webhook_secret}, {connect_secret}"

    for signer in (webhook_secret, connect_secret):
        header = sign_payload(body, signer)
        assert (
            verify_webhook(payload=body, signature_header=header, secret=configured).type
            == "transfer.created"
        )
    with pytest.raises(WebhookSignatureError):
        verify_webhook(payload=body, signature_header=sign_payload(body, "whsec_other"), secret=configured)


def test_a_refused_delivery_stores_nothing(scope: SessionScope, webhook_secret: str) -> None:
    body = json.dumps(_event()).encode()
    with pytest.raises(WebhookSignatureError):
        _receive(scope, body + b" ", sign_payload(body, webhook_secret), webhook_secret)
    assert _stored(scope) == 0


def test_a_rotated_secret_verifies_with_either_signature(scope: SessionScope, webhook_secret: str) -> None:
    body = json.dumps(_event()).encode()
    old = sign_payload(body, "whsec_retired_secret")
    new = sign_payload(body, webhook_secret)
    header = f"{old},v1={new.split('v1=')[1]}"

    _, created = _receive(scope, body, header, webhook_secret)

    assert created


def test_unknown_event_types_are_recorded_and_ignored(
    scope: SessionScope, stripe_gateway: StripeGateway, webhook_secret: str, clock: FrozenClock
) -> None:
    body = json.dumps(_event("customer.created", obj={"id": "cus_1", "object": "customer"})).encode()
    row, _ = _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)

    report = webhooks.process_pending_events(scope, gateway=stripe_gateway, clock=clock)

    assert report.ignored == [row.id]
    with scope() as session:
        stored = session.get_one(StripeEvent, row.id)
        assert (stored.status, stored.attempts) == ("ignored", 1)
    assert webhooks.process_pending_events(scope, gateway=stripe_gateway, clock=clock).ignored == []


# --- order and duplicates -----------------------------------------------------------------------------------


@pytest.fixture
def silent_gateway(fake_stripe_server: FakeStripeServer) -> StripeGateway:
    return StripeGateway(api_key=API_KEY, api_base=fake_stripe_server.url, max_network_retries=0)


def _build_world(scope: SessionScope, gateway: StripeGateway, fake: FakeStripe, base: int) -> dict[str, Any]:
    payees = [f"annotator:{base + i}" for i in (1, 2, 3)]
    accounts = []
    for payee, amount in zip(payees, (2000, 3000, 1500), strict=True):
        earn(scope, payee, Money(amount, "EUR"))
        accounts.append(payee_account(scope, gateway, payee, fake=fake))
    return {"payees": payees, "accounts": accounts}


def _world_events(fake: FakeStripe, world: dict[str, Any], before: set[str]) -> list[dict[str, Any]]:
    """The events of the scenario (not of the setup) about this world's accounts, in the order of creation."""
    accounts = set(world["accounts"])

    def about(event: dict[str, Any]) -> str | None:
        obj = event["data"]["object"]
        if event["type"].startswith("transfer."):
            return str(obj["destination"])
        if event["type"] == "account.updated":
            return str(obj["id"])
        return event.get("account")

    return [e for e in fake.events_of() if e["id"] not in before and about(e) in accounts]


def _deliver_and_process(
    scope: SessionScope, gateway: StripeGateway, secret: str, clock: FrozenClock, events: list[dict[str, Any]]
) -> None:
    for event in events:
        body = json.dumps(event).encode()
        row, _ = _receive(scope, body, sign_payload(body, secret), secret)
        status = webhooks.process_one_event(scope, event_id=row.id, gateway=gateway, clock=clock)
        assert status in {"processed", "ignored"}, status


def _snapshot(scope: SessionScope, world: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    with scope() as session:
        for payee, account_id in zip(world["payees"], world["accounts"], strict=True):
            payout = session.scalars(select(Payout).where(Payout.payee_reference == payee)).one()
            account = session.scalars(select(PayoutAccount).where(PayoutAccount.reference == payee)).one()
            bank = session.scalars(
                select(StripeBankPayout.status).where(StripeBankPayout.account == account_id)
            )
            rows.append(
                (
                    payout.state,
                    payout.amount_reversed_minor,
                    len(payout.reversals),
                    payout.balance_ledger_transaction_id is not None,
                    account.payouts_enabled,
                    sorted(bank),
                )
            )
    for i, payee in enumerate(world["payees"]):
        rows[i] = (*rows[i], available(scope, payee))
    return rows


def test_duplicates_and_any_order_give_the_state_of_one_in_order_delivery(
    scope: SessionScope,
    silent_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
    webhook_secret: str,
) -> None:
    fake_stripe.fund("eur", 100_000)
    worlds = [_build_world(scope, silent_gateway, fake_stripe, base) for base in (0, 10, 20)]
    before = {e["id"] for e in fake_stripe.events_of()}
    # Every transfer happens, every answer is lost: only the webhooks tell us.
    fake_stripe.inject("POST /v1/transfers", "drop_after", times=9)
    run = payout_runs.run_payouts(
        scope,
        gateway=silent_gateway,
        throttle=throttle,
        min_amount_minor=1000,
        requested_by="test",
        worker="w",
        clock=clock,
    )
    assert len(run.submit.retrying) == 9
    for world in worlds:
        first, second, third = world["accounts"]
        (transfer,) = [t for t in fake_stripe.transfers.values() if t["destination"] == first]
        fake_stripe.reverse(transfer["id"], 500)
        fake_stripe.enable_account(second, payouts_enabled=False)
        paid = fake_stripe.bank_payout(first, amount=1500, currency="eur", status="paid")
        fake_stripe.bank_payout(
            first, amount=1500, currency="eur", status="failed", payout_id=paid["data"]["object"]["id"]
        )
        fake_stripe.bank_payout(third, amount=1500, currency="eur", status="paid")

    in_order = _world_events(fake_stripe, worlds[0], before)
    shuffled = _world_events(fake_stripe, worlds[1], before) * 2
    random.Random(20240611).shuffle(shuffled)
    backwards = list(reversed(_world_events(fake_stripe, worlds[2], before)))
    assert len(in_order) == 3 + 1 + 1 + 3  # created ×3, reversed, account.updated, bank payouts ×3

    _deliver_and_process(scope, silent_gateway, webhook_secret, clock, in_order)
    _deliver_and_process(scope, silent_gateway, webhook_secret, clock, shuffled)
    _deliver_and_process(scope, silent_gateway, webhook_secret, clock, backwards)

    expected = [
        ("settled", 500, 1, True, True, ["failed"], 500),
        ("settled", 0, 0, True, False, [], 0),
        ("settled", 0, 0, True, True, ["paid"], 0),
    ]
    assert _snapshot(scope, worlds[0]) == expected
    assert _snapshot(scope, worlds[1]) == expected
    assert _snapshot(scope, worlds[2]) == expected
    assert len(fake_stripe.transfers) == 9
    assert integrity(scope) == []


def test_a_bank_payout_that_failed_after_it_was_paid_stays_failed(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    webhook_secret: str,
    clock: FrozenClock,
) -> None:
    account = payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)
    paid = fake_stripe.bank_payout(account, amount=900, currency="eur", status="paid")
    failed = fake_stripe.bank_payout(
        account, amount=900, currency="eur", status="failed", payout_id=paid["data"]["object"]["id"]
    )

    _deliver_and_process(scope, stripe_gateway, webhook_secret, clock, [failed, paid])

    with scope() as session:
        (row,) = session.scalars(select(StripeBankPayout))
        assert (row.status, row.failure_code, row.amount_minor) == ("failed", "account_closed", 900)


# --- funding ------------------------------------------------------------------------------------------------


def _credit_budget(session: Any, event: WebhookEvent) -> None:
    """What the marketplace's funding handler does: the budget is credited from the Stripe funding clearing."""
    confirmed = webhooks.funding_confirmation(event)
    budget = f"{confirmed.reference}:budget"
    ledger.ensure_account(
        session, code=budget, currency=confirmed.amount.currency, kind="liability", no_overdraft=True
    )
    ledger.ensure_account(
        session, code="clearing:stripe_funding", currency=confirmed.amount.currency, kind="asset"
    )
    ledger.post_transaction(
        session,
        idempotency_key=f"{confirmed.reference}:funding:stripe:{confirmed.gateway_id}",
        kind="funding",
        reference=confirmed.reference,
        legs=[
            ledger.debit("clearing:stripe_funding", confirmed.amount),
            ledger.credit(budget, confirmed.amount),
        ],
    )


def test_a_funding_is_credited_only_when_stripe_confirms_it_and_only_once(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    webhook_secret: str,
    clock: FrozenClock,
) -> None:
    fake_stripe.charge_fee_bps = 300
    with scope() as session:
        row, intent = webhooks.request_funding(
            session,
            gateway=stripe_gateway,
            reference="project:3",
            amount=Money(20_000, "EUR"),
            idempotency_key="k1",
        )
        funding_id = row.id
    assert intent.client_secret
    with scope() as session:
        again, same = webhooks.request_funding(
            session,
            gateway=stripe_gateway,
            reference="project:3",
            amount=Money(20_000, "EUR"),
            idempotency_key="k1",
        )
        assert (again.id, same.id) == (funding_id, intent.id)
    event = (
        fake_stripe.succeed_payment_intent(intent.id) and fake_stripe.events_of("payment_intent.succeeded")[0]
    )
    body = json.dumps(event).encode()
    row_event, _ = _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)

    registry = webhooks.HandlerRegistry()  # this test's own: the app registers its handler in the default one
    process = {"event_id": row_event.id, "gateway": stripe_gateway, "clock": clock, "registry": registry}
    unhandled = webhooks.process_one_event(scope, **process)
    assert "no handler" in unhandled  # nobody could credit it: it waits, it is not dropped
    registry.register("payment_intent.succeeded", _credit_budget)
    first = webhooks.process_one_event(scope, **process)
    _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)  # Stripe delivers it again
    second = webhooks.process_one_event(scope, **process)

    assert (first, second) == ("processed", "processed")
    with scope() as session:
        funding = session.get_one(StripeFunding, funding_id)
        assert funding.status == "succeeded"
        assert funding.settlement_transaction_id is not None
        budget = ledger.balance(session, account_code="project:3:budget", currency="EUR")
        balance = ledger.balance(session, account_code="platform:stripe_balance", currency="EUR")
        fees = ledger.balance(session, account_code="platform:stripe_fees", currency="EUR")
        stored = session.get_one(StripeEvent, row_event.id)
        assert (stored.attempts, stored.last_error) == (2, None)
    assert budget.posted == Money(20_000, "EUR")
    assert (balance.posted, fees.posted) == (Money(19_400, "EUR"), Money(600, "EUR"))
    assert integrity(scope) == []


def test_payments_made_outside_the_funding_flow_are_ignored(
    scope: SessionScope, stripe_gateway: StripeGateway, webhook_secret: str, clock: FrozenClock
) -> None:
    obj = {
        "id": "pi_foreign",
        "object": "payment_intent",
        "amount": 500,
        "amount_received": 500,
        "currency": "eur",
        "metadata": {},
        "status": "succeeded",
    }
    body = json.dumps(_event("payment_intent.succeeded", obj=obj)).encode()
    row, _ = _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)

    assert (
        webhooks.process_one_event(scope, event_id=row.id, gateway=stripe_gateway, clock=clock) == "ignored"
    )


def test_processing_waits_for_retry_after_a_gateway_outage(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    webhook_secret: str,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 10_000)
    earn(scope, "annotator:1", Money(2000, "EUR"))
    payee_account(scope, stripe_gateway, "annotator:1", fake=fake_stripe)
    payout_runs.run_payouts(
        scope,
        gateway=stripe_gateway,
        throttle=throttle,
        min_amount_minor=1000,
        requested_by="t",
        worker="w",
        clock=clock,
    )
    (event,) = fake_stripe.events_of("transfer.created")
    body = json.dumps(event).encode()
    row, _ = _receive(scope, body, sign_payload(body, webhook_secret), webhook_secret)
    fake_stripe.inject("GET /v1/transfers/{tr}", "drop_before", times=3)

    failed = webhooks.process_pending_events(scope, gateway=stripe_gateway, clock=clock)
    clock.advance(timedelta(minutes=1))
    retried = webhooks.process_pending_events(scope, gateway=stripe_gateway, clock=clock)

    assert list(failed.failed) == [row.id]
    assert retried.processed == [row.id]
