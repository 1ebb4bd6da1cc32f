"""Consensus: an item's labels are decided together once all its slots have a submitted label.

The largest group of agreeing labels wins if it is the only largest group and holds at least
`agreement_threshold` of the votes: its labels are accepted, the others rejected ("disagreed with consensus").
The item is marked complete *before* those decisions so that a rejection does not reopen a slot the majority
already answered. Without such a majority, one more label is bought (dynamic overlap: labels_needed + 1) while
fewer than `max_extra_labels` were bought for the item and the budget can pay for one more; otherwise the item's
labels go to manual review, and so does every later label on it.

The item's row is locked first: the last two labels of an item submitted at the same moment are then decided
by whichever transaction comes second, which sees the first one's label.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from marketplace.billing.services import affordable_slots
from marketplace.projects.label_schema import values_agree
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, Task, TaskStatus
from marketplace.quality.accuracy import CONSENSUS_WEIGHT
from marketplace.quality.models import ConsensusItem, ReviewEntry
from marketplace.quality.outcomes import (
    accept_and_record,
    lock_task,
    record_item_completed,
    reject_and_record,
)
from marketplace.quality.review import queue_for_review
from marketplace.work.models import Label, ReviewState

DISSENT_REASON = "disagreed with consensus"
NO_CONSENSUS_REASON = "no consensus"


def agreeing_groups(schema: dict[str, object], labels: list[Label]) -> list[list[Label]]:
    """The labels partitioned into groups of agreeing values, largest first (ties in order of first label)."""
    groups: list[list[Label]] = []
    for label in labels:
        for group in groups:
            if values_agree(schema, group[0].value, label.value):
                group.append(label)
                break
        else:
            groups.append([label])
    return sorted(groups, key=len, reverse=True)


def _voting_labels(session: Session, task_id: int) -> list[Label]:
    """The item's labels that take part in consensus: pending or accepted, not gold, not sent to a reviewer."""
    in_review = exists().where(ReviewEntry.label_id == Label.id)
    return list(
        session.scalars(
            select(Label)
            .where(
                Label.task_id == task_id,
                Label.is_gold.is_(False),
                Label.review_state.in_([ReviewState.PENDING.value, ReviewState.ACCEPTED.value]),
                ~in_review,
            )
            .order_by(Label.id)
        )
    )


def evaluate_item(session: Session, *, project: Project, task_id: int, now: datetime, fee_bps: int) -> str:
    """Decide the item's labels if all are in: "decided", "extended", "escalated" or "waiting"."""
    task = lock_task(session, task_id)
    item = session.get(ConsensusItem, task_id)
    if item is None:
        item = ConsensusItem(task_id=task_id, extra_labels=0)
        session.add(item)
    labels = _voting_labels(session, task_id)
    pending = [label for label in labels if label.review_state == ReviewState.PENDING]
    if not pending:
        return "waiting"
    if item.escalated_at is not None:
        for label in pending:
            queue_for_review(session, label=label, project=project, now=now, reason=NO_CONSENSUS_REASON)
        return "escalated"
    if task.status == TaskStatus.OPEN and len(labels) < task.labels_needed:
        return "waiting"
    groups = agreeing_groups(project.label_schema, labels)
    threshold = float(project.review_params.get("agreement_threshold", 0.66))
    unique_winner = len(groups) == 1 or len(groups[0]) > len(groups[1])
    if unique_winner and len(groups[0]) / len(labels) >= threshold - 1e-9:
        _decide(
            session, project=project, item=item, task_id=task_id, winners=groups[0], pending=pending, now=now
        )
        return "decided"
    max_extra = int(project.review_params.get("max_extra_labels", 2))
    if (
        task.status == TaskStatus.OPEN
        and item.extra_labels < max_extra
        and affordable_slots(session, project=project, fee_bps=fee_bps) >= 1
    ):
        task.labels_needed += 1
        item.extra_labels += 1
        session.flush()
        return "extended"
    item.escalated_at = now
    for label in pending:
        queue_for_review(session, label=label, project=project, now=now, reason=NO_CONSENSUS_REASON)
    return "escalated"


def _decide(
    session: Session,
    *,
    project: Project,
    item: ConsensusItem,
    task_id: int,
    winners: list[Label],
    pending: list[Label],
    now: datetime,
) -> None:
    task = lock_task(session, task_id)
    # Several annotators are paid at once: touch their rows in annotator order, so that two decisions over
    # overlapping annotators cannot deadlock. Their ledger balances change at the commit, in the ledger's order.
    pending = sorted(pending, key=lambda label: (label.annotator_id, label.id))
    completed_now = task.status == TaskStatus.OPEN
    if completed_now:
        task.status = TaskStatus.COMPLETE.value
        task.completed_at = now
        session.flush()
    item.decided_at = now
    winner_ids = {label.id for label in winners}
    for label in pending:
        if label.id in winner_ids:
            accept_and_record(
                session, label=label, now=now, source="consensus", accuracy_weight=CONSENSUS_WEIGHT
            )
        else:
            reject_and_record(
                session,
                label=label,
                reason=DISSENT_REASON,
                now=now,
                source="consensus",
                accuracy_weight=CONSENSUS_WEIGHT,
            )
    if completed_now:
        record_item_completed(session, task=task, now=now)


def escalate_unfunded_extensions(session: Session, *, now: datetime, fee_bps: int, limit: int = 500) -> int:
    """Send to manual review the items whose extra label their budget can no longer buy; how many.

    An item is extended on the budget available when its labels disagree, and nothing is reserved for the extra
    label: other leases, or other items extended at the same time, may take that money first. The item would then
    wait, its labels and their holds with it, for a lease no budget pays. For every consensus project that cannot
    pay one more label, each extended item still waiting for its extra label gives the slot back and its labels go
    to a reviewer, as when an item cannot be extended at all. Items whose extra label is leased are left alone.
    """
    escalated = 0
    projects = session.scalars(
        select(Project)
        .where(
            Project.review_policy == ReviewPolicy.CONSENSUS.value,
            Project.status.in_([ProjectStatus.ACTIVE.value, ProjectStatus.PAUSED.value]),
        )
        .order_by(Project.id)
    ).all()
    for project in projects:
        if escalated >= limit:
            break
        if affordable_slots(session, project=project, fee_bps=fee_bps) >= 1:
            continue
        waiting = session.scalars(
            select(ConsensusItem.task_id)
            .join(Task, Task.id == ConsensusItem.task_id)
            .where(
                Task.project_id == project.id,
                Task.status == TaskStatus.OPEN.value,
                Task.free_slots > 0,
                ConsensusItem.extra_labels > 0,
                ConsensusItem.decided_at.is_(None),
                ConsensusItem.escalated_at.is_(None),
            )
            .order_by(ConsensusItem.task_id)
            .limit(limit - escalated)
        ).all()
        for task_id in waiting:
            task = lock_task(session, task_id)  # as evaluate_item: the item's row first, then its history
            item = session.get_one(ConsensusItem, task_id, populate_existing=True)
            free = task.labels_needed - task.labels_in_progress - task.labels_accepted
            if task.status != TaskStatus.OPEN or free < 1 or item.decided_at or item.escalated_at:
                continue  # leased, decided or escalated since the query
            task.labels_needed -= 1
            item.extra_labels -= 1
            item.escalated_at = now
            for label in _voting_labels(session, task_id):
                if label.review_state == ReviewState.PENDING:
                    queue_for_review(
                        session, label=label, project=project, now=now, reason=NO_CONSENSUS_REASON
                    )
            escalated += 1
    session.flush()
    return escalated
