"""The annotator's payouts page: the payout account and its onboarding, and their own payouts only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.db import utcnow
from marketplace.payouts.services import payee_reference
from marketplace.quality.policy import review_submitted_label
from marketplace.work import decisions, leasing
from payments import payout_outcomes, payouts
from payments.errors import TransferDeclinedError
from payments.gateways.local import LocalGateway
from payments.payout_models import Payout, PayoutAccount
from tests import factories as f
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer, running
from tests.web.conftest import World, login


def _earn(session: Session, annotator: AnnotatorProfile) -> None:
    """One accepted label of the world's project for `annotator` (its price becomes payable)."""
    outcome = leasing.lease_next_assignment(session, annotator=annotator, now=utcnow(), fee_bps=2000)
    assert outcome.assignment is not None
    label, _ = decisions.submit_label(
        session,
        annotator=annotator,
        assignment_id=outcome.assignment.id,
        value="neutral",
        idempotency_key=None,
        now=utcnow(),
    )
    review_submitted_label(session, label=label, now=utcnow())
    decisions.accept_label(session, label=label, now=utcnow())


def _request_payout(session: Session, annotator: AnnotatorProfile) -> Payout:
    """A payout of the annotator's payable balance, as a payout run requests it."""
    reference = payee_reference(annotator.id)
    if payouts.get_payout_account(session, reference=reference) is None:
        payouts.open_payout_account(
            session, gateway=LocalGateway(), reference=reference, country="DE", currency="EUR"
        )
    plan = payouts.plan_payouts(session, min_amount_minor=1)
    (planned,) = [p for p in plan.payouts if p.payee_reference == reference]
    payout = payouts.request_payout(session, planned=planned, min_amount_minor=1)
    assert payout is not None
    return payout


def _claim(session: Session, payout: Payout) -> payouts.PayoutClaim:
    (claim,) = payouts.claim_payouts(session, worker="test", now=utcnow(), payout_ids=[payout.id])
    return claim


def _fail(session: Session, payout: Payout, code: str) -> None:
    claim = _claim(session, payout)
    payout_outcomes.record_gateway_error(
        session,
        payout_id=payout.id,
        version=claim.version,
        error=TransferDeclinedError("declined", details={"stripe_code": code}),
        now=utcnow(),
    )


def _settle(session: Session, payout: Payout) -> None:
    claim = _claim(session, payout)
    transfer = LocalGateway().create_transfer(
        amount=claim.amount,
        destination=claim.destination,
        idempotency_key=claim.idempotency_key,
        transfer_group=claim.transfer_group,
        metadata=claim.metadata,
    )
    payout_outcomes.record_transfer(session, payout_id=payout.id, transfer=transfer, now=utcnow())


def _accounts(engine: Any) -> list[PayoutAccount]:
    with Session(engine) as check:
        return list(check.scalars(select(PayoutAccount).order_by(PayoutAccount.id)))


def test_the_work_tabs_lead_to_payouts(world: World, as_user) -> None:
    page = as_user(world.annotator_user).get("/work/earnings").get_data(as_text=True)
    assert '<a href="/work/payouts">Payouts</a>' in page


def test_an_annotator_sees_their_own_payouts_only(world: World, as_user, db_session) -> None:
    _earn(db_session, world.annotator)  # €0.50
    other = f.annotator(db_session, price_minor=70)
    _earn(db_session, other)  # €0.70
    first = _request_payout(db_session, world.annotator)
    _request_payout(db_session, other)
    _fail(db_session, first, "account_closed")  # the money is payable again…
    second = _request_payout(db_session, world.annotator)  # …and goes out with the next run
    _settle(db_session, second)
    db_session.commit()

    response = as_user(world.annotator_user).get("/work/payouts")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    rows = re.findall(r"<tr>\s*<td><time.*?</tr>", page, flags=re.DOTALL)
    assert len(rows) == 2
    settled, failed = rows  # newest first
    assert '<td class="num">€0.50' in settled
    assert '<span class="state state-settled">Paid</span>' in settled
    assert '<td class="num">€0.50' in failed
    assert '<span class="state state-failed">Failed</span>' in failed
    assert "Reason: account closed" in failed
    assert "the money is back in your balance" in failed
    assert "€0.70" not in page  # the other annotator's payout
    assert "ready</span> Payouts go to your local account" in page
    assert "Start onboarding" not in page
    assert "Continue onboarding" not in page

    theirs = as_user(db_session.get_one(User, other.user_id)).get("/work/payouts").get_data(as_text=True)
    assert "€0.70" in theirs
    assert "On its way" in theirs
    assert "account closed" not in theirs


