"""An annotator's own leases after they were opened: reading one, release, heartbeat and expiry.

Ending a lease gives its slot back to the item (one conditional UPDATE), voids its budget hold and records the
event, all in the caller's transaction. Opening leases is `marketplace.work.leasing`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import release_assignment_hold
from marketplace.errors import Conflict, NotFound
from marketplace.events.services import record_event
from marketplace.projects.models import Project, Task
from marketplace.work.models import Assignment, AssignmentState


def _assignment_query(*, lock: bool) -> Select[tuple[Assignment, Project]]:
    stmt = (
        select(Assignment, Project)
        .join(Project, Project.id == Assignment.project_id)
        .where(
            Assignment.id == bindparam("assignment_id"), Assignment.annotator_id == bindparam("annotator_id")
        )
    )
    return stmt.with_for_update(of=Assignment) if lock else stmt


_ASSIGNMENT = {lock: _assignment_query(lock=lock) for lock in (False, True)}


def assignment_for(
    session: Session, *, annotator: AnnotatorProfile, assignment_id: int, lock: bool = True
) -> Assignment:
    """The annotator's own assignment (someone else's is not found), locked for a state change.

    Its project comes in the same query (every caller needs it next) without being locked.
    """
    params = {"assignment_id": assignment_id, "annotator_id": annotator.id}
    row = session.execute(_ASSIGNMENT[lock], params).first()
    if row is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    assignment: Assignment = row[0]
    return assignment


def free_slot(session: Session, assignment: Assignment) -> None:
    """Give the assignment's slot back to its item (gold items have no slots)."""
    if assignment.is_gold:
        return
    session.execute(
        update(Task)
        .where(Task.id == assignment.task_id)
        .values(labels_in_progress=Task.labels_in_progress - 1)
        .execution_options(synchronize_session=False)
    )


def _end_lease(session: Session, assignment: Assignment, *, state: AssignmentState, now: datetime) -> None:
    assignment.state = state.value
    assignment.ended_at = now
    free_slot(session, assignment)
    release_assignment_hold(session, assignment=assignment, reason=f"lease {state.value}")
    record_event(
        session,
        project_id=assignment.project_id,
        type=f"assignment.{state.value}",
        data={
            "assignment_id": assignment.id,
            "task_id": assignment.task_id,
            "annotator_id": assignment.annotator_id,
        },
    )


def release_assignment(
    session: Session, *, annotator: AnnotatorProfile, assignment_id: int, now: datetime
) -> Assignment:
    """Hand a leased item back to the pool and void its budget hold."""
    assignment = assignment_for(session, annotator=annotator, assignment_id=assignment_id)
    if assignment.state == AssignmentState.RELEASED:
        return assignment
    if assignment.state != AssignmentState.LEASED:
        raise Conflict(
            f"This assignment is {assignment.state}; only a live lease can be released.", code="not_leased"
        )
    _end_lease(session, assignment, state=AssignmentState.RELEASED, now=now)
    return assignment


def extend_lease(
    session: Session, *, annotator: AnnotatorProfile, assignment_id: int, now: datetime
) -> Assignment:
    """A heartbeat: extend the lease by its project's lease length, never past its cap."""
    assignment = assignment_for(session, annotator=annotator, assignment_id=assignment_id)
    if assignment.state != AssignmentState.LEASED or assignment.lease_expires_at <= now:
        raise Conflict("The lease has ended; ask for new work.", code="lease_expired")
    project = session.get_one(Project, assignment.project_id)
    assignment.lease_expires_at = min(now + timedelta(seconds=project.lease_seconds), assignment.lease_cap_at)
    return assignment


def expire_leases(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """End leases whose time ran out: their slots return to the pool and their holds are voided."""
    stmt = (
        select(Assignment)
        .where(Assignment.state == AssignmentState.LEASED.value, Assignment.lease_expires_at <= now)
        .order_by(Assignment.lease_expires_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    expired = list(session.scalars(stmt))
    for assignment in expired:
        _end_lease(session, assignment, state=AssignmentState.EXPIRED, now=now)
    return len(expired)
