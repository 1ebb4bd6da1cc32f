"""The edge of payouts: which gateway and rate limiter the app uses, the session factory the payout loops commit
through, the funding handler for Stripe's webhooks, and how a stored webhook event gets processed.

The payout services themselves live in `payments` (they take a session and never commit); the loops that
commit around each gateway call live in `payments.payout_runs` and take `session_scope(app)` from here.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import redis as redis_lib
from flask import Flask, Response, current_app, url_for
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing import services as billing
from marketplace.db import unit_of_work
from marketplace.projects.models import Project
from marketplace.redis import get_redis, key
from payments import payouts, webhooks
from payments.errors import PayoutError
from payments.gateways.base import OnboardingLink, PayoutGateway, WebhookEvent
from payments.gateways.local import LocalGateway
from payments.payout_models import Payout, PayoutAccount
from payments.throttle import Throttle, transfer_throttle

log = logging.getLogger(__name__)

GATEWAY_EXTENSION = "labelforce.payouts.gateway"
THROTTLE_EXTENSION = "labelforce.payouts.throttle"
#: the funding events whose money the marketplace credits to a project budget
FUNDING_EVENT = "payment_intent.succeeded"


def build_gateway(config: dict[str, Any] | Any) -> PayoutGateway:
    """The gateway the settings ask for: "local" (the embedded default) or "stripe"."""
    name = config.get("PAYOUT_GATEWAY", "local")
    if name == "local":
        return LocalGateway()
    if name == "stripe":
        from payments.gateways.stripe import StripeGateway

        secret = config.get("STRIPE_SECRET_KEY")
        if not secret:
            raise RuntimeError("PAYOUT_GATEWAY=stripe needs STRIPE_SECRET_KEY")
        return StripeGateway(
            api_key=secret,
            api_base=config.get("STRIPE_API_BASE") or None,
            max_network_retries=int(config.get("STRIPE_MAX_NETWORK_RETRIES", 2)),
        )
    raise RuntimeError(f"unknown PAYOUT_GATEWAY {name!r}: use 'local' or 'stripe'")


def get_gateway(app: Flask | None = None) -> PayoutGateway:
    """The app's payout gateway, built once from its settings (tests may put their own in its place)."""
    app = app or current_app
    gateway: PayoutGateway | None = app.extensions.get(GATEWAY_EXTENSION)
    if gateway is None:
        gateway = build_gateway(app.config)
        app.extensions[GATEWAY_EXTENSION] = gateway
    return gateway


def get_throttle(app: Flask | None = None) -> Throttle:
    """The limiter of transfer calls: one bucket in Redis for every worker, or one per process without it."""
    app = app or current_app
    throttle: Throttle | None = app.extensions.get(THROTTLE_EXTENSION)
    if throttle is None:
        throttle = transfer_throttle(
            rate=float(app.config.get("STRIPE_TRANSFERS_PER_SECOND", 20)),
            client=get_redis(app),
            key=key("payouts", "transfers", "bucket", app=app),
        )
        app.extensions[THROTTLE_EXTENSION] = throttle
    return throttle


def session_scope(app: Flask | None = None) -> Callable[[], AbstractContextManager[Session]]:
    """A factory of one-transaction sessions (commit on success) for the payout loops."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]

    def scope() -> AbstractContextManager[Session]:
        return unit_of_work(app)

    return scope


def worker_name() -> str:
    """Who holds a payout claim: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def payee_reference(annotator_id: int) -> str:
    """How payments names an annotator."""
    return f"annotator:{annotator_id}"


def open_account_and_onboard(
    session: Session,
    *,
    profile: AnnotatorProfile,
    email: str,
    country: str,
    refresh_url: str | None = None,
    return_url: str | None = None,
) -> tuple[PayoutAccount, OnboardingLink]:
    """Open the annotator's payout account (or reuse it) and ask the gateway for a fresh onboarding link.

    By default the gateway sends the annotator back to their payouts page in the web UI.
    """
    gateway = get_gateway()
    account = payouts.open_payout_account(
        session,
        gateway=gateway,
        reference=payee_reference(profile.id),
        country=country,
        currency=profile.currency,
        email=email,
    )
    link = payouts.onboarding_link(
        gateway=gateway,
        account=account,
        refresh_url=refresh_url or url_for("web.my_payouts", onboarding="expired", _external=True),
        return_url=return_url or url_for("web.my_payouts", onboarding="done", _external=True),
    )
    return account, link


