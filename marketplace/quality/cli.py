"""`flask quality auto-accept`: accept labels nobody reviewed within their project's review window;
`flask quality escalate-unfunded`: send to review the consensus items whose extra label no budget pays."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from marketplace.db import unit_of_work, utcnow
from marketplace.quality.consensus import escalate_unfunded_extensions
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


def escalate_unfunded_job() -> int:
    """Escalate consensus items waiting for an extra label their budget cannot pay, in batches; how many."""
    fee_bps = int(current_app.config["PLATFORM_FEE_BPS"])
    total = 0
    while True:
        with unit_of_work() as session:
            escalated = escalate_unfunded_extensions(session, now=utcnow(), fee_bps=fee_bps, limit=BATCH)
        total += escalated
        if escalated < BATCH:
            return total


@quality_cli.command("escalate-unfunded")
def escalate_unfunded_command() -> None:
    """Send to manual review the consensus items whose extra label their project's budget can no longer buy."""
    count = escalate_unfunded_job()
    click.echo(f"{count:,} item{'s' if count != 1 else ''} sent to review: no budget for their extra label")
