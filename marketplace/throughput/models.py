"""What the health check last said about each project, so that its events fire on changes only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, JSONType


class ProjectHealth(Base):
    """The risk state the last health check saw for one project."""

    __tablename__ = "project_health"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    at_risk: Mapped[bool] = mapped_column(default=False)
    #: the codes of the reasons, sorted (a change of reasons is a change of state)
    reasons: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    budget_low: Mapped[bool] = mapped_column(default=False)
    checked_at: Mapped[datetime]
