"""Skills and the annotators' marketplace profiles."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.db import Base, currency_code, intpk, money_minor, timestamp


class AnnotatorStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class Skill(Base):
    __tablename__ = "skills"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[timestamp]


class AnnotatorProfile(Base):
    """A worker in the marketplace: asking price, capacity, speed and track record."""

    __tablename__ = "annotator_profiles"
    __table_args__ = (
        CheckConstraint("price_minor >= 0", name="price_non_negative"),
        CheckConstraint("capacity >= 0", name="capacity_non_negative"),
        CheckConstraint("labels_per_hour > 0", name="speed_positive"),
        CheckConstraint("status IN ('active', 'paused')", name="status_known"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    price_minor: Mapped[money_minor]
    currency: Mapped[currency_code]
    capacity: Mapped[int] = mapped_column(default=5)
    status: Mapped[str] = mapped_column(String(20), default=AnnotatorStatus.ACTIVE.value)
    #: the speed the annotator declares; measured speed replaces it once known
    labels_per_hour: Mapped[float] = mapped_column(default=30.0)
    measured_labels_per_hour: Mapped[float | None]
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[timestamp]

    skills: Mapped[list[AnnotatorSkill]] = relationship(
        back_populates="annotator", cascade="all, delete-orphan", order_by="AnnotatorSkill.skill_id"
    )


class AnnotatorSkill(Base):
    """A skill at a level (1–5), with a Beta(α, β) posterior of the annotator's accuracy in it."""

    __tablename__ = "annotator_skills"
    __table_args__ = (
        CheckConstraint("level BETWEEN 1 AND 5", name="level_range"),
        CheckConstraint("accuracy_alpha > 0 AND accuracy_beta > 0", name="beta_positive"),
    )

    annotator_id: Mapped[int] = mapped_column(
        ForeignKey("annotator_profiles.id", ondelete="CASCADE"), primary_key=True
    )
    skill_id: Mapped[int] = mapped_column(
        ForeignKey("skills.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    level: Mapped[int]
    #: Beta prior Beta(2, 1): a newcomer is assumed fairly (≈ 0.67) but not certainly accurate
    accuracy_alpha: Mapped[float] = mapped_column(default=2.0)
    accuracy_beta: Mapped[float] = mapped_column(default=1.0)
    gold_seen: Mapped[int] = mapped_column(default=0)
    gold_correct: Mapped[int] = mapped_column(default=0)

    annotator: Mapped[AnnotatorProfile] = relationship(back_populates="skills")
    skill: Mapped[Skill] = relationship()

    @property
    def accuracy(self) -> float:
        """The posterior mean accuracy."""
        return self.accuracy_alpha / (self.accuracy_alpha + self.accuracy_beta)