def test_onboarding_with_the_local_gateway_completes_at_once(world: World, as_user, engine) -> None:
    client = as_user(world.annotator_user)
    shown = client.get("/work/payouts")
    assert shown.headers["Content-Security-Policy"].endswith("form-action 'self'")
    page = shown.get_data(as_text=True)
    assert "No payouts yet." in page
    assert "Start onboarding" in page
    assert _accounts(engine) == []

    response = client.post("/work/payouts/account", data={"country": " de "})
    assert response.status_code == 303
    assert response.headers["Location"] == "http://localhost/work/payouts?onboarding=done"
    (account,) = _accounts(engine)
    assert (account.reference, account.gateway, account.country, account.currency) == (
        payee_reference(world.annotator.id),
        "local",
        "DE",
        "EUR",
    )
    assert account.payouts_enabled

    back = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Welcome back." in back
    assert "ready</span> Payouts go to your local account" in back
    assert "(DE, EUR)" in back

    # asking again reuses the account, as the API does
    assert client.post("/work/payouts/account", data={"country": "FR"}).status_code == 303
    assert [a.country for a in _accounts(engine)] == ["DE"]


@pytest.mark.parametrize(
    ("country", "message"),
    [
        ("", "Say where your bank account is"),
        ("Germany", "Expected an ISO country code like DE."),
        ("D1", "Expected an ISO country code like DE."),
    ],
)
def test_a_wrong_country_opens_nothing(world: World, as_user, engine, country: str, message: str) -> None:
    response = as_user(world.annotator_user).post("/work/payouts/account", data={"country": country})
    assert response.status_code == 422
    assert re.search(
        r'<p class="field-error" role="alert">' + re.escape(message), response.get_data(as_text=True)
    )
    assert _accounts(engine) == []


def test_payouts_are_for_annotators_only(world: World, as_user, engine) -> None:
    for who in (world.manager, world.platform_finance):
        client = as_user(who)
        assert client.get("/work/payouts").status_code == 403
        assert client.post("/work/payouts/account", data={"country": "DE"}).status_code == 403
    assert _accounts(engine) == []


# --- with Stripe ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_stripe_server() -> Iterator[FakeStripeServer]:
    from payments.gateways.stripe import STRIPE_API_VERSION

    yield from running(FakeStripe(api_version=STRIPE_API_VERSION))


def test_with_stripe_onboarding_goes_to_stripe_and_can_be_continued(
    world: World, app_config, make_app, engine, fake_stripe_server: FakeStripeServer
) -> None:
    fake_stripe_server.fake.reset()
    app = make_app(
        {
            **app_config,
            "PAYOUT_GATEWAY": "stripe",
            "STRIPE_SECRET_KEY": API_KEY,
            "STRIPE_API_BASE": fake_stripe_server.url,
            "STRIPE_MAX_NETWORK_RETRIES": 0,
        }
    )
    client = login(app.test_client(), world.annotator_user)
    page = client.get("/work/payouts")
    # the onboarding form's answer is a redirect to Stripe: the page's policy lets its forms go there
    assert page.headers["Content-Security-Policy"].endswith("form-action 'self' https://connect.stripe.com")
    assert "Stripe asks for your identity and bank details" in page.get_data(as_text=True)

    first = client.post("/work/payouts/account", data={"country": "fr"})
    assert first.status_code == 303
    assert first.headers["Location"].startswith("https://connect.stripe.com/setup/")
    (account,) = _accounts(engine)
    assert (account.gateway, account.country, account.payouts_enabled) == ("stripe", "FR", False)
    assert list(fake_stripe_server.fake.accounts) == [account.gateway_account_id]

    waiting = client.get("/work/payouts?onboarding=expired").get_data(as_text=True)
    assert "The onboarding link expired" in waiting
    assert "onboarding is not finished" in waiting
    assert "Continue onboarding" in waiting
    assert 'name="country"' not in waiting

    again = client.post("/work/payouts/account", data={})
    assert again.status_code == 303
    assert again.headers["Location"].startswith("https://connect.stripe.com/setup/")
    assert again.headers["Location"] != first.headers["Location"]  # links are single-use: a fresh one
    assert len(_accounts(engine)) == 1
    fake_stripe_server.fake.reset()
