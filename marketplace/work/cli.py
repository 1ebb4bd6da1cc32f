"""`flask work expire-leases`: return expired leases to the pool now."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

work_cli = AppGroup("work", help="The work loop.")


@work_cli.command("expire-leases")
def expire_leases_command() -> None:
    """End every lease whose time ran out: slots return to the pool, budget holds are voided."""
    from marketplace.jobs import expire_leases_job

    count = expire_leases_job()
    click.echo(f"{count:,} expired lease{'s' if count != 1 else ''} returned to the pool")


def init_app(app: Flask) -> None:
    app.cli.add_command(work_cli)
