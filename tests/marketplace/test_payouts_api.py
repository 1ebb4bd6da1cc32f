"""The payouts API: who may do what, dry runs that change nothing, onboarding, runs, lists, reconciliation,
the Stripe webhook endpoint and the CLI, against the fake Stripe server."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.app import create_app
from marketplace.events.models import Event
from marketplace.payouts import services
from payments import ledger, webhooks
from payments.db import utcnow
from payments.gateways.stripe import StripeGateway
from payments.models import LedgerTransaction
from payments.money import Money
from payments.payout_models import Payout, PayoutRun, StripeEvent
from tests import factories as f
from tests.payments.conftest import WEBHOOK_SECRET
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer, running, sign_payload


@pytest.fixture(scope="module")
def fake_stripe_server() -> Iterator[FakeStripeServer]:
    from payments.gateways.stripe import STRIPE_API_VERSION

    yield from running(FakeStripe(api_version=STRIPE_API_VERSION))


@pytest.fixture
def fake_stripe(fake_stripe_server: FakeStripeServer) -> Iterator[FakeStripe]:
    fake_stripe_server.fake.reset()
    fake_stripe_server.fake.fund("eur", 1_000_000)
    yield fake_stripe_server.fake
    fake_stripe_server.fake.reset()


@pytest.fixture
def app_config(app_config: dict[str, Any], fake_stripe_server: FakeStripeServer) -> dict[str, Any]:
    return {
        **app_config,
        "PAYOUT_GATEWAY": "stripe",
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_API_BASE": fake_stripe_server.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_MAX_NETWORK_RETRIES": 0,
        "PAYOUT_MIN_AMOUNT_MINOR": 1000,
    }


@pytest.fixture
def app(app_config: dict[str, Any], fake_stripe: FakeStripe) -> Iterator[Flask]:
    application = create_app(app_config)
    # Without a queue, work scheduled by a request runs in-process once its response is closed (as a server
    # does after sending it); the one test of the RQ path puts the URL back.
    application.config["REDIS_URL"] = None
    application.extensions[services.GATEWAY_EXTENSION] = StripeGateway(
        api_key=API_KEY,
        api_base=app_config["STRIPE_API_BASE"],
        max_network_retries=2,
        retry_delay_seconds=0.001,
    )
    yield application
    application.extensions["labelforce.db"].engine.dispose()


def _finance(db_session: Session) -> dict[str, str]:
    user = f.user(db_session, platform_role="finance")
    return f.auth(f.token(db_session, user))


def _annotator(db_session: Session) -> tuple[int, dict[str, str]]:
    profile = f.annotator(db_session)
    return profile.id, f.auth(f.token(db_session, db_session.get_one(User, profile.user_id)))


def _earn(db_session: Session, annotator_id: int, amount: int) -> None:
    payable = f"annotator:{annotator_id}:payable"
    ledger.ensure_account(db_session, code="platform:test_funding", currency="EUR", kind="asset")
    ledger.ensure_account(db_session, code=payable, currency="EUR", kind="liability", no_overdraft=True)
    ledger.post_transaction(
        db_session,
        idempotency_key=f"test:earn:{annotator_id}:{amount}",
        kind="label_payment",
        reference=f"annotator:{annotator_id}",
        legs=[
            ledger.debit("platform:test_funding", Money(amount, "EUR")),
            ledger.credit(payable, Money(amount, "EUR")),
        ],
    )


def _onboard(app: Flask, client: FlaskClient, fake: FakeStripe, headers: dict[str, str]) -> str:
    """Open the account, finish onboarding at Stripe, and let Stripe's `account.updated` webhook tell us."""
    response = client.post("/api/v1/annotators/me/payout-account", json={"country": "DE"}, headers=headers)
    assert response.status_code == 201, response.get_json()
    account_id = str(response.get_json()["account_id"])
    updated = fake.enable_account(account_id) and fake.events_of("account.updated")[-1]
    assert _deliver(client, updated).status_code == 200
    with app.app_context():
        report = webhooks.process_pending_events(
            services.session_scope(app), gateway=services.get_gateway(app)
        )
    assert report.processed == [updated["id"]]
    return account_id


