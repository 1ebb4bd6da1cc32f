"""`flask quality auto-accept`: accept labels nobody reviewed within their project's review window."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from marketplace.db import unit_of_work, utcnow
from marketplace.quality.review import auto_accept_overdue

quality_cli = AppGroup("quality", help="Quality control.")

BATCH = 500


def auto_accept_job() -> int:
    """Accept overdue labels in batches, one transaction per batch; how many."""
    total = 0
    while True:
        with unit_of_work() as session:
            accepted = auto_accept_overdue(session, now=utcnow(), limit=BATCH)
        total += accepted
        if accepted < BATCH:
            return total


@quality_cli.command("auto-accept")
def auto_accept_command() -> None:
    """Accept (and pay) every label whose review window ran out with no reviewer's decision."""
    count = auto_accept_job()
    click.echo(f"{count:,} label{'s' if count != 1 else ''} accepted automatically")
