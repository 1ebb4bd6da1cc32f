"""The event outbox: `record_event` in the same transaction as each change, replay, and signed webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from marketplace.api import Api


def init_app(app: Flask, api: Api) -> None:
    """Register the events API, the `events` CLI group and the delivery job."""
    from marketplace.events import api as events_api
    from marketplace.events import cli
    from marketplace.jobs import register_periodic

    api.register_blueprint(events_api.blp)
    app.cli.add_command(cli.events_cli)
    register_periodic(app, "events-deliver", 10, cli.deliver_webhooks_job)