def _run(client: FlaskClient, finance: dict[str, str]) -> int:
    """Start a run through the API, let it execute after the answer, and return its single payout."""
    started = client.post("/api/v1/payouts/runs", json={}, headers=finance)
    assert started.status_code == 202, started.get_json()
    body = started.get_json()
    assert (body["finished_at"], body["execution"]) == (None, "inline")
    started.close()  # the answer is sent: the run executes now
    run = client.get(started.headers["Location"], headers=finance).get_json()
    assert run["finished_at"] is not None
    assert run["payouts_requested"] == 1
    ((payout,),) = [run["payouts"]]
    assert payout["state"] == "settled"
    return int(payout["id"])


def _count(db_session: Session, model: type) -> int:
    db_session.expire_all()
    return int(db_session.scalar(select(func.count()).select_from(model)) or 0)


def _deliver(client: FlaskClient, event: dict[str, Any], *, timestamp: int | None = None) -> Any:
    body = json.dumps(event).encode()
    return client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign_payload(body, WEBHOOK_SECRET, timestamp=timestamp)},
        content_type="application/json",
    )


# --- roles --------------------------------------------------------------------------------------------------


def test_only_platform_finance_runs_payouts_and_reconciles(client: FlaskClient, db_session: Session) -> None:
    _, annotator = _annotator(db_session)
    manager = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "finance")))
    finance = _finance(db_session)
    admin = f.auth(f.token(db_session, f.user(db_session, platform_role="admin")))
    db_session.commit()
    period = "/api/v1/finance/reconciliation?from=2026-01-01&to=2026-01-31"

    assert client.post("/api/v1/payouts/runs", json={"dry_run": True}).status_code == 401
    for outsider in (annotator, manager):  # an organisation's finance role is not the platform's
        assert (
            client.post("/api/v1/payouts/runs", json={"dry_run": True}, headers=outsider).status_code == 403
        )
        assert client.get("/api/v1/payouts", headers=outsider).status_code == 403
        assert client.get(period, headers=outsider).status_code == 403
    for staff in (finance, admin):
        assert client.post("/api/v1/payouts/runs", json={"dry_run": True}, headers=staff).status_code == 200
        assert client.get("/api/v1/payouts", headers=staff).status_code == 200
        assert client.get(period, headers=staff).status_code == 200
    assert (
        client.post(
            "/api/v1/annotators/me/payout-account", json={"country": "DE"}, headers=finance
        ).status_code
        == 403
    )


