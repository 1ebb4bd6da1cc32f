"""An annotator's own leases after they were opened: reading one, release, heartbeat and expiry.

Ending a lease gives its slot back to the item (one conditional UPDATE), voids its budget hold and records the
event, all in the caller's transaction. Opening leases is `marketplace.work.leasing`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, case, select, update
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import release_assignment_hold
from marketplace.errors import Conflict, NotFound
from marketplace.events.services import record_event
from marketplace.projects.models import Project, ReviewPolicy, Task, TaskStatus
from marketplace.work.models import Assignment, AssignmentState


def _assignment_query(*, lock: bool) -> Select[tuple[Assignment, Project]]:
    stmt = (
        select(Assignment, Project)
        .join(Project, Project.id == Assignment.project_id)
        .where(
            Assignment.id == bindparam("assignment_id"), Assignment.annotator_id == bindparam("annotator_id")
        )
    )
    # populate_existing: a locked read must show the row as it is now, not a copy this unit of work loaded before
    # the lock (an expiry or a release may have ended the lease since)
    return stmt.with_for_update(of=Assignment).execution_options(populate_existing=True) if lock else stmt


_ASSIGNMENT = {lock: _assignment_query(lock=lock) for lock in (False, True)}

#: FOR NO KEY UPDATE: rows that merely reference the profile (a new assignment, a label) are not held up by it
_LOCK_ANNOTATOR = (
    select(AnnotatorProfile.status, AnnotatorProfile.capacity)
    .where(AnnotatorProfile.id == bindparam("annotator_id"))
    .with_for_update(key_share=True)
)
_LOCKED_ANNOTATORS = "marketplace.work.locked_annotators"


def lock_annotator(session: Session, annotator: AnnotatorProfile) -> tuple[str, int]:
    """Take the annotator's profile row for the rest of the transaction; their (status, capacity) as locked.

    An annotator's own leases and submits pass here first, one at a time: two requests of theirs at once would
    otherwise each count live leases without the other's and lease past their capacity, and a submit that wrote
    the profile after other rows could deadlock with a lease that took them in the other order. Taken once per
    transaction. SQLite runs one writing transaction at a time already (`BEGIN IMMEDIATE`), and locks nothing.
    """
    if session.get_bind().dialect.name != "postgresql":
        return annotator.status, annotator.capacity
    transaction = session.get_transaction()
    held: tuple[object, set[int]] | None = session.info.get(_LOCKED_ANNOTATORS)
    if held is None or held[0] is not transaction:
        held = (transaction, set())
        session.info[_LOCKED_ANNOTATORS] = held
    if annotator.id in held[1]:
        return annotator.status, annotator.capacity
    status, capacity = session.execute(_LOCK_ANNOTATOR, {"annotator_id": annotator.id}).one()
    held[1].add(annotator.id)
    return str(status), int(capacity)


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


#: the project's labels per item, or NULL on a consensus project (whose extra labels the item's history counts)
_PLANNED = (
    select(Project.labels_per_item)
    .where(Project.id == Task.project_id, Project.review_policy != ReviewPolicy.CONSENSUS.value)
    .scalar_subquery()
)
_IN_FLIGHT_AFTER = Task.labels_in_progress - 1 + Task.labels_accepted
#: give a slot back; an item kept above its project's labels per item only by work in flight (a lowered labels
#: per item, an upheld appeal whose freed slot was taken meanwhile) shrinks back towards it
_FREE_SLOT = (
    update(Task)
    .where(Task.id == bindparam("task_id"))
    .values(
        labels_in_progress=Task.labels_in_progress - 1,
        labels_needed=case(
            (_PLANNED.is_(None), Task.labels_needed),
            (Task.labels_needed <= _PLANNED, Task.labels_needed),
            (_IN_FLIGHT_AFTER > _PLANNED, _IN_FLIGHT_AFTER),
            else_=_PLANNED,
        ),
    )
    .returning(Task.status, Task.labels_needed, Task.labels_accepted)
)


def free_slot(session: Session, assignment: Assignment, *, now: datetime) -> None:
    """Give the assignment's slot back to its item (gold items have no slots).

    The item's target follows its project's labels per item when work that kept it higher ends: after labels per
    item went from 3 to 1 on an item with two leases, each lease that expires takes its slot with it, and an item
    whose accepted labels then reach the target is complete.
    """
    if assignment.is_gold:
        return
    status, needed, accepted = session.execute(
        _FREE_SLOT, {"task_id": assignment.task_id}, execution_options={"synchronize_session": False}
    ).one()
    if status == TaskStatus.OPEN and accepted >= needed:
        completed = session.scalars(
            update(Task)
            .where(Task.id == assignment.task_id, Task.status == TaskStatus.OPEN.value)
            .values(status=TaskStatus.COMPLETE.value, completed_at=now)
            .returning(Task),
            execution_options={"synchronize_session": False, "populate_existing": True},
        ).one()
        record_item_completed(session, task=completed, now=now)


def record_item_completed(session: Session, *, task: Task, now: datetime) -> None:
    """Record item.completed for an item that just reached its labels."""
    record_event(
        session,
        project_id=task.project_id,
        type="item.completed",
        data={"task_id": task.id, "external_id": task.external_id, "labels_accepted": task.labels_accepted},
        now=now,
    )


def _end_lease(session: Session, assignment: Assignment, *, state: AssignmentState, now: datetime) -> None:
    assignment.state = state.value
    assignment.ended_at = now
    free_slot(session, assignment, now=now)
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
    # Items in id order: two expiry runs at once (the scheduler's and an operator's) each lock their items' rows
    # until their commit, and in expiry order they could each hold one the other needs next.
    for assignment in sorted(expired, key=lambda a: (a.task_id, a.id)):
        _end_lease(session, assignment, state=AssignmentState.EXPIRED, now=now)
    return len(expired)
