"""Engine, sessions and the one-transaction-per-request rule.

The session's lifecycle is kept outside the code that uses it: a request, a CLI command or a job opens a session,
hands it to services (which flush but never commit), and commits exactly once at the edge.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, ParamSpec, TypeVar

from flask import Flask, Response, current_app, g
from sqlalchemy import BigInteger, Engine, MetaData, String, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker
from werkzeug.wrappers import Response as WerkzeugResponse

from payments.db import NAMING_CONVENTION, JSONType, UTCDateTime, utcnow, within
from payments.errors import FundsTakenBeforeCommit
from payments.ledger import is_retryable

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "Base",
    "JSONType",
    "get_session",
    "intpk",
    "money_minor",
    "retry_transaction",
    "timestamp",
    "unit_of_work",
    "utcnow",
    "within",
]


class Base(DeclarativeBase):
    """Declarative base of the marketplace's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


intpk = Annotated[int, mapped_column(primary_key=True)]
money_minor = Annotated[int, mapped_column(BigInteger)]
currency_code = Annotated[str, mapped_column(String(3))]
timestamp = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow)]


def build_engine(
    url: str,
    *,
    echo: bool = False,
    sqlite_begin: str | None = "IMMEDIATE",
    pool_size: int = 10,
    max_overflow: int = 20,
) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and real transactions.

    `sqlite_begin` is how SQLite transactions start: IMMEDIATE (the app: writers are serialised at BEGIN),
    DEFERRED, or None for pysqlite's own handling — reads outside any transaction, which suits only a test's
    long-lived inspection session that must always see what the app committed (its savepoints are not atomic).
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine, begin=sqlite_begin)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)


def _configure_sqlite(engine: Engine, *, begin: str | None) -> None:
    # pysqlite's own transaction handling is broken for our needs: it runs reads outside any transaction and
    # turns the release of an outermost SAVEPOINT into a commit. SQLAlchemy's documented fix: take the driver out
    # of transaction handling and emit BEGIN ourselves. IMMEDIATE also takes the write lock at BEGIN, so that a
    # reader never fails to upgrade to a writer under concurrency ("database is locked"); writers wait for the
    # busy timeout instead: the embedded default trades write throughput for correctness.
    if begin not in {"IMMEDIATE", "DEFERRED", None}:
        raise ValueError(f"sqlite_begin must be IMMEDIATE, DEFERRED or None, not {begin!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if begin is not None:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    if begin is not None:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(f"BEGIN {begin}")


class RequestSession(Session):
    """A request's session: it keeps every object it loads for the request's short life.

    SQLAlchemy's identity map holds objects weakly, so a row read early in a request (the caller's project, the
    assignment being submitted) is garbage once no local variable points at it, and the next `session.get` of
    it goes back to the database. A request is short and touches few rows; holding them saves those reads.
    CLI commands and jobs, which may stream many rows, use plain sessions; a request that reads more than
    `KEEP_LIMIT` rows (a paged export) keeps only the first ones, so its memory stays bounded.
    """

    KEEP_LIMIT = 1000


@event.listens_for(RequestSession, "loaded_as_persistent")
def _keep_loaded(session: Session, instance: object) -> None:
    kept: list[object] = session.info.setdefault("loaded", [])
    if len(kept) < RequestSession.KEEP_LIMIT:
        kept.append(instance)


class Database:
    """The engine and session factories of one app."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        self.engine = build_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.request_sessionmaker = sessionmaker(self.engine, expire_on_commit=False, class_=RequestSession)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def init_app(app: Flask) -> None:
    """Build the engine for `app` and commit (or roll back) each request's session once, at the edge."""
    database = Database(
        app.config["DATABASE_URL"],
        echo=app.config.get("SQLALCHEMY_ECHO", False),
        pool_size=app.config.get("DATABASE_POOL_SIZE", 10),
        max_overflow=app.config.get("DATABASE_MAX_OVERFLOW", 20),
    )
    app.extensions["labelforce.db"] = database

    @app.after_request
    def _finish_transaction(response: Response) -> Response:
        session: Session | None = g.pop("db_session", None)
        if session is None:
            return response
        try:
            if response.status_code < 400:
                session.commit()
            else:
                session.rollback()
        except DBAPIError as exc:
            if not is_retryable(exc):
                raise
            # The commit lost to a concurrent transaction (a deadlock found while flushing, say): the answer
            # already built would be a lie. Say so, and that the same request again is safe.
            from marketplace.errors import concurrent_update_response

            session.rollback()
            return concurrent_update_response()
        finally:
            session.close()
        return response

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.rollback()
            session.close()


def database(app: Flask | None = None) -> Database:
    """The `Database` of `app` (or the current app)."""
    app = app or current_app
    db: Database = app.extensions["labelforce.db"]
    return db


def get_session() -> Session:
    """The current request's session, opened on first use and committed once when the request succeeds."""
    if "db_session" not in g:
        g.db_session = database().request_sessionmaker()
    session: Session = g.db_session
    return session


def retry_transaction(view: Callable[P, R], *, attempts: int = 4) -> Callable[P, R]:
    """Run a view's unit of work again, on a fresh session, when the database aborted it as a deadlock victim or
    for a serialization failure, or its commit found the funds a hold reserved taken by a concurrent transaction
    (`payments.deferred_balances`); the work was rolled back, so the whole request body is repeated.

    A view that succeeds is committed here, as soon as it returns, rather than once its response is built: the
    rows its unit of work locked (every lease locks its project's budget balance) are held until the commit, and
    a commit the database refuses for one of those reasons is retried with the rest. A view that answers with an
    error status is only flushed; the end of the request rolls it back.

    Put it directly on the view function (below flask-smorest's decorators), whose arguments it must not change.
    """

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, attempts + 1):
            try:
                result = view(*args, **kwargs)
                if _succeeded(result):
                    get_session().commit()
                else:
                    get_session().flush()
                return result
            except (DBAPIError, FundsTakenBeforeCommit) as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                session: Session | None = g.pop("db_session", None)
                if session is not None:
                    session.rollback()
                    session.close()
                g.pop("auth_user", None)  # loaded by the discarded session
                g.pop("auth_profile", None)
                g.pop("_login_user", None)  # Flask-Login's cached user, likewise
                time.sleep(random.uniform(0, 0.02 * 2**attempt))
        raise AssertionError("unreachable: the loop returns or raises")

    return wrapper


def _succeeded(result: object) -> bool:
    """Whether a view's return value answers with a success status (flask-smorest turns plain data into one)."""
    if isinstance(result, WerkzeugResponse):
        return result.status_code < 400
    if isinstance(result, tuple) and len(result) > 1 and isinstance(result[1], int):
        return result[1] < 400
    return True


@contextmanager
def unit_of_work(app: Flask | None = None) -> Iterator[Session]:
    """One transaction for a CLI command or job: commit on success, roll back on any error."""
    session = database(app).sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
