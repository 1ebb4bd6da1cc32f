"""`flask create-user`: users for staff, managers and reviewers from the command line."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from marketplace.accounts import services
from marketplace.accounts.models import Organisation, OrgRole, PlatformRole
from marketplace.db import unit_of_work
from marketplace.errors import DomainError

ROLES = [r.value for r in OrgRole] + ["platform-admin", "platform-finance"]


@click.command("create-user")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--password", required=True, prompt=True, hide_input=True, confirmation_prompt=True)
@click.option(
    "--role", type=click.Choice(ROLES), required=True, help="An organisation role or platform staff."
)
@click.option(
    "--org", "org_slug", help="The organisation's slug (created if missing) for organisation roles."
)
@click.option("--token/--no-token", default=False, help="Also issue an API token and print it.")
def create_user_command(
    email: str, name: str, password: str, role: str, org_slug: str | None, token: bool
) -> None:
    """Create a user with a role."""
    try:
        with unit_of_work() as session:
            platform_role = None
            if role.startswith("platform-"):
                platform_role = PlatformRole(role.removeprefix("platform-")).value
            elif not org_slug:
                raise click.UsageError("--org is needed for organisation roles")
            user = services.create_user(
                session, email=email, name=name, password=password, platform_role=platform_role
            )
            if org_slug and platform_role is None:
                org = session.scalar(select(Organisation).where(Organisation.slug == org_slug))
                if org is None:
                    org = services.create_organisation(session, name=org_slug, slug=org_slug)
                services.add_membership(session, user=user, organisation=org, role=role)
            secret = services.issue_token(session, user=user, name="cli")[1] if token else None
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created user {user.id} <{user.email}> as {role}")
    if secret:
        click.echo(f"token: {secret}")


def init_app(app: Flask) -> None:
    app.cli.add_command(create_user_command)
