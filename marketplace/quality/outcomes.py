"""Carrying out a quality decision with everything that goes with it: the event, the counters, the queue.

`marketplace.work.decisions` moves the slots and the money; these wrappers add what quality control owes the
rest of the system in the same transaction: the outbox event, the live throughput counter, the removal of the
label from the review queue, and the accuracy evidence.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from marketplace.events.services import record_event
from marketplace.projects.models import Project, Task, TaskStatus
from marketplace.quality.accuracy import record_outcome
from marketplace.quality.models import ReviewEntry
from marketplace.throughput.counters import record_label_accepted
from marketplace.work.decisions import accept_label, reject_label
from marketplace.work.leases import record_item_completed
from marketplace.work.models import Label


def lock_task(session: Session, task_id: int) -> Task:
    """The item's row, locked and re-read: its counters are about to change."""
    # populate_existing: an instance already in the session would otherwise keep the values it was loaded with,
    # and a counter changed from those would overwrite a concurrent lease's change.
    # key_share (FOR NO KEY UPDATE on PostgreSQL): inserting a label takes a KEY SHARE lock on its item, so two
    # annotators submitting the item's last labels at once would deadlock on a plain FOR UPDATE.
    return session.get_one(Task, task_id, with_for_update={"key_share": True}, populate_existing=True)


def accept_and_record(
    session: Session,
    *,
    label: Label,
    now: datetime,
    source: str,
    reviewer_id: int | None = None,
    reason: str | None = None,
    pay: bool = True,
    overturn: bool = False,
    accuracy_weight: float = 0.0,
) -> Label:
    """Accept (and pay) a label, dequeue it, add its evidence, and record label.accepted (and item.completed)."""
    task = session.get_one(Task, label.task_id) if label.is_gold else lock_task(session, label.task_id)
    was_open = task.status == TaskStatus.OPEN
    accept_label(
        session, label=label, now=now, reviewer_id=reviewer_id, reason=reason, pay=pay, overturn=overturn
    )
    _record_decision(
        session,
        label=label,
        correct=True,
        weight=accuracy_weight,
        now=now,
        data={"value": label.value, "source": source, "paid": pay},
    )
    if was_open and task.status == TaskStatus.COMPLETE and not label.is_gold:
        record_item_completed(session, task=task, now=now)
    record_label_accepted(session, label=label, now=now)
    return label


def _record_decision(
    session: Session, *, label: Label, correct: bool, weight: float, now: datetime, data: dict[str, Any]
) -> None:
    """What follows either decision: the label leaves the review queue, its evidence counts, the event is written."""
    session.execute(delete(ReviewEntry).where(ReviewEntry.label_id == label.id))
    project = session.get_one(Project, label.project_id)
    record_outcome(
        session,
        annotator_id=label.annotator_id,
        skill_id=project.skill_id,
        correct=correct,
        weight=weight,
        gold=label.is_gold,
    )
    record_event(
        session,
        project_id=label.project_id,
        type="label.accepted" if correct else "label.rejected",
        data={"label_id": label.id, "task_id": label.task_id, "annotator_id": label.annotator_id, **data},
        now=now,
    )


def reject_and_record(
    session: Session,
    *,
    label: Label,
    reason: str,
    now: datetime,
    source: str,
    reviewer_id: int | None = None,
    accuracy_weight: float = 0.0,
) -> Label:
    """Reject a label with a reason, dequeue it, add its evidence, and record label.rejected."""
    if not label.is_gold:
        lock_task(session, label.task_id)
    reject_label(session, label=label, reason=reason, now=now, reviewer_id=reviewer_id)
    _record_decision(
        session,
        label=label,
        correct=False,
        weight=accuracy_weight,
        now=now,
        data={"reason": label.reason, "source": source},
    )
    return label
