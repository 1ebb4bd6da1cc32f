"""Fixtures of the payments tests: the fake Stripe server (one per run, reset for every test), a
`StripeGateway` pointed at it, and a webhook signing secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from payments.gateways.stripe import STRIPE_API_VERSION, StripeGateway
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer, running

WEBHOOK_SECRET = "whsec_test_labelforce_0123456789abcdef"


@pytest.fixture(scope="session")
def fake_stripe_server() -> Iterator[FakeStripeServer]:
    yield from running(FakeStripe(api_version=STRIPE_API_VERSION))


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripeServer) -> Iterator[FakeStripe]:
    """The fake's state, empty at the start of the test."""
    fake_stripe_server.fake.reset()
    yield fake_stripe_server.fake
    fake_stripe_server.fake.reset()


@pytest.fixture
def stripe_gateway(fake_stripe: FakeStripe, fake_stripe_server: FakeStripeServer) -> StripeGateway:
    """A gateway on the fake with two network retries and millisecond backoffs."""
    return StripeGateway(
        api_key=API_KEY, api_base=fake_stripe_server.url, max_network_retries=2, retry_delay_seconds=0.001
    )


@pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET
