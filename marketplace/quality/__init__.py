"""Quality control: gold items, consensus, manual review with auto-acceptance, appeals, and accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from marketplace.api import Api


def init_app(app: Flask, api: Api) -> None:
    """Register the review, appeal, labels and workforce APIs, the `quality` CLI group, and the auto-accept and escalation jobs."""
    from marketplace.jobs import register_periodic
    from marketplace.quality import api as quality_api
    from marketplace.quality import cli, labels_api, workers_api

    api.register_blueprint(quality_api.blp)
    api.register_blueprint(labels_api.blp)
    api.register_blueprint(workers_api.blp)
    app.cli.add_command(cli.quality_cli)
    register_periodic(app, "quality-auto-accept", 300, cli.auto_accept_job)
    register_periodic(app, "quality-escalate-unfunded", 60, cli.escalate_unfunded_job)
