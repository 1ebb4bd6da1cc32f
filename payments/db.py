"""Database plumbing shared by the ledger tables: a naming convention and a UTC timestamp type.

`payments` owns its tables through its own declarative base so that it can be lifted into another product
unchanged; `marketplace` reuses the same convention and timestamp type for its own base.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, MetaData, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, stored as JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use payments.db.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    """Whether `transaction` is `outer` or a savepoint nested inside it: work queued until commit (balance
    changes, events, live counters) belongs to the transaction that commits it, and goes with one that rolls back."""
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


class PaymentsBase(DeclarativeBase):
    """Declarative base of the ledger's own tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def take_turns(session: Session, name: str) -> None:
    """Hold PostgreSQL's transaction-scoped advisory lock named `name` until the transaction ends, waiting for
    it first: transactions that take the same name pass this point one at a time. SQLite runs one writer at a
    time anyway, so there it does nothing."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))
