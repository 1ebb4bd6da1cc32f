"""`ledger` commands: `ledger check` (the integrity check) and `ledger balance CODE CURRENCY`.

Wired by the app with `register_cli(app.cli, open_session=...)`: the commands are told how to open a unit of work.
They live with the marketplace, not in `payments`, which knows no web framework.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

import click
from flask.cli import with_appcontext
from sqlalchemy.orm import Session

from payments.balances import balance
from payments.errors import AccountNotFound
from payments.integrity import check_integrity

SessionOpener = Callable[[], AbstractContextManager[Session]]


def register_cli(group: click.Group, *, open_session: SessionOpener) -> None:
    """Add the `ledger` command group to `group` (usually `app.cli`)."""
    opener = open_session

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
