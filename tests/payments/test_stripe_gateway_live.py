"""StripeGateway against Stripe's real test mode: what the fake server cannot prove (real validation, error
shapes, the pinned API version being accepted). Runs only when STRIPE_TEST_SECRET_KEY is set (an `sk_test_`
key) and api.stripe.com answers; otherwise every test here is reported as skipped, never as passed.

It creates test-mode connected accounts (tagged `labelforce-test` in their metadata) and moves no money:
the accounts are never onboarded, so transfers to them are refused, which is itself one of the checks.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime

import pytest

from payments.errors import GatewayOutcomeUnknownError, TransferDeclinedError
from payments.gateways.stripe import StripeGateway
from payments.money import Money

KEY = os.environ.get("STRIPE_TEST_SECRET_KEY", "")


def _stripe_reachable() -> bool:
    try:
        with socket.create_connection(("api.stripe.com", 443), timeout=3):
            return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(
        not KEY.startswith("sk_test_"), reason="STRIPE_TEST_SECRET_KEY (sk_test_...) is not set"
    ),
    pytest.mark.skipif(
        not KEY or not _stripe_reachable(), reason="api.stripe.com is not reachable from here"
    ),
]


@pytest.fixture(scope="module")
def live() -> StripeGateway:
    return StripeGateway(api_key=KEY, max_network_retries=2)


@pytest.fixture(scope="module")
def account_id(live: StripeGateway) -> str:
    account = live.create_connected_account(
        reference=f"labelforce-test:{uuid.uuid4().hex[:12]}", country="DE", currency="EUR"
    )
    return account.id


def test_the_pinned_api_version_and_key_are_accepted(live: StripeGateway) -> None:
    balance = live.platform_balance()
    assert all(len(currency) == 3 and currency.isupper() for currency in balance)


def test_a_new_connected_account_needs_onboarding(live: StripeGateway, account_id: str) -> None:
    account = live.retrieve_account(account_id)
    link = live.create_onboarding_link(
        account_id=account_id,
        refresh_url="https://example.com/refresh",
        return_url="https://example.com/done",
    )
    assert account.id.startswith("acct_")
    assert (account.country, account.payouts_enabled) == ("DE", False)
    assert link.url.startswith("https://")
    assert link.expires_at > datetime.now(UTC)


def test_a_transfer_to_an_account_not_onboarded_is_declined_and_the_key_is_kept(
    live: StripeGateway, account_id: str
) -> None:
    key = f"labelforce-test:{uuid.uuid4().hex}:transfer:v1"
    group = f"labelforce-test:{uuid.uuid4().hex[:12]}"

    def transfer(amount: int) -> None:
        live.create_transfer(
            amount=Money(amount, "EUR"),
            destination=account_id,
            idempotency_key=key,
            transfer_group=group,
            metadata={"purpose": "labelforce-test"},
        )

    with pytest.raises(TransferDeclinedError) as declined:
        transfer(100)
    assert declined.value.details["http_status"] == 400
    with pytest.raises(GatewayOutcomeUnknownError) as conflict:
        transfer(101)  # the same key with other parameters
    assert conflict.value.details["stripe_type"] == "idempotency_error"
    assert live.find_transfers(group) == []


def test_unknown_transfers_are_not_found(live: StripeGateway) -> None:
    assert live.retrieve_transfer("tr_does_not_exist_labelforce") is None
