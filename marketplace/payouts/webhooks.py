"""`POST /webhooks/stripe`: verify, store once, answer at once; the processing happens after the commit.

Stripe signs the raw body, so the view reads it untouched (`request.get_data()`) before anything parses it.
The route takes no CSRF token (Stripe cannot send one) and no session cookie; the signature is the
authentication. A bad signature or a stale timestamp is a 400 problem (the error handler maps
`WebhookSignatureError`), which Stripe shows in its dashboard and retries.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from marketplace.db import get_session
from marketplace.errors import problem
from marketplace.payouts import services
from payments import webhooks
from payments.payout_models import EventStatus

bp = Blueprint("stripe_webhooks", __name__)


@bp.post("/webhooks/stripe")
def receive_stripe_event() -> Response:
    """Store a signed Stripe event (once per event id) and schedule its processing."""
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        return problem(503, "webhooks_not_configured", "STRIPE_WEBHOOK_SECRET is not set on this server.")
    row, created = webhooks.receive_event(
        get_session(),
        payload=request.get_data(),
        signature_header=request.headers.get("Stripe-Signature"),
        secret=secret,
    )
    response = jsonify({"received": True, "id": row.id, "duplicate": not created})
    if row.status == EventStatus.PENDING:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        services.schedule_event_processing(app, response, row.id)
    return response


def init_app(app: Flask) -> None:
    """Register the webhook route, exempt from CSRF (its authentication is Stripe's signature)."""
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
