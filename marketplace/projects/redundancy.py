"""Changing a project's labels per item: the items not yet complete follow, never below what they already have.

As on Toloka (changing a pool's overlap) and Label Studio (a project's maximum annotations), a change applies to
the items still open, not only to those imported afterwards:

- an open item's target becomes the new number (plus the extra labels consensus bought for it), but never below
  its labels leased, awaiting a decision or accepted: work already handed out is honoured and paid;
- an item that now has all its accepted labels is complete (`item.completed`);
- on a consensus project, an item whose labels are now all in is decided at once, as its last submit would have
  decided it.

Complete items stay complete: their labels were decided. An item kept above the new number by its labels in flight
shrinks back as each of them ends without being accepted (`marketplace.work.leases.free_slot`). Gold items have
no slots. One statement updates the open
items, so the change costs a pass over them; it is a manager's edit, not part of the work loop.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, exists, func, select, update
from sqlalchemy.orm import Session

from marketplace.projects.models import Project, ReviewPolicy, Task, TaskStatus
from marketplace.quality.models import ConsensusItem
from marketplace.work.leases import record_item_completed
from marketplace.work.models import Assignment, AssignmentState


def change_labels_per_item(
    session: Session, *, project: Project, to: int, now: datetime, fee_bps: int
) -> None:
    """Set the project's labels per item and apply the change to its open items (see the module's rules)."""
    from marketplace.quality.consensus import evaluate_item

    change = to - project.labels_per_item
    project.labels_per_item = to
    if change == 0:
        return
    open_items = (
        Task.project_id == project.id,
        Task.status == TaskStatus.OPEN.value,
        Task.is_gold.is_(False),
    )
    taken = Task.labels_in_progress + Task.labels_accepted
    # The new number plus the extra labels consensus bought for the item: computed afresh, not moved by the
    # change, so that lowering (held up by work in flight) and raising again lands where it should.
    extra = func.coalesce(
        select(ConsensusItem.extra_labels).where(ConsensusItem.task_id == Task.id).scalar_subquery(), 0
    )
    planned = to + extra
    session.execute(
        update(Task)
        .where(*open_items)
        .values(labels_needed=case((planned >= taken, planned), else_=taken))
        .execution_options(synchronize_session=False)
    )
    completed = session.scalars(
        update(Task)
        .where(*open_items, Task.labels_accepted >= Task.labels_needed)
        .values(status=TaskStatus.COMPLETE.value, completed_at=now)
        .returning(Task)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).all()
    for task in sorted(completed, key=lambda t: t.id):
        record_item_completed(session, task=task, now=now)
    if change < 0 and project.review_policy == ReviewPolicy.CONSENSUS:
        leased = exists().where(
            Assignment.task_id == Task.id, Assignment.state == AssignmentState.LEASED.value
        )
        all_in = session.scalars(
            select(Task.id)
            .where(*open_items, Task.labels_in_progress > 0, taken == Task.labels_needed, ~leased)
            .order_by(Task.id)
        ).all()
        for task_id in all_in:
            evaluate_item(session, project=project, task_id=task_id, now=now, fee_bps=fee_bps)
    session.flush()
