"""Read-only aggregates behind the pages, each one SQL statement whatever the number of rows or projects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from marketplace.projects.models import Task, TaskStatus
from marketplace.work.models import Assignment, AssignmentState, Label


@dataclass(frozen=True)
class Progress:
    """A project's ordinary items (gold items left out) and their label slots."""

    items: int = 0
    items_complete: int = 0
    labels_needed: int = 0
    labels_accepted: int = 0
    #: live leases plus labels awaiting a decision
    labels_in_progress: int = 0

    @property
    def labels_open(self) -> int:
        """Slots nobody works on yet."""
        return max(self.labels_needed - self.labels_accepted - self.labels_in_progress, 0)

    @property
    def labels_remaining(self) -> int:
        """Slots not accepted yet."""
        return max(self.labels_needed - self.labels_accepted, 0)


def progress_by_project(session: Session, project_ids: Iterable[int]) -> dict[int, Progress]:
    """project id → its progress, for all the ids in one grouped query."""
    ids = list(project_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(
            Task.project_id,
            func.count(),
            func.coalesce(func.sum(case((Task.status == TaskStatus.COMPLETE.value, 1), else_=0)), 0),
            func.coalesce(func.sum(Task.labels_needed), 0),
            func.coalesce(func.sum(Task.labels_accepted), 0),
            func.coalesce(func.sum(Task.labels_in_progress), 0),
        )
        .where(Task.project_id.in_(ids), Task.is_gold.is_(False))
        .group_by(Task.project_id)
    ).all()
    return {row[0]: Progress(*(int(v) for v in row[1:])) for row in rows}


def label_states(session: Session, project_id: int) -> dict[str, int]:
    """review state → number of the project's labels."""
    return {
        state: int(count)
        for state, count in session.execute(
            select(Label.review_state, func.count())
            .where(Label.project_id == project_id)
            .group_by(Label.review_state)
        ).tuples()
    }


def live_leases(session: Session, project_id: int) -> int:
    """How many of the project's items are being labelled right now."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.project_id == project_id, Assignment.state == AssignmentState.LEASED.value)
        )
        or 0
    )


def _hour_number(session: Session, column: ColumnElement[datetime]) -> ColumnElement[int]:
    # Hours since the epoch, in the database: SQLite keeps UTC timestamps as text, PostgreSQL as timestamptz.
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", column), Integer) // 3600
    return cast(func.floor(func.extract("epoch", column) / 3600), Integer)


def hour_start(moment: datetime) -> datetime:
    """The start of the hour `moment` is in."""
    return moment.replace(minute=0, second=0, microsecond=0)


def labels_per_hour(session: Session, *, project_id: int, now: datetime, hours: int = 24) -> list[int]:
    """Labels submitted in each of the last `hours` hours, oldest first (the last is the current hour)."""
    first = hour_start(now) - timedelta(hours=hours - 1)
    bucket = _hour_number(session, Label.created_at).label("hour")
    counts = dict(
        session.execute(
            select(bucket, func.count())
            .where(Label.project_id == project_id, Label.created_at >= first)
            .group_by("hour")
        ).all()
    )
    first_hour = int(first.timestamp()) // 3600
    return [int(counts.get(first_hour + i, 0)) for i in range(hours)]
