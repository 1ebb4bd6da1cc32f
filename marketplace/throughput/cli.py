"""`flask throughput rebuild|check`: refill the live counters from the database; run the health check."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup

from marketplace.db import unit_of_work, utcnow
from marketplace.redis import get_redis
from marketplace.throughput.counters import REBUILD_HOURS, rebuild_counters
from marketplace.throughput.health import check_projects

throughput_cli = AppGroup("throughput", help="Throughput counters, progress and deadline risk.")


def health_job() -> int:
    """Check every active project's progress; how many at-risk and budget events were recorded."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with unit_of_work(app) as session:
        return check_projects(
            session,
            now=utcnow(),
            fee_bps=int(app.config["PLATFORM_FEE_BPS"]),
            seen_window=timedelta(seconds=int(app.config["ANNOTATOR_SEEN_WINDOW_SECONDS"])),
            client=get_redis(app),
        )


@throughput_cli.command("rebuild")
@click.option("--hours", type=click.IntRange(1, 24 * 7), default=REBUILD_HOURS, show_default=True)
def rebuild_command(hours: int) -> None:
    """Refill the Redis counters from the labels table (after a flush or an outage)."""
    client = get_redis()
    if client is None:
        raise click.ClickException("REDIS_URL is not set: without Redis every read comes from the database")
    with unit_of_work() as session:
        written = rebuild_counters(session, client, since=utcnow() - timedelta(hours=hours))
    click.echo(f"{written:,} counter buckets rebuilt from the last {hours} hours")


@throughput_cli.command("check")
def check_command() -> None:
    """Check every active project now: record project.at_risk and budget.low events for what changed."""
    fired = health_job()
    click.echo(f"{fired} event{'s' if fired != 1 else ''} recorded")
