"""Two requests for the same thing at the same moment, on PostgreSQL: the second waits for the first's commit and
answers from it, instead of failing on a unique key or asking Stripe for a second object.

Each test holds the first transaction open at a chosen point, shows that the second is waiting, then lets the
first commit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from payments import payouts, webhooks
from payments.errors import IdempotencyConflict, PayoutAccountCountryConflict
from payments.gateways.stripe import StripeGateway
from payments.money import Money
from payments.payout_models import PayoutAccount, StripeBankPayout, StripeFunding
from payments.payout_runs import SessionScope
from tests.payments.conftest import FrozenClock, payee_account
from tests.payments.fake_stripe import FakeStripe, sign_payload

pytestmark = pytest.mark.postgres


def _first_then_second(
    scope: SessionScope, first: Callable[[Any], Any], second: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """Run `first` in a transaction kept open until `second`, in another, has been waiting for a second; then
    commit the first. Returns both results (or the exception each raised)."""
    results: dict[str, Any] = {}
    first_done = threading.Event()
    release = threading.Event()

    def run(name: str, fn: Callable[[Any], Any], hold: bool) -> None:
        try:
            with scope() as session:
                results[name] = fn(session)
                if hold:
                    first_done.set()
                    release.wait(timeout=30)
        except Exception as exc:  # the test inspects it
            results[name] = exc
            first_done.set()

    one = threading.Thread(target=run, args=("first", first, True))
    one.start()
    assert first_done.wait(timeout=30)
    two = threading.Thread(target=run, args=("second", second, False))
    two.start()
    two.join(timeout=1.0)
    waited = two.is_alive()
    release.set()
    one.join(timeout=30)
    two.join(timeout=30)
    assert waited, f"the second request did not wait for the first: {results}"
    return results["first"], results["second"]


def test_the_same_stripe_funding_asked_twice_at_once_is_one_funding(
    scope: SessionScope, stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    def ask(session: Any) -> StripeFunding:
        row, _ = webhooks.request_funding(
            session,
            gateway=stripe_gateway,
            reference="project:7",
            amount=Money(5000, "EUR"),
            idempotency_key="k1",
        )
        return row

    first, second = _first_then_second(scope, ask, ask)
    assert isinstance(first, StripeFunding), first
    assert isinstance(second, StripeFunding), second
    assert second.id == first.id
    assert len(fake_stripe.payment_intents) == 1
    with scope() as session:
        assert len(session.scalars(select(StripeFunding)).all()) == 1


def test_a_stripe_funding_key_used_for_another_amount_is_a_conflict(
    scope: SessionScope, stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    with scope() as session:
        webhooks.request_funding(
            session,
            gateway=stripe_gateway,
            reference="project:7",
            amount=Money(5000, "EUR"),
            idempotency_key="k2",
        )
    with pytest.raises(IdempotencyConflict), scope() as session:
        webhooks.request_funding(
            session,
            gateway=stripe_gateway,
            reference="project:7",
            amount=Money(6000, "EUR"),
            idempotency_key="k2",
        )
    # Stripe itself refuses the same (a row lost with its transaction would not protect the client)
    with pytest.raises(IdempotencyConflict):
        stripe_gateway.create_funding(
            amount=Money(7000, "EUR"), reference="project:7", idempotency_key="funding:k2", metadata={}
        )
    assert len(fake_stripe.payment_intents) == 1


def test_two_first_payout_accounts_in_two_countries_make_one_stripe_account(
    scope: SessionScope, stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    def open_in(country: str) -> Callable[[Any], Any]:
        def open_account(session: Any) -> PayoutAccount:
            return payouts.open_payout_account(
                session, gateway=stripe_gateway, reference="annotator:5", country=country, currency="EUR"
            )

        return open_account

    first, second = _first_then_second(scope, open_in("DE"), open_in("FR"))
    assert isinstance(first, PayoutAccount), first
    assert isinstance(second, PayoutAccountCountryConflict), second
    assert len(fake_stripe.accounts) == 1  # no account at Stripe that nobody recorded


def test_paid_and_failed_events_of_a_new_bank_payout_at_once_leave_it_failed(
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
    stored = []
    for event in (paid, failed):
        body = json.dumps(event).encode()
        with scope() as session:
            row, _ = webhooks.receive_event(
                session,
                payload=body,
                signature_header=sign_payload(body, webhook_secret),
                secret=webhook_secret,
            )
            stored.append(row.id)

    def process(event_id: str) -> Callable[[Any], Any]:
        def run(session: Any) -> str:
            return webhooks.process_event(session, event_id=event_id, gateway=stripe_gateway, now=clock())

        return run

    first, second = _first_then_second(scope, process(stored[0]), process(stored[1]))
    assert (first, second) == ("processed", "processed")
    time.sleep(0)  # both committed: read the row afresh
    with scope() as session:
        (row,) = session.scalars(select(StripeBankPayout))
        assert (row.status, row.failure_code, row.amount_minor) == ("failed", "account_closed", 900)
