"""Test fixtures: a real database per run (SQLite or PostgreSQL, chosen by TEST_DATABASE_URL) built by running the
migrations, a clean state for every test, real Redis under a namespace of the run's own, and the app and client.

TEST_DATABASE_URL=sqlite (the default) or a PostgreSQL server URL such as
postgresql+psycopg://postgres@127.0.0.1:5432/postgres: a database `labelforce_test_<random>` is created on that
server for the run and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic import command
from alembic.config import Config
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import payments.payout_models  # noqa: F401  (its tables are cleaned between tests too)
from marketplace.accounts.security import set_password_hasher
from marketplace.app import create_app
from marketplace.db import Base, build_engine
from payments.db import PaymentsBase

ROOT = Path(__file__).resolve().parent.parent
# argon2 at its production cost takes ~50 ms a hash; the suite creates thousands of users.
set_password_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
RUN_ID = uuid.uuid4().hex[:10]


def _backend() -> str:
    raw = os.environ.get("TEST_DATABASE_URL", "sqlite")
    return "sqlite" if raw.startswith("sqlite") else "postgresql"


def alembic_config(url: str) -> Config:
    """An Alembic config that migrates `url` (used by the fixtures and the migration tests)."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["skip_logging"] = True
    return cfg


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _backend() == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (run with TEST_DATABASE_URL=postgresql+psycopg://...)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def backend() -> str:
    """'sqlite' or 'postgresql': the database this run tests against."""
    return _backend()


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database migrated to head once per run: a template file (SQLite) or a database of its own (PostgreSQL)."""
    if _backend() == "sqlite":
        path = tmp_path_factory.mktemp("db") / "template.db"
        url = f"sqlite:///{path}"
        command.upgrade(alembic_config(url), "head")
        yield url
        return
    server_url = make_url(os.environ["TEST_DATABASE_URL"])
    name = f"labelforce_test_{RUN_ID}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name).render_as_string(hide_password=False)
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


_pg_engine: Engine | None = None


def _all_tables() -> list[str]:
    tables = [t.name for t in Base.metadata.sorted_tables] + [
        t.name for t in PaymentsBase.metadata.sorted_tables
    ]
    return [*tables, "alembic_version"]


@pytest.fixture
def database_url(template_database: str, tmp_path: Path) -> Iterator[str]:
    """A database in its freshly migrated state, for this test alone."""
    if _backend() == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(make_url(template_database).database or "", path)
        yield f"sqlite:///{path}"
        return
    global _pg_engine  # noqa: PLW0603  (one engine for the run; the pool is reused across tests)
    if _pg_engine is None:
        _pg_engine = build_engine(template_database)
    # DELETE beats TRUNCATE by far on a few dozen nearly empty tables (TRUNCATE rewrites each one); replica mode
    # skips the triggers that keep the ledger append-only, which cleaning up between tests must get past.
    tables = [t for t in reversed(_all_tables()) if t != "alembic_version"]
    with _pg_engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for table in tables:
            conn.execute(text(f'DELETE FROM "{table}"'))  # noqa: S608  (our own table names)
        conn.execute(
            text(
                "SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND n.nspname = 'public'"
            )
        )
    yield template_database


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine for arranging and inspecting this test's database (on SQLite its reads always see the app's
    latest commits; code whose atomicity is under test runs on the app's engine)."""
    eng = build_engine(database_url, sqlite_begin=None)
    yield eng
    eng.dispose()


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """A session for tests that call services directly; commit when the edge would."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this run's own; its keys are deleted at the end."""
    prefix = f"lf:test:{RUN_ID}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_prefix(redis_namespace: str, request: pytest.FixtureRequest) -> str:
    """A prefix for this test alone, inside the run's namespace."""
    return f"{redis_namespace}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def app_config(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    """Settings of the app under test; tests may change them before asking for `app`."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": False,
    }


@pytest.fixture
def make_app() -> Iterator[Any]:
    """Build further apps with changed settings; their connection pools are closed afterwards."""
    built: list[Flask] = []

    def _make(config: dict[str, Any]) -> Flask:
        application = create_app(config)
        built.append(application)
        return application

    yield _make
    for application in built:
        application.extensions["labelforce.db"].engine.dispose()
        client = application.extensions.get("labelforce.redis")
        if client is not None:
            client.close()


@pytest.fixture
def app(app_config: dict[str, Any], make_app: Any) -> Flask:
    return make_app(app_config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()
