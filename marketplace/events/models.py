"""The event outbox: events written in the same transaction as the change they describe, and their webhooks."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.db import Base, JSONType, intpk, timestamp


class DeliveryState(enum.StrEnum):
    """Where a webhook delivery stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Event(Base):
    """One fact about a project (or the platform), in commit order within its stream.

    `stream` is the project's id (0 for platform events such as payouts). `seq` is given at commit, under the
    stream's row lock, so a reader that has seen `seq = n` of a stream has seen every smaller one: ids come
    from a sequence at insert time and may commit out of order on PostgreSQL, which a cursor cannot survive.
    There is no foreign key to projects on purpose: events outlive what they describe, and recording one
    must not lock the project row (see marketplace.events.services).
    """

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("stream", "seq"),
        CheckConstraint("stream >= 0", name="stream_non_negative"),
    )

    id: Mapped[intpk]
    stream: Mapped[int]
    project_id: Mapped[int | None]
    type: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: position in the stream, assigned when the recording transaction commits
    seq: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[timestamp]


class EventStream(Base):
    """The last position given out in one stream; its row lock orders the stream's commits."""

    __tablename__ = "event_streams"

    stream: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class WebhookDelivery(Base):
    """One event on its way to one project's webhook URL, retried with exponential backoff."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_project", "project_id", "id"),
    )

    id: Mapped[intpk]
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int]
    url: Mapped[str] = mapped_column(String(2000))
    state: Mapped[str] = mapped_column(String(20), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[timestamp]

    event: Mapped[Event] = relationship()


class WebhookSecret(Base):
    """The key a project's webhook deliveries are signed with (HMAC-SHA256)."""

    __tablename__ = "webhook_secrets"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[timestamp]
    rotated_at: Mapped[datetime | None]
