"""`flask routing plan`: one planning run from the command line, with progress and a summary."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from rich.console import Console

from marketplace.planning.jobs import run_plan
from payments.money import Money

routing_cli = AppGroup("routing", help="The routing plan.")


@routing_cli.command("plan")
@click.option("--project", "project_id", type=int, help="Plan one project only.")
@click.option(
    "--method", type=click.Choice(["flow", "greedy", "cpsat", "guided"]), default="flow", show_default=True
)
@click.option("--time-limit", type=float, help="Seconds the solver may take (cpsat, guided).")
def plan_command(project_id: int | None, method: str, time_limit: float | None) -> None:
    """Plan offers for every available annotator (or one project)."""
    console = Console(stderr=True)
    with console.status("planning") as status:
        summary = run_plan(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            method=method,
            project_id=project_id,
            time_limit_s=time_limit,
            progress=status.update,
        )
    amounts: dict[str, int] = dict(summary["cost"])  # type: ignore[call-overload]
    cost = (
        ", ".join(Money(amount, currency).format() for currency, amount in sorted(amounts.items()))
        or "nothing"
    )
    click.echo(
        f"plan {summary['id']} ({summary['method']}, {summary['status']}): "
        f"{summary['slots_filled']:,} of {summary['slots_open']:,} open slots offered to "
        f"{summary['annotators']:,} annotators over {summary['tasks']:,} items; cost {cost}; "
        f"{summary['duration_ms']:,} ms"
    )


def init_app(app: Flask) -> None:
    app.cli.add_command(routing_cli)