def test_a_payout_is_visible_to_its_payee_and_finance_only(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    annotator_id, annotator = _annotator(db_session)
    _, other = _annotator(db_session)
    finance = _finance(db_session)
    _earn(db_session, annotator_id, 2500)
    db_session.commit()
    _onboard(app, client, fake_stripe, annotator)
    payout_id = _run(client, finance)

    own = client.get(f"/api/v1/payouts/{payout_id}", headers=annotator)
    assert own.status_code == 200
    assert own.get_json()["amount"] == {"amount_minor": 2500, "currency": "EUR", "display": "€25.00"}
    assert client.get(f"/api/v1/payouts/{payout_id}", headers=other).status_code == 404
    assert client.get(f"/api/v1/payouts/{payout_id}", headers=finance).get_json()["state"] == "settled"
    assert client.get("/api/v1/payouts/999999", headers=finance).status_code == 404
    mine = client.get("/api/v1/me/payouts", headers=annotator).get_json()["items"]
    assert [p["id"] for p in mine] == [payout_id]
    assert client.get("/api/v1/me/payouts", headers=other).get_json()["items"] == []
    listed = client.get("/api/v1/payouts?state=settled", headers=finance).get_json()["items"]
    assert [p["id"] for p in listed] == [payout_id]
    assert fake_stripe.transfers_in_group(f"payout:{payout_id}")[0]["amount"] == 2500


# --- onboarding, dry runs -----------------------------------------------------------------------------------


def test_an_annotator_opens_a_payout_account_and_gets_an_onboarding_link(
    client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    annotator_id, annotator = _annotator(db_session)
    db_session.commit()
    assert client.get("/api/v1/annotators/me/payout-account", headers=annotator).status_code == 404

    first = client.post("/api/v1/annotators/me/payout-account", json={"country": "FR"}, headers=annotator)
    again = client.post("/api/v1/annotators/me/payout-account", json={"country": "FR"}, headers=annotator)
    shown = client.get("/api/v1/annotators/me/payout-account", headers=annotator)

    assert first.status_code == again.status_code == 201
    body = first.get_json()
    assert (body["gateway"], body["country"], body["currency"], body["payouts_enabled"]) == (
        "stripe",
        "FR",
        "EUR",
        False,
    )
    assert body["onboarding_url"].startswith("https://connect.stripe.com/")
    assert again.get_json()["account_id"] == body["account_id"]
    assert again.get_json()["onboarding_url"] != body["onboarding_url"]  # links are single-use: a fresh one
    assert shown.get_json()["account_id"] == body["account_id"]
    assert list(fake_stripe.accounts) == [body["account_id"]]
    assert fake_stripe.accounts[body["account_id"]]["metadata"] == {"reference": f"annotator:{annotator_id}"}
    # an account's country never changes: asking in another one says so rather than answering the old account
    moved = client.post("/api/v1/annotators/me/payout-account", json={"country": "DE"}, headers=annotator)
    assert moved.status_code == 409
    assert moved.get_json()["error"]["code"] == "payout_account_country"
    assert moved.get_json()["error"]["details"] == {"country": "FR"}
    assert list(fake_stripe.accounts) == [body["account_id"]]
    links = [r.params for r in fake_stripe.requests if r.path == "/v1/account_links"]
    # by default Stripe sends the annotator back to their payouts page
    assert links[0]["return_url"] == "http://localhost/work/payouts?onboarding=done"
    assert links[0]["refresh_url"] == "http://localhost/work/payouts?onboarding=expired"
    assert client.get("/work/payouts?onboarding=done").status_code == 302  # the page exists (log in first)
    bad = client.post("/api/v1/annotators/me/payout-account", json={"country": "France"}, headers=annotator)
    assert bad.status_code == 422


def test_a_dry_run_changes_nothing(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    annotator_id, annotator = _annotator(db_session)
    finance = _finance(db_session)
    _earn(db_session, annotator_id, 4200)
    db_session.commit()
    _onboard(app, client, fake_stripe, annotator)
    before = (
        _count(db_session, Payout),
        _count(db_session, PayoutRun),
        _count(db_session, LedgerTransaction),
    )
    transfers_before = fake_stripe.count_requests("POST", "/v1/transfers")

    response = client.post("/api/v1/payouts/runs", json={"dry_run": True, "currency": "EUR"}, headers=finance)

    assert response.status_code == 200
    body = response.get_json()
    assert body["totals"] == {"EUR": {"count": 1, "amount_minor": 4200}}
    assert body["payouts"] == [
        {"payee": f"annotator:{annotator_id}", "amount_minor": 4200, "currency": "EUR"}
    ]
    assert (
        _count(db_session, Payout),
        _count(db_session, PayoutRun),
        _count(db_session, LedgerTransaction),
    ) == before
    assert fake_stripe.count_requests("POST", "/v1/transfers") == transfers_before
    assert (
        client.post("/api/v1/payouts/runs", json={"min_amount_minor": 1.5}, headers=finance).status_code
        == 422
    )


# --- reconciliation -----------------------------------------------------------------------------------------


def test_reconciliation_as_json_and_csv(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    annotator_id, annotator = _annotator(db_session)
    finance = _finance(db_session)
    _earn(db_session, annotator_id, 3000)
    db_session.commit()
    _onboard(app, client, fake_stripe, annotator)
    payout_id = _run(client, finance)
    today = utcnow().date()
    url = f"/api/v1/finance/reconciliation?from={today - timedelta(days=1)}&to={today}"

    report = client.get(url, headers=finance).get_json()
    exported = client.get(url + "&format=csv", headers=finance)

    assert report["counts"] == {"matched": 1}
    assert report["discrepancies"] == 0
    assert report["earnings"]["disagreeing_labels"] == 0
    sent = db_session.scalars(select(Event).where(Event.type == "payout.sent")).all()
    assert [
        (e.data["payout_id"], e.data["annotator_id"], e.data["amount"]["amount_minor"]) for e in sent
    ] == [(payout_id, annotator_id, 3000)]
    assert report["totals"] == [
        {"currency": "EUR", "ledger_minor": 3000, "stripe_minor": 3000, "difference_minor": 0}
    ]
    (row,) = report["rows"]
    assert (row["payout_id"], row["status"], row["idempotency_key"]) == (
        payout_id,
        "matched",
        f"payout:{payout_id}:transfer:v1",
    )
    assert exported.status_code == 200
    assert exported.mimetype == "text/csv"
    assert "attachment" in exported.headers["Content-Disposition"]
    lines = list(csv.reader(io.StringIO(exported.get_data(as_text=True))))
    assert lines[0][:3] == ["payout_id", "payee", "amount_minor"]
    assert lines[1][0] == str(payout_id)
    backwards = client.get(
        f"/api/v1/finance/reconciliation?from={today}&to={today - timedelta(days=1)}", headers=finance
    )
    assert backwards.status_code == 422
    assert (
        client.get("/api/v1/finance/reconciliation?from=yesterday&to=today", headers=finance).status_code
        == 422
    )


# --- the webhook endpoint -----------------------------------------------------------------------------------


def _transfer_event(fake: FakeStripe) -> dict[str, Any]:
    return {
        "id": "evt_http_1",
        "object": "event",
        "api_version": fake.api_version,
        "created": fake.now(),
        "data": {"object": {"id": "tr_unknown", "object": "transfer", "destination": "acct_x"}},
        "livemode": False,
        "type": "transfer.created",
    }


def test_tampered_or_future_webhooks_get_a_400_problem(
    client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    event = _transfer_event(fake_stripe)
    body = json.dumps(event).encode()
    signature = sign_payload(body, WEBHOOK_SECRET)

    tampered_body = client.post(
        "/webhooks/stripe",
        data=body.replace(b"tr_unknown", b"tr_other"),
        headers={"Stripe-Signature": signature},
    )
    tampered_signature = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": signature[:-1] + ("1" if signature.endswith("0") else "0")},
    )
    unsigned = client.post("/webhooks/stripe", data=body)
    future = _deliver(client, event, timestamp=fake_stripe.now() + 3600)

    for response in (tampered_body, tampered_signature, unsigned, future):
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_signature"
    assert _count(db_session, StripeEvent) == 0


def test_without_redis_a_webhook_is_stored_once_and_processed_after_the_answer(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    event = _transfer_event(fake_stripe)

    first = _deliver(client, event)
    assert first.status_code == 200
    assert first.get_json() == {"received": True, "id": "evt_http_1", "duplicate": False}
    db_session.expire_all()
    assert db_session.get_one(StripeEvent, "evt_http_1").status == "pending"  # answered before processing
    first.close()  # the server closes the response: processing runs now
    db_session.expire_all()
    stored = db_session.get_one(StripeEvent, "evt_http_1")
    assert stored.status == "ignored"  # a transfer Stripe does not know: nothing of ours
    duplicate = _deliver(client, event)
    assert duplicate.get_json()["duplicate"] is True
    assert _count(db_session, StripeEvent) == 1


def test_with_redis_the_webhook_is_processed_by_a_job(
    app: Flask,
    app_config: dict[str, Any],
    client: FlaskClient,
    db_session: Session,
    fake_stripe: FakeStripe,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis
    from rq import Queue, SimpleWorker

    app.config["REDIS_URL"] = app_config["REDIS_URL"]
    # the queue is under the app's Redis prefix: this test's own, so parallel runs never take each other's jobs
    assert services.queue_name(app).startswith(redis_prefix)
    response = _deliver(client, _transfer_event(fake_stripe))
    response.close()
    connection = redis.Redis.from_url(app.config["REDIS_URL"])
    queue = Queue(services.queue_name(app), connection=connection)
    try:
        assert queue.count == 1
        with app.app_context():
            SimpleWorker([queue], connection=connection).work(burst=True)
        db_session.expire_all()
        assert db_session.get_one(StripeEvent, "evt_http_1").status == "ignored"
        assert queue.count == 0
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)
        connection.close()


def test_webhooks_need_a_configured_secret(app: Flask, client: FlaskClient, fake_stripe: FakeStripe) -> None:
    app.config["STRIPE_WEBHOOK_SECRET"] = None
    response = _deliver(client, _transfer_event(fake_stripe))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "webhooks_not_configured"


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_dry_run_run_and_reconcile(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe, tmp_path: Path
) -> None:
    annotator_id, annotator = _annotator(db_session)
    _earn(db_session, annotator_id, 5000)
    db_session.commit()
    _onboard(app, client, fake_stripe, annotator)
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["payouts", "run", "--dry-run", "--min-amount", "1000"])
    assert dry.exit_code == 0, dry.output
    assert "€50.00" in dry.output
    assert _count(db_session, Payout) == 0

    real = runner.invoke(args=["payouts", "run", "--currency", "eur"])
    assert real.exit_code == 0, real.output
    assert "settled 1" in real.output
    (payout,) = db_session.scalars(select(Payout)).all()
    assert payout.state == "settled"

    today = utcnow().date().isoformat()
    target = tmp_path / "reconciliation.csv"
    reconciled = runner.invoke(
        args=["finance", "reconcile", "--from", today, "--to", today, "--csv", str(target)]
    )
    assert reconciled.exit_code == 0, reconciled.output
    assert "matched: 1" in reconciled.output
    assert target.read_text().splitlines()[1].startswith(f"{payout.id},annotator:{annotator_id},5000,EUR")

    events = runner.invoke(args=["payouts", "process-events"])
    stale = runner.invoke(args=["payouts", "resolve-stale"])
    assert events.exit_code == stale.exit_code == 0
    assert "processed 0" in events.output
    assert "marked 0 for lookup" in stale.output
    from marketplace.jobs import periodic_jobs

    with app.app_context():  # as under `flask jobs worker`
        scheduled = {job.name: job.func() for job in periodic_jobs(app) if job.name.startswith("payouts-")}
    assert scheduled == {
        "payouts-process-events": {"processed": 0, "ignored": 0, "failed": 0},
        "payouts-submit-due": [],
        "payouts-resolve-stale": {"marked_stale": 0, "settled": 0, "failed": 0, "still_open": 0},
    }


# --- funding through Stripe ---------------------------------------------------------------------------------


def test_a_stripe_funding_credits_the_project_budget_when_the_webhook_confirms_it(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    from marketplace.db import unit_of_work

    project = f.project(db_session, f.organisation(db_session))
    db_session.commit()
    fake_stripe.charge_fee_bps = 250
    with app.app_context(), unit_of_work(app) as session:
        _, intent = webhooks.request_funding(
            session,
            gateway=services.get_gateway(app),
            reference=f"project:{project.id}",
            amount=Money(40_000, "EUR"),
            idempotency_key=f"project:{project.id}:topup:1",
        )
    fake_stripe.succeed_payment_intent(intent.id)
    (event,) = fake_stripe.events_of("payment_intent.succeeded")

    delivered = _deliver(client, event)
    delivered.close()
    _deliver(client, event).close()  # delivered twice: credited once

    db_session.expire_all()
    budget = ledger.balance(db_session, account_code=f"project:{project.id}:budget", currency="EUR")
    funding = ledger.balance(db_session, account_code="clearing:stripe_funding", currency="EUR")
    stripe_balance = ledger.balance(db_session, account_code="platform:stripe_balance", currency="EUR")
    assert db_session.get_one(StripeEvent, event["id"]).status == "processed"
    assert budget.posted == Money(40_000, "EUR")
    assert funding.posted == Money(
        0, "EUR"
    )  # cleared into the Stripe balance by the charge's balance transaction
    assert stripe_balance.posted == Money(39_000, "EUR")
    assert ledger.check_integrity(db_session, clearing_at_zero=True) == []


def test_stripe_funding_credits_the_budget_only_when_stripe_confirms(
    app: Flask, client: FlaskClient, db_session: Session, fake_stripe: FakeStripe
) -> None:
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    project = f.project(db_session, org, creator=manager)
    headers = {**f.auth(f.token(db_session, manager)), "Idempotency-Key": "fund-1"}
    db_session.commit()
    url = f"/api/v1/projects/{project.id}/funding"
    asked = client.post(url, json={"amount_minor": 50_000, "currency": "EUR"}, headers=headers)
    assert asked.status_code == 202, asked.get_json()
    funding = asked.get_json()["funding"]
    assert funding["status"] == "awaiting_payment"
    assert funding["client_secret"]
    assert asked.get_json()["funded"]["amount_minor"] == 0  # nothing is booked before Stripe confirms
    again = client.post(url, json={"amount_minor": 50_000, "currency": "EUR"}, headers=headers)
    assert again.get_json()["funding"]["payment_intent"] == funding["payment_intent"]
    succeeded = (
        fake_stripe.succeed_payment_intent(funding["payment_intent"])
        and fake_stripe.events_of("payment_intent.succeeded")[-1]
    )
    for _ in range(2):  # Stripe may deliver an event twice
        assert _deliver(client, succeeded).status_code == 200
    with app.app_context():
        webhooks.process_pending_events(services.session_scope(app), gateway=services.get_gateway(app))
    budget = client.get(f"/api/v1/projects/{project.id}/budget", headers=headers).get_json()
    assert budget["funded"]["amount_minor"] == 50_000
    assert ledger.check_integrity(db_session) == []
