"""`flask --app wsgi payouts ...` and `flask --app wsgi finance reconcile`: payout runs, webhook backlog,
stale payouts, and reconciliation, with progress on stderr and a summary on stdout."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketplace.billing.agreement import check_earnings
from marketplace.db import unit_of_work, utcnow
from marketplace.payouts import services
from payments import payout_runs, reconciliation, webhooks
from payments.money import Money

payouts_cli = AppGroup("payouts", help="Pay annotators: runs, the webhook backlog, stale payouts.")
finance_cli = AppGroup("finance", help="Finance: reconciliation.")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal and not os.environ.get("FORCE_PROGRESS"),
    )


def _totals_table(title: str, totals: dict[str, dict[str, int]]) -> Table:
    table = Table(title=title)
    table.add_column("currency")
    table.add_column("payouts", justify="right")
    table.add_column("amount", justify="right")
    for currency, entry in totals.items():
        table.add_row(currency, str(entry["count"]), Money(entry["amount_minor"], currency).format())
    return table


@payouts_cli.command("run")
@click.option("--dry-run", is_flag=True, help="Only show what would be paid; change nothing.")
@click.option("--min-amount", "min_amount", type=click.IntRange(min=1), help="Minimum payout in minor units.")
@click.option("--currency", type=str, help="Only payables in this currency (e.g. EUR).")
def run_command(dry_run: bool, min_amount: int | None, currency: str | None) -> None:
    """Request a payout for every payee due and submit every due payout to the gateway."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    minimum = min_amount or int(app.config["PAYOUT_MIN_AMOUNT_MINOR"])
    currency = currency.upper() if currency else None
    out = Console()
    scope = services.session_scope(app)
    plan = payout_runs.dry_run(scope, min_amount_minor=minimum, currency=currency)
    if dry_run:
        out.print(_totals_table(f"Dry run: payouts of at least {minimum} minor units", plan.totals()))
        skipped: dict[str, int] = {}
        for item in plan.skipped:
            skipped[item.reason] = skipped.get(item.reason, 0) + 1
        for reason, count in sorted(skipped.items()):
            out.print(f"skipped {count} payee(s): {reason}")
        out.print("Nothing was changed.")
        return
    with _progress(Console(stderr=True)) as progress:
        requesting = progress.add_task("requesting", total=len(plan.payouts))
        submitting = progress.add_task("submitting", total=None)

        def on_step(step: str, payout_id: int) -> None:
            if step == "requested":
                progress.advance(requesting)
            elif step == "claimed":
                progress.advance(submitting)

        report = payout_runs.run_payouts(
            scope,
            gateway=services.get_gateway(app),
            throttle=services.get_throttle(app),
            min_amount_minor=minimum,
            currency=currency,
            requested_by="cli",
            worker=services.worker_name(),
            on_step=on_step,
        )
    out.print(_totals_table(f"Payout run {report.run_id}", plan.totals()))
    submit = report.submit
    out.print(
        f"requested {len(report.requested)}, settled {len(submit.settled)}, failed {len(submit.failed)}, "
        f"to retry {len(submit.retrying)}"
    )
    lookups = report.lookups
    if lookups.marked_stale or lookups.settled or lookups.failed:
        out.print(f"looked up stale payouts: settled {len(lookups.settled)}, failed {len(lookups.failed)}")
    if submit.stopped:
        out.print(f"[yellow]stopped early: {submit.stopped}[/yellow]")


@payouts_cli.command("process-events")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True)
def process_events_command(limit: int) -> None:
    """Process stored Stripe webhook events that are still pending."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    report = webhooks.process_pending_events(
        services.session_scope(app), gateway=services.get_gateway(app), limit=limit
    )
    click.echo(
        f"processed {len(report.processed)}, ignored {len(report.ignored)}, failed {len(report.failed)}"
    )
    for event_id, error in report.failed.items():
        click.echo(f"  {event_id}: {error}", err=True)


@payouts_cli.command("resolve-stale")
@click.option("--stale-hours", type=click.IntRange(min=1), default=20, show_default=True)
def resolve_stale_command(stale_hours: int) -> None:
    """Look up payouts unresolved for too long by transfer group (never re-post them)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    report = payout_runs.resolve_stale_payouts(
        services.session_scope(app),
        gateway=services.get_gateway(app),
        worker=services.worker_name(),
        stale_after=timedelta(hours=stale_hours),
    )
    click.echo(
        f"marked {report.marked_stale} for lookup: settled {len(report.settled)}, failed {len(report.failed)}, "
        f"still open {len(report.still_open)}; balance transactions booked {len(report.balances_booked)}"
    )


@finance_cli.command("reconcile")
@click.option(
    "--from", "start", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="First day (UTC)."
)
@click.option(
    "--to", "end", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="Last day, inclusive."
)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows here."
)
def reconcile_command(start: datetime, end: datetime, csv_path: Path | None) -> None:
    """Compare payouts, the ledger and Stripe for a period; print totals and discrepancies."""
    first, last = date(start.year, start.month, start.day), date(end.year, end.month, end.day)
    if last < first:
        raise click.BadParameter("--to is before --from")
    period_start = datetime.combine(first, time.min, UTC)
    period_end = datetime.combine(last + timedelta(days=1), time.min, UTC)
    with unit_of_work() as session:
        report = reconciliation.reconcile(
            session, gateway=services.get_gateway(), start=period_start, end=period_end, now=utcnow()
        )
        earnings = check_earnings(session, start=period_start, end=period_end)
        session.rollback()
    out = Console()
    table = Table(title=f"Reconciliation {first} – {last} ({report.gateway})")
    for column in ("currency", "ledger", "stripe", "difference"):
        table.add_column(column, justify="right")
    for total in report.totals:
        table.add_row(
            total.currency,
            Money(total.ledger_minor, total.currency).format(),
            Money(total.stripe_minor, total.currency).format(),
            Money(total.difference_minor, total.currency).format(),
        )
    out.print(table)
    out.print(", ".join(f"{status}: {count}" for status, count in report.counts().items()) or "no payouts")
    for row in report.discrepancies:
        out.print(
            f"[red]{row.status.value}[/red] payout {row.payout_id or '-'} {row.payee or ''} {row.notes}"
        )
    for total in earnings.to_json()["totals"]:
        out.print(
            f"labels accepted: {earnings.labels_accepted:,}; earned "
            f"{Money(total['earned_minor'], total['currency']).format()}, paid by the ledger "
            f"{Money(total['paid_minor'], total['currency']).format()}"
        )
    for item in earnings.disagreeing:
        out.print(
            f"[red]label {item['label_id']}[/red]: price {item['price_minor']}, paid {item['paid_minor']}"
        )
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as stream:
            reconciliation.write_csv(report, stream)
        out.print(f"{len(report.rows)} rows written to {csv_path}")


def init_app(app: Flask) -> None:
    """Register the `payouts` and `finance` command groups."""
    app.cli.add_command(payouts_cli)
    app.cli.add_command(finance_cli)
