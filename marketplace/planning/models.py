"""The routing plan as stored: ranked offers per annotator and a record of each planning run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, currency_code, intpk, money_minor, timestamp


class PlanRun(Base):
    """One run of the planner: what it saw, what it placed, what it cost and how long it took."""

    __tablename__ = "plan_runs"

    id: Mapped[intpk]
    started_at: Mapped[timestamp]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int] = mapped_column(default=0)
    method: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(100), default="all")
    tasks: Mapped[int] = mapped_column(default=0)
    annotators: Mapped[int] = mapped_column(default=0)
    slots_open: Mapped[int] = mapped_column(default=0)
    slots_filled: Mapped[int] = mapped_column(default=0)
    #: the summed price of the offers, per currency
    cost: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Offer(Base):
    """A slot of a task the plan chose for an annotator, ranked among that annotator's offers."""

    __tablename__ = "offers"
    __table_args__ = (
        UniqueConstraint("annotator_id", "task_id"),
        Index("ix_offers_annotator_rank", "annotator_id", "rank"),
    )

    id: Mapped[intpk]
    plan_run_id: Mapped[int] = mapped_column(ForeignKey("plan_runs.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator_profiles.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int]
    price_minor: Mapped[money_minor]
    currency: Mapped[currency_code]
    created_at: Mapped[timestamp]
