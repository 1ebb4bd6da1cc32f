"""The health check: each active project's progress, with project.at_risk and budget.low fired on changes.

The last state is kept per project, so an event says "this changed" (at risk now, or no longer; budget short
now, or covered again) instead of repeating itself on every run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import redis as redis_lib
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.events.services import record_event
from marketplace.projects.models import Project, ProjectStatus
from marketplace.throughput.models import ProjectHealth
from marketplace.throughput.services import Progress, project_progress


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def record_health(session: Session, *, progress: Progress, now: datetime) -> list[str]:
    """Compare a project's progress with its last known health and record the events of what changed."""
    project = progress.project
    health = session.get(ProjectHealth, project.id, with_for_update=True)
    if health is None:
        health = ProjectHealth(
            project_id=project.id, at_risk=False, reasons=[], budget_low=False, checked_at=now
        )
        session.add(health)
    fired: list[str] = []
    reasons = sorted(progress.risks)
    if progress.at_risk != health.at_risk or (progress.at_risk and reasons != sorted(health.reasons or [])):
        record_event(
            session,
            project_id=project.id,
            type="project.at_risk",
            data={
                "at_risk": progress.at_risk,
                "reasons": reasons,
                "eta_at_pace": _iso(progress.eta_at_pace),
                "eta_at_capacity": _iso(progress.eta_at_capacity),
                "deadline": project.deadline_at.isoformat(),
            },
            now=now,
        )
        fired.append("project.at_risk")
    budget_low = "budget_short" in progress.risks
    if budget_low != health.budget_low:
        record_event(
            session,
            project_id=project.id,
            type="budget.low",
            data={
                "low": budget_low,
                "available": progress.budget["available"],
                "needed_for_remaining": progress.cost_of_remaining.to_json(),
                "remaining_labels": progress.labels_to_submit,
            },
            now=now,
        )
        fired.append("budget.low")
    health.at_risk = progress.at_risk
    health.reasons = reasons
    health.budget_low = budget_low
    health.checked_at = now
    session.flush()
    return fired


def check_projects(
    session: Session,
    *,
    now: datetime,
    fee_bps: int,
    seen_window: timedelta,
    client: redis_lib.Redis | None,
    project_id: int | None = None,
) -> int:
    """Check every active project (or one); how many events were recorded."""
    stmt = select(Project).where(Project.status == ProjectStatus.ACTIVE.value).order_by(Project.id)
    if project_id is not None:
        stmt = stmt.where(Project.id == project_id)
    fired = 0
    for project in session.scalars(stmt).all():
        progress = project_progress(
            session, project=project, now=now, fee_bps=fee_bps, seen_window=seen_window, client=client
        )
        fired += len(record_health(session, progress=progress, now=now))
    return fired
