"""Fixtures of the web UI's tests: the app with the `web` blueprint, a small two-tenant world, and logins."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from marketplace.accounts.models import Organisation, User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import fund_project
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Project
from payments.money import Money
from tests import factories as f

CHROMIUM = Path("/usr/bin/chromium")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's chromium through Playwright (skipped without it)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"browser tests need {CHROMIUM} (apt-get install -y chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@dataclass
class World:
    """Two tenants. Acme has staff of every role, a funded manual-review project and an annotator; Globex has a
    project of its own that nobody at Acme may see."""

    org: Organisation
    manager: User
    reviewer: User
    org_finance: User
    platform_finance: User
    annotator: AnnotatorProfile
    annotator_user: User
    project: Project
    other_org: Organisation
    other_manager: User
    other_project: Project


def add_tasks(session: Session, project: Project, count: int, **payload: Any) -> None:
    rows = [
        (
            i + 1,
            {"external_id": f"item-{i:03d}", "payload": payload or {"text": f"Review number {i}: it works."}},
        )
        for i in range(count)
    ]
    import_tasks(session, project=project, rows=rows)


@pytest.fixture
def world(db_session: Session) -> World:
    org = f.organisation(db_session, "acme")
    manager = f.member(db_session, org, "manager")
    project = f.project(
        db_session,
        org,
        manager,
        name="Product reviews",
        instructions="Is the review positive, negative or neutral?",
        label_schema={"type": "single_choice", "choices": ["positive", "neutral", "negative"]},
        pay_per_label_minor=100,
        budget_minor=1_000_00,
    )
    add_tasks(db_session, project, 5)
    fund_project(db_session, project=project, amount=Money(1_000_00, "EUR"), idempotency_key="web-test")
    annotator = f.annotator(db_session, price_minor=50)
    other_org = f.organisation(db_session, "globex")
    other_manager = f.member(db_session, other_org, "manager")
    other_project = f.project(db_session, other_org, other_manager, name="Globex secrets")
    world = World(
        org=org,
        manager=manager,
        reviewer=f.member(db_session, org, "reviewer"),
        org_finance=f.member(db_session, org, "finance"),
        platform_finance=f.user(db_session, platform_role="finance"),
        annotator=annotator,
        annotator_user=db_session.get_one(User, annotator.user_id),
        project=project,
        other_org=other_org,
        other_manager=other_manager,
        other_project=other_project,
    )
    db_session.commit()
    return world


def login(client: FlaskClient, user: User) -> FlaskClient:
    """Log `user` in by setting Flask-Login's session keys (the login form has tests of its own)."""
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)
        session["_fresh"] = True
    return client


@pytest.fixture
def as_user(app: Flask) -> Any:
    """A fresh client logged in as the given user."""

    def _client(user: User) -> FlaskClient:
        return login(app.test_client(), user)

    return _client


# --- browser tests ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's chromium (Playwright's own download does not work here), headless and quiet."""
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "headless": True,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def base_url() -> str | None:
    # pytest-playwright's own `base_url` (used when pytest-base-url is absent) is a session fixture written as
    # an instance method, which pytest 9 deprecates: with warnings as errors it fails every browser test.
    # The tests pass absolute URLs of their live server instead.
    return None


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}, "locale": "en-GB"}


@pytest.fixture
def live_server(app_config: dict[str, Any], make_app: Any) -> Iterator[str]:
    """The app, CSRF on as in production, served by a real HTTP server on 127.0.0.1 (a free port) in a thread,
    on this test's database."""
    application = make_app({**app_config, "WTF_CSRF_ENABLED": True})
    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
