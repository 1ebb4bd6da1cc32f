"""Payouts at the edge: HTTP endpoints, the Stripe webhook, CLI commands and jobs over `payments`."""

from __future__ import annotations

from flask import Flask

from marketplace.api import Api


def init_app(app: Flask, api: Api) -> None:
    """Register the payout endpoints, the Stripe webhook, the `payouts`/`finance` commands, and the handler
    that credits project budgets when Stripe confirms a funding."""
    from marketplace.jobs import register_periodic
    from marketplace.payouts import api as payouts_api
    from marketplace.payouts import cli, jobs, outbox, services, webhooks
    from payments import webhooks as payment_webhooks

    assert outbox  # imported for its listener: payout outcomes go to the event outbox
    payouts_api.init_app(app, api)
    webhooks.init_app(app)
    cli.init_app(app)
    payment_webhooks.register_handler(services.FUNDING_EVENT, services.credit_stripe_funding)
    app.after_request(services.run_pending_after_response)
    # Catch-up passes: events whose job was lost, payouts due for a retry with their key, stale lookups.
    register_periodic(app, "payouts-process-events", 300, jobs.process_pending_events)
    register_periodic(app, "payouts-submit-due", 300, jobs.submit_due_payouts)
    register_periodic(app, "payouts-resolve-stale", 3600, jobs.resolve_stale_payouts)
