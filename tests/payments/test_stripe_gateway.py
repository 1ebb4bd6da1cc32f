"""StripeGateway against the fake Stripe server: our keys, replays, refusals, faults and retries, lookups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payments.errors import (
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
    InvalidAmount,
    TransferDeclinedError,
)
from payments.gateways.base import PayoutGateway
from payments.gateways.local import LocalGateway
from payments.gateways.stripe import STRIPE_API_VERSION, StripeGateway, from_stripe_amount, to_stripe_amount
from payments.money import Money
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer

TRANSFERS = ("POST", "/v1/transfers")


def _ready_account(gateway: StripeGateway, fake: FakeStripe, reference: str = "annotator:1") -> str:
    account = gateway.create_connected_account(reference=reference, country="DE", currency="EUR")
    fake.enable_account(account.id)
    return account.id


def _transfer(
    gateway: StripeGateway, destination: str, payout_id: int, amount: int = 1500, **overrides: object
):
    params: dict[str, object] = {
        "amount": Money(amount, "EUR"),
        "destination": destination,
        "idempotency_key": f"payout:{payout_id}:transfer:v1",
        "transfer_group": f"payout:{payout_id}",
        "metadata": {"payout_id": str(payout_id)},
    }
    params.update(overrides)
    return gateway.create_transfer(**params)  # type: ignore[arg-type]


def _gateway(server: FakeStripeServer, *, retries: int) -> StripeGateway:
    return StripeGateway(
        api_key=API_KEY, api_base=server.url, max_network_retries=retries, retry_delay_seconds=0.001
    )


def test_both_gateways_satisfy_the_protocol(stripe_gateway: StripeGateway) -> None:
    gateways: list[PayoutGateway] = [stripe_gateway, LocalGateway()]
    assert [g.name for g in gateways] == ["stripe", "local"]


def test_transfer_is_sent_with_our_key_and_the_pinned_version(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)

    transfer = _transfer(stripe_gateway, destination, 7, amount=1234)

    request = [r for r in fake_stripe.requests if (r.method, r.path) == TRANSFERS][-1]
    assert request.idempotency_key == "payout:7:transfer:v1"
    assert request.stripe_version == STRIPE_API_VERSION
    assert request.params["amount"] == "1234"
    assert request.params["currency"] == "eur"
    assert request.params["metadata"] == {"payout_id": "7"}
    assert transfer.amount == Money(1234, "EUR")
    assert transfer.destination == destination
    assert transfer.transfer_group == "payout:7"
    assert transfer.balance_transaction is not None
    assert transfer.balance_transaction.amount_minor == -1234
    assert stripe_gateway.platform_balance() == {"EUR": 10_000 - 1234}


def test_a_replayed_key_returns_the_first_transfer_and_moves_money_once(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)

    first = _transfer(stripe_gateway, destination, 1)
    second = _transfer(stripe_gateway, destination, 1)

    assert second.id == first.id
    assert len(fake_stripe.transfers_in_group("payout:1")) == 1
    assert fake_stripe.available["eur"] == 10_000 - 1500


def test_the_same_key_with_other_parameters_is_an_unknown_outcome(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    _transfer(stripe_gateway, destination, 1, amount=1500)

    with pytest.raises(GatewayOutcomeUnknownError) as caught:
        _transfer(stripe_gateway, destination, 1, amount=999)

    assert caught.value.details["stripe_type"] == "idempotency_error"
    assert len(fake_stripe.transfers_in_group("payout:1")) == 1


def test_insufficient_platform_balance_is_declined_and_the_refusal_is_replayed(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 100)

    with pytest.raises(TransferDeclinedError) as caught:
        _transfer(stripe_gateway, destination, 1, amount=1500)
    assert caught.value.details["stripe_code"] == "balance_insufficient"

    fake_stripe.fund("eur", 10_000)
    # Stripe stored the refusal under the key: the same key keeps answering it; a new payout needs a new key.
    with pytest.raises(TransferDeclinedError):
        _transfer(stripe_gateway, destination, 1, amount=1500)
    assert _transfer(stripe_gateway, destination, 2, amount=1500).amount == Money(1500, "EUR")
    assert fake_stripe.transfers_in_group("payout:1") == []


def test_missing_parameters_and_unready_destinations_are_declined(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    fake_stripe.fund("eur", 10_000)
    unready = stripe_gateway.create_connected_account(reference="annotator:2", country="FR", currency="EUR")

    with pytest.raises(TransferDeclinedError) as no_capability:
        _transfer(stripe_gateway, unready.id, 1)
    with pytest.raises(TransferDeclinedError) as unknown:
        _transfer(stripe_gateway, "acct_doesnotexist", 2)

    assert no_capability.value.details["stripe_code"] == "insufficient_capabilities_for_transfer"
    assert unknown.value.details["stripe_code"] == "resource_missing"
    assert fake_stripe.transfers == {}


def test_conflicts_are_retried_by_the_client_until_they_pass(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    gateway = _gateway(fake_stripe_server, retries=2)
    destination = _ready_account(gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    fake_stripe.inject("POST /v1/transfers", "conflict", times=2)

    transfer = _transfer(gateway, destination, 1)

    assert fake_stripe.count_requests(*TRANSFERS) == 3
    assert [t["id"] for t in fake_stripe.transfers_in_group("payout:1")] == [transfer.id]


def test_a_dropped_answer_is_recovered_by_the_retry_with_the_same_key(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    gateway = _gateway(fake_stripe_server, retries=2)
    destination = _ready_account(gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    fake_stripe.inject("POST /v1/transfers", "drop_after")

    transfer = _transfer(gateway, destination, 1)

    keys = [r.idempotency_key for r in fake_stripe.requests if (r.method, r.path) == TRANSFERS]
    assert keys == ["payout:1:transfer:v1", "payout:1:transfer:v1"]
    assert [t["id"] for t in fake_stripe.transfers_in_group("payout:1")] == [transfer.id]


def test_without_client_retries_a_dropped_answer_is_an_unknown_outcome_resolved_by_the_same_key(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    gateway = _gateway(fake_stripe_server, retries=0)
    destination = _ready_account(gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    fake_stripe.inject("POST /v1/transfers", "drop_after")

    with pytest.raises(GatewayOutcomeUnknownError):
        _transfer(gateway, destination, 1)
    created = fake_stripe.transfers_in_group("payout:1")
    assert len(created) == 1  # the money moved although we got no answer

    assert _transfer(gateway, destination, 1).id == created[0]["id"]
    assert len(fake_stripe.transfers_in_group("payout:1")) == 1


def test_a_stored_server_error_is_replayed_and_not_retried(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    gateway = _gateway(fake_stripe_server, retries=2)
    destination = _ready_account(gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    fake_stripe.inject("POST /v1/transfers", "server_error")

    with pytest.raises(GatewayOutcomeUnknownError) as caught:
        _transfer(gateway, destination, 1)
    with pytest.raises(GatewayOutcomeUnknownError):
        _transfer(gateway, destination, 1)

    assert caught.value.details["http_status"] == 500
    # the first 500 is retried once by the client; its replay carries Stripe-Should-Retry: false, which stops
    # the client: 2 requests for the first call, 1 for the second, and the 500 is what both get
    assert fake_stripe.count_requests(*TRANSFERS) == 3
    assert fake_stripe.transfers_in_group("payout:1") == []


def test_connection_failures_exhaust_the_retries_then_report_an_unknown_outcome(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    gateway = _gateway(fake_stripe_server, retries=2)
    destination = _ready_account(gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    fake_stripe.inject("POST /v1/transfers", "drop_before", times=3)

    with pytest.raises(GatewayOutcomeUnknownError):
        _transfer(gateway, destination, 1)

    assert fake_stripe.count_requests(*TRANSFERS) == 3
    assert fake_stripe.transfers_in_group("payout:1") == []


def test_rate_limits_and_bad_keys_mean_nothing_happened(
    fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer
) -> None:
    gateway = _gateway(fake_stripe_server, retries=2)
    destination = _ready_account(gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    fake_stripe.inject("POST /v1/transfers", "rate_limit")

    with pytest.raises(GatewayUnavailableError) as limited:
        _transfer(gateway, destination, 1)
    wrong_key = StripeGateway(api_key="sk_test_wrong", api_base=fake_stripe_server.url, max_network_retries=0)
    with pytest.raises(GatewayUnavailableError) as refused:
        _transfer(wrong_key, destination, 2)

    assert limited.value.details["http_status"] == 429
    assert refused.value.details["http_status"] == 401
    assert fake_stripe.transfers == {}
    assert _transfer(gateway, destination, 1).transfer_group == "payout:1"


def test_find_transfers_by_group_pages_through_every_transfer(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 1_000_000)
    with fake_stripe.lock:
        for _ in range(103):
            fake_stripe._create_transfer(
                {"amount": "10", "currency": "eur", "destination": destination, "transfer_group": "payout:1"}
            )
    other = _transfer(stripe_gateway, destination, 2)

    found = stripe_gateway.find_transfers("payout:1")

    assert len(found) == 103
    assert {t.transfer_group for t in found} == {"payout:1"}
    assert all(t.balance_transaction is not None for t in found)
    assert [t.id for t in stripe_gateway.find_transfers("payout:2")] == [other.id]
    assert stripe_gateway.find_transfers("payout:3") == []


def test_retrieve_gives_reversals_and_none_for_unknown_transfers(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    transfer = _transfer(stripe_gateway, destination, 1, amount=1000)
    fake_stripe.reverse(transfer.id, 400)

    fetched = stripe_gateway.retrieve_transfer(transfer.id)

    assert fetched is not None
    assert fetched.amount_reversed_minor == 400
    assert [r.amount for r in fetched.reversals] == [Money(400, "EUR")]
    assert fetched.reversals[0].balance_transaction is not None
    assert fetched.reversals[0].balance_transaction.amount_minor == 400
    assert stripe_gateway.retrieve_transfer("tr_missing") is None


def test_balance_transactions_are_listed_for_a_period(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    destination = _ready_account(stripe_gateway, fake_stripe)
    fake_stripe.fund("eur", 10_000)
    transfer = _transfer(stripe_gateway, destination, 1, amount=700)
    now = datetime.now(UTC)

    listed = stripe_gateway.list_balance_transactions(
        created_from=now - timedelta(minutes=5), created_to=now + timedelta(minutes=5)
    )
    later = stripe_gateway.list_balance_transactions(
        created_from=now + timedelta(hours=1), created_to=now + timedelta(hours=2)
    )

    assert [(t.type, t.amount_minor, t.source) for t in listed] == [
        ("adjustment", 10_000, listed[0].source),
        ("transfer", -700, transfer.id),
    ]
    assert later == []


def test_connected_account_onboarding(stripe_gateway: StripeGateway, fake_stripe: FakeStripe) -> None:
    account = stripe_gateway.create_connected_account(
        reference="annotator:9", country="NL", currency="EUR", email="a@example.test"
    )
    again = stripe_gateway.create_connected_account(
        reference="annotator:9", country="NL", currency="EUR", email="a@example.test"
    )
    link = stripe_gateway.create_onboarding_link(
        account_id=account.id,
        refresh_url="https://labelforce.test/r",
        return_url="https://labelforce.test/done",
    )

    assert again.id == account.id  # our key per payee: a retried signup does not open a second account
    assert (account.country, account.currency, account.payouts_enabled) == ("NL", "EUR", False)
    assert link.url.startswith("https://connect.stripe.com/")
    assert link.expires_at > datetime.now(UTC)
    created = next(r for r in fake_stripe.requests if (r.method, r.path) == ("POST", "/v1/accounts"))
    assert created.params["controller"]["stripe_dashboard"] == {"type": "express"}
    assert created.params["capabilities"] == {"transfers": {"requested": "true"}}

    fake_stripe.enable_account(account.id)
    enabled = stripe_gateway.retrieve_account(account.id)
    assert (enabled.payouts_enabled, enabled.transfers_enabled, enabled.details_submitted) == (
        True,
        True,
        True,
    )


def test_funding_is_a_payment_intent_whose_balance_transaction_shows_the_fee(
    stripe_gateway: StripeGateway, fake_stripe: FakeStripe
) -> None:
    fake_stripe.charge_fee_bps = 290
    funding = stripe_gateway.create_funding(
        amount=Money(10_000, "EUR"), reference="project:3", idempotency_key="funding:a", metadata={"k": "v"}
    )
    assert funding.status == "requires_payment_method"
    assert funding.client_secret
    assert funding.metadata["reference"] == "project:3"

    fake_stripe.succeed_payment_intent(funding.id)
    fetched = stripe_gateway.retrieve_funding(funding.id)

    assert fetched is not None
    assert fetched.status == "succeeded"
    assert fetched.balance_transaction is not None
    assert (fetched.balance_transaction.fee_minor, fetched.balance_transaction.net_minor) == (290, 9_710)
    assert stripe_gateway.retrieve_funding("pi_missing") is None


@pytest.mark.parametrize(
    ("amount", "stripe_amount"),
    [
        (Money(1234, "EUR"), 1234),
        (Money(500, "JPY"), 500),
        (Money(7, "ISK"), 700),  # ISO: no decimals; Stripe: two
        (Money(1500, "MGA"), 15),  # ISO: two decimals; Stripe: none
        (Money(1230, "KWD"), 1230),
    ],
)
def test_amounts_convert_between_iso_and_stripe_minor_units(amount: Money, stripe_amount: int) -> None:
    assert to_stripe_amount(amount) == stripe_amount
    assert from_stripe_amount(stripe_amount, amount.currency.lower()) == amount


def test_amounts_stripe_cannot_express_are_refused() -> None:
    with pytest.raises(InvalidAmount):
        to_stripe_amount(Money(1501, "MGA"))
