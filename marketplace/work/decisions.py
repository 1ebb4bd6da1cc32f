"""Submitting a label, and the two decisions on it: accept (pay) and reject (free the slot, void the hold).

Review policies (marketplace.quality) decide *which* decision; these functions carry it out, each exactly once:
a decided label is never decided again except by an appeal (`accept_label(..., overturn=True)`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import pay_for_label, release_assignment_hold
from marketplace.errors import Conflict
from marketplace.projects.label_schema import validate_value
from marketplace.projects.models import Project, Task, TaskStatus
from marketplace.work.leases import assignment_for, free_slot, lock_annotator
from marketplace.work.models import Assignment, AssignmentState, Label, ReviewState


def submit_label(
    session: Session,
    *,
    annotator: AnnotatorProfile,
    assignment_id: int,
    value: Any,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Label, bool]:
    """Record the label of a live lease; a retry with the same key returns the first label. (label, created)."""
    lock_annotator(session, annotator)  # first: what the submit writes next follows the profile (see there)
    assignment = assignment_for(session, annotator=annotator, assignment_id=assignment_id)
    if assignment.state == AssignmentState.SUBMITTED:
        label = session.scalars(select(Label).where(Label.assignment_id == assignment.id)).one()
        if idempotency_key is not None and label.submit_key == idempotency_key:
            project = session.get_one(Project, assignment.project_id)
            if validate_value(project.label_schema, value) != label.value:
                raise Conflict(
                    "This Idempotency-Key was used to submit another value; a retry sends the same body.",
                    code="idempotency_conflict",
                    details={"submitted": label.value},
                )
            return label, False
        raise Conflict(
            "This assignment was already submitted (send the same Idempotency-Key to replay it).",
            code="already_submitted",
        )
    if assignment.state != AssignmentState.LEASED or assignment.lease_expires_at <= now:
        raise Conflict("The lease has expired; the item went back to the pool.", code="lease_expired")
    project = session.get_one(Project, assignment.project_id)
    value = validate_value(project.label_schema, value)
    assignment.state = AssignmentState.SUBMITTED.value
    assignment.submitted_at = now
    assignment.ended_at = now
    elapsed_ms = max(0, int((now - assignment.leased_at).total_seconds() * 1000))
    label = Label(
        assignment_id=assignment.id,
        task_id=assignment.task_id,
        project_id=assignment.project_id,
        annotator_id=annotator.id,
        value=value,
        time_spent_ms=elapsed_ms,
        is_gold=assignment.is_gold,
        review_state=ReviewState.PENDING.value,
        submit_key=idempotency_key,
        created_at=now,
    )
    session.add(label)
    session.flush()  # generate label.id: review policies and the ledger refer to it
    return label, True


def _task_counts(session: Session, task_id: int, **changes: Any) -> None:
    session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(**changes)
        .execution_options(synchronize_session="fetch")
    )


def accept_label(
    session: Session,
    *,
    label: Label,
    now: datetime,
    reviewer_id: int | None = None,
    reason: str | None = None,
    pay: bool = True,
    overturn: bool = False,
) -> Label:
    """Accept a pending label (or, with `overturn`, a rejected one on appeal) and pay its annotator."""
    expected = ReviewState.REJECTED if overturn else ReviewState.PENDING
    if label.review_state == ReviewState.ACCEPTED:
        return label
    if label.review_state != expected:
        raise Conflict(f"This label is {label.review_state}.", code="already_decided")
    assignment = session.get_one(Assignment, label.assignment_id)
    label.review_state = ReviewState.ACCEPTED.value
    label.reviewed_by_id = reviewer_id
    label.reviewed_at = now
    label.reason = reason
    if not label.is_gold:
        # populate_existing: a Task already in this session may hold counters read before the lock.
        # key_share: a label insert takes FOR KEY SHARE on its item; FOR NO KEY UPDATE does not conflict with it,
        # a plain FOR UPDATE would (and deadlocks with a concurrent submit of the same item).
        task = session.get_one(
            Task, label.task_id, with_for_update={"key_share": True}, populate_existing=True
        )
        if overturn:
            # The slot was freed at rejection and may have been filled since: the item then simply has one
            # more accepted label than planned, so its target grows with it.
            task.labels_needed = max(task.labels_needed, task.labels_in_progress + task.labels_accepted + 1)
        else:
            task.labels_in_progress -= 1
        task.labels_accepted += 1
        if task.labels_accepted >= task.labels_needed and task.status == TaskStatus.OPEN:
            task.status = TaskStatus.COMPLETE.value
            task.completed_at = now
    if pay:
        pay_for_label(session, assignment=assignment, label_id=label.id)
    else:
        release_assignment_hold(session, assignment=assignment, reason="accepted unpaid")
    session.flush()
    return label


def reject_label(
    session: Session, *, label: Label, reason: str, now: datetime, reviewer_id: int | None = None
) -> Label:
    """Reject a pending label with a reason: its slot opens again (unless the item is complete), its hold is voided."""
    if not reason or not reason.strip():
        raise Conflict("A rejection needs a reason.", code="reason_required")
    if label.review_state == ReviewState.REJECTED:
        return label
    if label.review_state != ReviewState.PENDING:
        raise Conflict(f"This label is {label.review_state}.", code="already_decided")
    assignment = session.get_one(Assignment, label.assignment_id)
    label.review_state = ReviewState.REJECTED.value
    label.reason = reason.strip()
    label.reviewed_by_id = reviewer_id
    label.reviewed_at = now
    free_slot(session, assignment, now=now)
    release_assignment_hold(session, assignment=assignment, reason=f"label {label.id} rejected")
    session.flush()
    return label
