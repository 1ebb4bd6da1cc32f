"""`ledger` commands: `ledger check` (the integrity check) and `ledger balance CODE CURRENCY`.

Wired by the app with `register_cli(app.cli, open_session=...)`; `payments` does not know the app, so it is told
how to open a unit of work. Without one, the command builds an engine from the Flask app's `DATABASE_URL`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from payments.balances import balance
from payments.errors import AccountNotFound
from payments.integrity import check_integrity

SessionOpener = Callable[[], AbstractContextManager[Session]]


@contextmanager
def _session_from_app_config() -> Iterator[Session]:
    engine = create_engine(current_app.config["DATABASE_URL"])
    try:
        with Session(engine) as session:
            yield session
            session.rollback()  # the commands only read
    finally:
        engine.dispose()


def register_cli(group: click.Group, *, open_session: SessionOpener | None = None) -> None:
    """Add the `ledger` command group to `group` (usually `app.cli`)."""
    opener = open_session or _session_from_app_config

    @group.group("ledger")
    def ledger_group() -> None:
        """The double-entry ledger."""

    @ledger_group.command("check")
    @click.option("--clearing", is_flag=True, help="Also require every clearing:* account to be at zero.")
    @with_appcontext
    def check_command(clearing: bool) -> None:
        """Check the ledger's invariants; print each problem and exit 1 if there is any."""
        with opener() as session:
            problems = check_integrity(session, clearing_at_zero=clearing)
        for problem in problems:
            click.echo(problem)
        if problems:
            click.echo(f"{len(problems)} problem(s) found", err=True)
            sys.exit(1)
        click.echo("ledger ok", err=True)

    @ledger_group.command("balance")
    @click.argument("code")
    @click.argument("currency")
    @with_appcontext
    def balance_command(code: str, currency: str) -> None:
        """Print one account's posted, pending and available balance."""
        with opener() as session:
            try:
                result = balance(session, account_code=code, currency=currency.upper())
            except AccountNotFound as exc:
                raise click.ClickException(str(exc)) from exc
        click.echo(
            f"{result.account_code} {result.currency}: posted {result.posted.format()}, "
            f"pending debits {result.pending_debits.format()}, pending credits {result.pending_credits.format()}, "
            f"available {result.available.format()}"
        )
