"""`flask events deliver`: send due webhook deliveries now."""

from __future__ import annotations

from dataclasses import asdict

import click
from flask import current_app
from flask.cli import AppGroup

from marketplace.db import unit_of_work, utcnow
from marketplace.events.delivery import DeliveryReport, deliver_due, http_post

events_cli = AppGroup("events", help="The event outbox and its webhooks.")


def deliver_job(limit: int = 100) -> DeliveryReport:
    """Send due deliveries (private addresses refused in production unless WEBHOOK_ALLOW_PRIVATE_NETWORKS)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    allow_private = bool(
        app.config.get("WEBHOOK_ALLOW_PRIVATE_NETWORKS", app.config.get("ENV_NAME") != "production")
    )
    return deliver_due(
        lambda: unit_of_work(app),
        now=utcnow,
        limit=limit,
        post=lambda request: http_post(request, allow_private=allow_private),
    )


def deliver_webhooks_job() -> dict[str, int]:
    """The periodic job: one delivery pass, summarised."""
    return asdict(deliver_job())


@events_cli.command("deliver")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--until-idle", is_flag=True, help="Repeat until no delivery is due.")
def deliver_command(limit: int, until_idle: bool) -> None:
    """POST due events to project webhooks (signed), scheduling retries with backoff."""
    while True:
        report = deliver_job(limit)
        click.echo(
            f"{report.attempted} attempted: {report.delivered} delivered, "
            f"{report.retrying} to retry, {report.failed} failed"
        )
        if not until_idle or report.attempted < limit:
            return
