"""Assignments (a leased slot of a task for one annotator) and the labels submitted for them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.db import Base, JSONType, currency_code, intpk, money_minor, timestamp


class AssignmentState(enum.StrEnum):
    LEASED = "leased"
    SUBMITTED = "submitted"
    RELEASED = "released"
    EXPIRED = "expired"


class ReviewState(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        # an annotator never gets the same item twice (released and expired leases included)
        UniqueConstraint("task_id", "annotator_id"),
        CheckConstraint("price_minor >= 0 AND fee_minor >= 0", name="amounts_non_negative"),
        CheckConstraint("state IN ('leased', 'submitted', 'released', 'expired')", name="state_known"),
        Index("ix_assignments_annotator_state", "annotator_id", "state"),
        Index("ix_assignments_state_expiry", "state", "lease_expires_at"),
    )

    id: Mapped[intpk]
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator_profiles.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(20), default=AssignmentState.LEASED.value)
    #: what the annotator earns if the label is accepted
    price_minor: Mapped[money_minor]
    #: the platform's fee on top, held from the project budget with the price
    fee_minor: Mapped[money_minor] = mapped_column(default=0)
    currency: Mapped[currency_code]
    #: the ledger transaction of the budget hold, resolved when the label is decided or the lease ends
    hold_transaction_id: Mapped[int | None]
    source: Mapped[str] = mapped_column(String(20), default="plan")
    is_gold: Mapped[bool] = mapped_column(default=False)
    leased_at: Mapped[timestamp]
    lease_expires_at: Mapped[datetime]
    #: heartbeats extend the lease up to this instant and no further
    lease_cap_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    #: the assignment whose "submit and next" leased this one (a retried submit answers with the same next)
    follows_assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL"), unique=True
    )


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint("time_spent_ms >= 0", name="time_non_negative"),
        CheckConstraint("review_state IN ('pending', 'accepted', 'rejected')", name="review_state_known"),
        Index("ix_labels_project_review", "project_id", "review_state"),
        # an annotator's latest labels (their measured speed, on every submit) and everything by annotator
        Index("ix_labels_annotator_latest", "annotator_id", "id"),
    )

    id: Mapped[intpk]
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator_profiles.id", ondelete="CASCADE"))
    value: Mapped[Any] = mapped_column(JSONType)
    time_spent_ms: Mapped[int] = mapped_column(default=0)
    is_gold: Mapped[bool] = mapped_column(default=False)
    review_state: Mapped[str] = mapped_column(String(20), default=ReviewState.PENDING.value)
    reason: Mapped[str | None] = mapped_column(String(1000))
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None]
    submit_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[timestamp]

    assignment: Mapped[Assignment] = relationship()


class ProjectWorker(Base):
    """One annotator's standing in one project: counters that keep next-task constant-time, and any block."""

    __tablename__ = "project_workers"
    __table_args__ = (
        CheckConstraint("leased >= gold_leased AND gold_leased >= 0", name="counts_consistent"),
        CheckConstraint("gold_correct >= 0 AND gold_wrong >= 0", name="gold_non_negative"),
        CheckConstraint("fast_answers >= 0", name="fast_answers_non_negative"),
    )

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(
        ForeignKey("annotator_profiles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    leased: Mapped[int] = mapped_column(default=0)
    gold_leased: Mapped[int] = mapped_column(default=0)
    gold_correct: Mapped[int] = mapped_column(default=0)
    gold_wrong: Mapped[int] = mapped_column(default=0)
    #: labels submitted faster than the project's `min_seconds_per_label` since the last unblock
    fast_answers: Mapped[int] = mapped_column(default=0, server_default="0")
    #: set when the annotator may no longer work on the project: failed gold items, too many fast answers, or a
    #: manager's decision (`marketplace.quality.workers`)
    blocked_at: Mapped[datetime | None]
    blocked_reason: Mapped[str | None] = mapped_column(String(500))
    #: what blocked them: `gold`, `fast_answers` or `manager` (`marketplace.quality.workers`)
    blocked_source: Mapped[str | None] = mapped_column(String(20))
    #: who blocked them; None when a quality rule did
    blocked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
