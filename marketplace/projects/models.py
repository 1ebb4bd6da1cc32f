"""Labeling projects and their items (tasks)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Computed, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.annotators.models import Skill
from marketplace.db import Base, JSONType, currency_code, intpk, money_minor, timestamp


class ProjectStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class ReviewPolicy(enum.StrEnum):
    GOLD = "gold"
    CONSENSUS = "consensus"
    MANUAL = "manual"


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETE = "complete"


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("pay_per_label_minor >= 0", name="pay_non_negative"),
        CheckConstraint("budget_minor >= 0", name="budget_non_negative"),
        CheckConstraint("labels_per_item >= 1", name="labels_per_item_positive"),
        CheckConstraint("min_level BETWEEN 1 AND 5", name="min_level_range"),
        CheckConstraint("lease_seconds > 0", name="lease_positive"),
        CheckConstraint("status IN ('draft', 'active', 'paused', 'completed')", name="status_known"),
        CheckConstraint("review_policy IN ('gold', 'consensus', 'manual')", name="review_policy_known"),
    )

    id: Mapped[intpk]
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    label_schema: Mapped[dict[str, Any]]
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id"), index=True)
    min_level: Mapped[int] = mapped_column(default=1)
    #: the most the project pays an annotator for one accepted label
    pay_per_label_minor: Mapped[money_minor]
    currency: Mapped[currency_code]
    #: the budget the manager intends to spend; money becomes spendable when the project is funded
    budget_minor: Mapped[money_minor] = mapped_column(default=0)
    labels_per_item: Mapped[int] = mapped_column(default=1)
    review_policy: Mapped[str] = mapped_column(String(20), default=ReviewPolicy.MANUAL.value)
    review_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lease_seconds: Mapped[int] = mapped_column(default=1800)
    deadline_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20), default=ProjectStatus.DRAFT.value)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[timestamp]
    updated_at: Mapped[timestamp]

    skill: Mapped[Skill] = relationship()


class Task(Base):
    """An item to label, needing `labels_needed` labels from distinct annotators (its slots)."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        CheckConstraint("labels_needed >= 1", name="labels_needed_positive"),
        CheckConstraint("labels_accepted >= 0", name="accepted_non_negative"),
        CheckConstraint("labels_in_progress >= 0", name="in_progress_non_negative"),
        # live leases + labels awaiting a decision + accepted labels never exceed the item's slots
        CheckConstraint("labels_in_progress + labels_accepted <= labels_needed", name="slots_not_exceeded"),
        CheckConstraint("status IN ('open', 'complete')", name="status_known"),
    )

    id: Mapped[intpk]
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(default=0)
    #: the known answer of a gold item (any JSON value of the label schema), None for ordinary items
    gold_answer: Mapped[Any] = mapped_column(JSONType, nullable=True)
    is_gold: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default=TaskStatus.OPEN.value)
    labels_needed: Mapped[int] = mapped_column(default=1)
    labels_accepted: Mapped[int] = mapped_column(default=0)
    labels_in_progress: Mapped[int] = mapped_column(default=0)
    #: slots neither leased, awaiting a decision, nor accepted — kept by the database itself
    free_slots: Mapped[int] = mapped_column(
        Computed("labels_needed - labels_in_progress - labels_accepted", persisted=True)
    )
    created_at: Mapped[timestamp]
    completed_at: Mapped[datetime | None]

    project: Mapped[Project] = relationship()


# The spot queue: a project's items with a free slot, most important first, oldest first — the order next-task
# reads. Partial, so that items whose slots are all leased or awaiting review are not in it: next-task never walks
# over them, however many there are.
# (SQLite uses a partial index only when its terms compare a column with a constant, as the query writes them:
# hence the stored `free_slots` column, and booleans written 0 and 1 there.)
_FREE_SLOT = "status = 'open' AND is_gold = {false} AND free_slots > 0"
Index(
    "ix_tasks_free_slots",
    Task.project_id,
    Task.priority.desc(),
    Task.id,
    postgresql_where=text(_FREE_SLOT.format(false="false")),
    sqlite_where=text(_FREE_SLOT.format(false="0")),
)
