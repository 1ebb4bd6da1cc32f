"""Fixtures of the payout tests: the fake Stripe server (one per run, reset for every test), a `StripeGateway`
pointed at it, a webhook signing secret, a session factory, a hand-moved clock, and builders for payees."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from marketplace.db import build_engine
from payments import ledger, payouts
from payments.db import utcnow
from payments.gateways.base import PayoutGateway
from payments.gateways.stripe import STRIPE_API_VERSION, StripeGateway
from payments.money import Money
from payments.payout_runs import SessionScope
from payments.throttle import LocalTokenBucket, Throttle
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


class FrozenClock:
    """A clock the test moves by hand (leases, retry delays and the 20-hour lookup rule are about time)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app_engine(database_url: str) -> Iterator[Engine]:
    """An engine configured as the app's (on SQLite: BEGIN IMMEDIATE, so SAVEPOINTs nest as they should)."""
    eng = build_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def scope(app_engine: Engine) -> SessionScope:
    """A session factory committing on a clean exit: what `unit_of_work` is to the app."""
    factory = sessionmaker(app_engine, expire_on_commit=False)

    @contextmanager
    def unit() -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    return unit


@pytest.fixture
def throttle() -> Throttle:
    """A throttle that never waits (the Redis bucket has its own tests)."""
    return Throttle(LocalTokenBucket(rate=100_000))


def earn(scope: SessionScope, payee: str, amount: Money) -> None:
    """Give `payee` a payable balance (as accepted labels would), from a test funding account."""
    with scope() as session:
        ledger.ensure_account(session, code="platform:test_funding", currency=amount.currency, kind="asset")
        ledger.ensure_account(
            session, code=f"{payee}:payable", currency=amount.currency, kind="liability", no_overdraft=True
        )
        ledger.post_transaction(
            session,
            idempotency_key=f"test:earn:{payee}:{uuid.uuid4().hex}",
            kind="label_payment",
            reference=payee,
            legs=[ledger.debit("platform:test_funding", amount), ledger.credit(f"{payee}:payable", amount)],
        )


def payee_account(
    scope: SessionScope,
    gateway: PayoutGateway,
    payee: str,
    *,
    fake: FakeStripe | None = None,
    currency: str = "EUR",
    country: str = "DE",
    enabled: bool = True,
) -> str:
    """Open the payee's gateway account; finish its onboarding at the fake (and sync it) when `enabled`."""
    with scope() as session:
        account = payouts.open_payout_account(
            session, gateway=gateway, reference=payee, country=country, currency=currency
        )
        account_id = account.gateway_account_id
    if fake is not None and enabled:
        fake.enable_account(account_id)
        with scope() as session:
            payouts.sync_payout_account(session, account=gateway.retrieve_account(account_id))
    return account_id


def available(scope: SessionScope, payee: str, currency: str = "EUR") -> int:
    """The payee's available payable balance, in minor units."""
    with scope() as session:
        return ledger.balance(session, account_code=f"{payee}:payable", currency=currency).available.amount


def integrity(scope: SessionScope, *, clearing_at_zero: bool = True) -> list[str]:
    """The ledger's self-check."""
    with scope() as session:
        return ledger.check_integrity(session, clearing_at_zero=clearing_at_zero)
