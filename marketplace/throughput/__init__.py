"""Throughput, progress and forecasts: live counters, measured speed, ETAs, deadline and budget risk."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from marketplace.api import Api


def init_app(app: Flask, api: Api) -> None:
    """Register the progress and stats API, the `throughput` CLI group and the health-check job."""
    from marketplace.jobs import register_periodic
    from marketplace.throughput import api as throughput_api
    from marketplace.throughput import cli

    api.register_blueprint(throughput_api.blp)
    app.cli.add_command(cli.throughput_cli)
    register_periodic(app, "throughput-health", 300, cli.health_job)