def payout_dict(payout: Payout) -> dict[str, Any]:
    """A payout as the API shows it."""
    from marketplace.api import money_dict

    return {
        "id": payout.id,
        "payee": payout.payee_reference,
        "amount": money_dict(payout.amount_minor, payout.currency),
        "amount_reversed": money_dict(payout.amount_reversed_minor, payout.currency),
        "state": payout.state,
        "destination": payout.destination,
        "transfer_id": payout.transfer_id,
        "idempotency_key": payout.idempotency_key,
        "transfer_group": payout.transfer_group,
        "attempts": payout.attempts,
        "failure_code": payout.failure_code,
        "run_id": payout.run_id,
        "created_at": payout.created_at.isoformat(),
        "settled_at": payout.settled_at.isoformat() if payout.settled_at else None,
    }


# --- funding ------------------------------------------------------------------------------------------------


def credit_stripe_funding(session: Session, event: WebhookEvent) -> None:
    """Credit the project budget a `payment_intent.succeeded` event confirms (once per payment intent)."""
    confirmed = webhooks.funding_confirmation(event)
    kind, _, ident = confirmed.reference.partition(":")
    if kind != "project" or not ident.isdigit():
        raise PayoutError(f"funding for {confirmed.reference!r}: only projects are funded through Stripe")
    project = session.get(Project, int(ident))
    if project is None:
        raise PayoutError(f"funding for {confirmed.reference}: no such project")
    billing.fund_project(
        session,
        project=project,
        amount=confirmed.amount,
        idempotency_key=f"stripe:{confirmed.gateway_id}",
        source="stripe",
    )


# --- processing webhook events ------------------------------------------------------------------------------


def _rq_connection(app: Flask) -> redis_lib.Redis | None:
    # RQ stores pickled jobs: it needs a client that does not decode responses, unlike the app's shared one.
    url = app.config.get("REDIS_URL")
    return redis_lib.Redis.from_url(url) if url else None


def queue_name(app: Flask) -> str:
    """The RQ queue payout jobs go to: the one `flask jobs worker` serves."""
    from marketplace import jobs

    return jobs.queue_name(app)


def _after_response(app: Flask, response: Response | None, job: str, *args: Any) -> str:
    """Run `marketplace.payouts.jobs.<job>(*args)` once the request has committed and answered: as an RQ
    job when Redis is configured, else in this process. Returns how ("queued" or "inline")."""
    connection = _rq_connection(app)

    def run() -> None:
        if connection is not None:
            from rq import Queue

            try:
                Queue(queue_name(app), connection=connection).enqueue(
                    f"marketplace.payouts.jobs.{job}", *args, job_timeout=3600
                )
                return
            except redis_lib.RedisError:
                # Redis is an accelerator: run it here rather than leave it to the next scheduled pass.
                log.warning("could not queue %s%r; running it in this process", job, args)
            finally:
                connection.close()
        from marketplace.payouts import jobs

        with app.app_context():
            getattr(jobs, job)(*args)

    if response is not None:
        response.call_on_close(run)
    else:
        _pending_after_response().append(run)
    return "queued" if connection is not None else "inline"


def _pending_after_response() -> list[Callable[[], None]]:
    from flask import g

    if "payouts_after_response" not in g:
        g.payouts_after_response = []
    pending: list[Callable[[], None]] = g.payouts_after_response
    return pending


def run_pending_after_response(response: Response) -> Response:
    """Attach the work views scheduled (`schedule_payout_run`) to the response, to run once it is sent."""
    from flask import g

    pending = g.pop("payouts_after_response", [])
    if response.status_code < 400:  # a failed request rolled back what the work would act on
        for run in pending:
            response.call_on_close(run)
    return response


def schedule_event_processing(app: Flask, response: Response, event_id: str) -> str:
    """Process a stored webhook event after the answer: an RQ job with Redis, else in this process."""
    return _after_response(app, response, "process_stripe_event", event_id)


def schedule_payout_run(app: Flask, run_id: int) -> str:
    """Execute a recorded payout run after the answer (flask-smorest builds the response, not the view)."""
    return _after_response(app, None, "execute_payout_run", run_id)


@contextmanager
def app_context_for_jobs() -> Iterator[Flask]:
    """The current app, or (in an RQ worker process) an app built from the environment once."""
    from flask import has_app_context

    if has_app_context():
        yield current_app._get_current_object()  # type: ignore[attr-defined]
        return
    global _worker_app  # noqa: PLW0603  (one app per worker process, built on first use)
    if _worker_app is None:
        from marketplace.app import create_app

        _worker_app = create_app()
    with _worker_app.app_context():
        yield _worker_app


_worker_app: Flask | None = None
