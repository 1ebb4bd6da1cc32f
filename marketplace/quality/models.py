"""Quality control's own state: the manual review queue, consensus rounds, and appeals."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, intpk, timestamp


class ReviewEntry(Base):
    """A label waiting for a person: manual-review projects, and items on which consensus failed.

    The row is deleted when the label is decided, so the queue holds only outstanding work. A reviewer who takes
    a label with `review/next` holds a short claim on it, so two reviewers are not handed the same label.
    """

    __tablename__ = "review_queue"
    __table_args__ = (
        Index("ix_review_queue_project_queued", "project_id", "queued_at"),
        Index("ix_review_queue_due", "due_at"),
    )

    label_id: Mapped[int] = mapped_column(
        ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    #: why a person must look: "review policy" or "no consensus"
    reason: Mapped[str] = mapped_column(String(200))
    queued_at: Mapped[timestamp]
    #: accepted automatically from this instant if nobody decided (the project's review window)
    due_at: Mapped[datetime]
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    claim_expires_at: Mapped[datetime | None]


class ConsensusItem(Base):
    """An item's consensus history: extra labels bought for it, and whether it went to manual review."""

    __tablename__ = "consensus_items"
    __table_args__ = (CheckConstraint("extra_labels >= 0", name="extra_non_negative"),)

    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    extra_labels: Mapped[int] = mapped_column(default=0)
    escalated_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]


class AppealState(enum.StrEnum):
    """Where an appeal stands."""

    OPEN = "open"
    UPHELD = "upheld"
    DENIED = "denied"


class Appeal(Base):
    """An annotator's request to overturn the rejection of one of their labels (one per label)."""

    __tablename__ = "appeals"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'upheld', 'denied')", name="state_known"),
        CheckConstraint("state = 'open' OR decided_at IS NOT NULL", name="decided_has_time"),
        Index("ix_appeals_project_state", "project_id", "state", "created_at"),
    )

    id: Mapped[intpk]
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(
        ForeignKey("annotator_profiles.id", ondelete="CASCADE"), index=True
    )
    comment: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default=AppealState.OPEN.value)
    #: who rejected the label (None for gold and consensus): they may not decide the appeal
    rejected_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[timestamp]
