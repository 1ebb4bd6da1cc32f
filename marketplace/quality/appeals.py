"""Appeals: an annotator asks once to overturn the rejection of a label; a different reviewer decides.

Whoever rejected the label may not decide its appeal (automatic rejections by gold items and consensus have no
such person). An upheld appeal accepts and pays the label (`accept_label(overturn=True)`), moves the
rejection's accuracy evidence back, and for a control item counts the answer as right (which can lift a gold
block). A denied appeal needs a reason, like a rejection.

A project's managers can also reverse rejections themselves, many at once, without an appeal (`reverse_rejections`:
MTurk's OverrideRejection, the remedy its workers ask for after a mass rejection): the same effects as an upheld
appeal, with a reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.events.services import record_event
from marketplace.limits import visible_text
from marketplace.projects.models import Project
from marketplace.quality.accuracy import overturn_outcome, rejection_weight
from marketplace.quality.gold import overturn_gold_miss
from marketplace.quality.models import Appeal, AppealState
from marketplace.quality.outcomes import accept_and_record, lock_task
from marketplace.quality.review import check_reviewer, own_annotator_id, reviewable_project_ids
from marketplace.quality.workers import lock_worker
from marketplace.work.models import Label, ReviewState

#: how long after a rejection it can still be appealed (MTurk lets requesters reverse for 30 days)
APPEAL_WINDOW = timedelta(days=30)


def file_appeal(
    session: Session, *, label_id: int, annotator: AnnotatorProfile, comment: str, now: datetime
) -> Appeal:
    """The label's annotator appeals its rejection (once per label)."""
    # locked: a manager reversing the rejection at the same moment either sees this appeal or is seen by it
    label = session.get(Label, label_id, with_for_update={"key_share": True}, populate_existing=True)
    if label is None or label.annotator_id != annotator.id:
        raise NotFound(f"Label {label_id} not found.")
    comment = comment.strip()
    if not comment:
        raise InvalidInput("An appeal needs a comment.", details={"comment": "required"})
    if label.review_state != ReviewState.REJECTED:
        raise Conflict(
            f"Only a rejected label can be appealed; this one is {label.review_state}.", code="not_rejected"
        )
    if session.scalar(select(Appeal.id).where(Appeal.label_id == label.id)) is not None:
        raise Conflict("This label was already appealed.", code="already_appealed")
    if label.reviewed_at is not None and now - label.reviewed_at > APPEAL_WINDOW:
        raise Conflict(
            f"Rejections can be appealed for {APPEAL_WINDOW.days} days; this one is older.",
            code="appeal_window_closed",
        )
    appeal = Appeal(
        label_id=label.id,
        project_id=label.project_id,
        annotator_id=annotator.id,
        comment=comment,
        state=AppealState.OPEN.value,
        rejected_by_id=label.reviewed_by_id,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(appeal)
            session.flush()  # generate appeal.id; a concurrent second appeal fails on the unique label here
    except IntegrityError:
        raise Conflict("This label was already appealed.", code="already_appealed") from None
    record_event(
        session,
        project_id=label.project_id,
        type="label.appealed",
        data={"label_id": label.id, "appeal_id": appeal.id, "annotator_id": annotator.id},
        now=now,
    )
    return appeal


def next_appeal(session: Session, *, user: User, project_id: int | None = None) -> Appeal | None:
    """The oldest open appeal the user may decide: in their organisations, not their own, not their rejection."""
    stmt = (
        select(Appeal)
        .where(
            Appeal.state == AppealState.OPEN.value,
            Appeal.project_id.in_(reviewable_project_ids(user)),
            or_(Appeal.rejected_by_id.is_(None), Appeal.rejected_by_id != user.id),
        )
        .order_by(Appeal.created_at, Appeal.id)
        .limit(1)
    )
    if project_id is not None:
        stmt = stmt.where(Appeal.project_id == project_id)
    mine = own_annotator_id(session, user)
    if mine is not None:
        stmt = stmt.where(Appeal.annotator_id != mine)
    return session.scalar(stmt)


def decide_appeal(
    session: Session, *, appeal_id: int, user: User, decision: str, reason: str | None, now: datetime
) -> Appeal:
    """Uphold (accept and pay the label) or deny (with a reason) an open appeal."""
    appeal = session.get(Appeal, appeal_id, with_for_update=True, populate_existing=True)
    if appeal is None:
        raise NotFound(f"Appeal {appeal_id} not found.")
    project = session.get_one(Project, appeal.project_id)
    check_reviewer(session, user=user, project=project, what=f"Appeal {appeal_id}")
    if appeal.rejected_by_id == user.id:
        raise Forbidden("The reviewer who rejected the label cannot decide its appeal.", code="same_reviewer")
    if appeal.annotator_id == own_annotator_id(session, user):
        raise Forbidden("You cannot decide an appeal on your own label.", code="own_label")
    if appeal.state != AppealState.OPEN:
        raise Conflict(f"This appeal was already {appeal.state}.", code="already_decided")
    reason = (reason or "").strip() or None
    if decision == "deny" and reason is None:
        raise InvalidInput("Denying an appeal needs a reason.", details={"reason": "required to deny"})
    appeal.decided_by_id = user.id
    appeal.decided_at = now
    appeal.reason = reason
    if decision == "deny":
        appeal.state = AppealState.DENIED.value
        session.flush()
        return appeal
    appeal.state = AppealState.UPHELD.value
    label = session.get_one(Label, appeal.label_id)
    overturn_rejection(
        session,
        label=label,
        project=project,
        user=user,
        reason=reason or "rejection overturned on appeal",
        source="appeal",
        now=now,
    )
    session.flush()
    return appeal


def overturn_rejection(
    session: Session, *, label: Label, project: Project, user: User, reason: str, source: str, now: datetime
) -> None:
    """Accept and pay a rejected label after all: its rejection's accuracy evidence moves back, and a control
    item's answer counts as right (which can lift a gold block)."""
    if label.is_gold:
        # the project-worker row before the skill row, as a gold answer's check takes them
        lock_worker(session, project.id, label.annotator_id)
    weight = rejection_weight(label)
    accept_and_record(
        session,
        label=label,
        now=now,
        source=source,
        reviewer_id=user.id,
        reason=reason,
        pay=bool(project.review_params.get("pay_correct_gold", True)) if label.is_gold else True,
        overturn=True,
    )
    overturn_outcome(
        session, annotator_id=label.annotator_id, skill_id=project.skill_id, weight=weight, gold=label.is_gold
    )
    if label.is_gold:
        overturn_gold_miss(session, label=label, project=project, now=now)


#: the most labels one reversal request takes
MAX_REVERSALS = 500


def _locked_appeal(session: Session, label_id: int) -> Appeal | None:
    return session.scalar(
        select(Appeal)
        .where(Appeal.label_id == label_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def reverse_rejections(
    session: Session, *, project: Project, label_ids: list[int], user: User, reason: str, now: datetime
) -> dict[int, str]:
    """A project's manager reverses rejections (MTurk's OverrideRejection): each rejected label among
    `label_ids` is accepted and paid as an upheld appeal would be, and an open appeal on it is closed as upheld
    (a denied one stays denied: that decision was made; the label now says why it was accepted after all).
    All or nothing (the budget must pay them all). Per label: `reversed`, `not_rejected` (a retry, or never
    rejected), `own_label` (the manager's own work) or `not_found` (not in this project).

    Locks, in phases, so that a batch never holds one kind of row while waiting for an earlier kind: each
    rejected label's appeal and row (item order, as an appeal's decision takes them: appeal, then label), then
    their items (item order, as every decision takes them), then per annotator (in annotator order, as consensus
    pays several) the rows the decisions update: the project-worker row first when any of their labels in the
    batch is a gold answer (checking a gold answer takes it before the skill row), then the skill row.
    """
    reason = visible_text(reason)
    if not reason:
        raise InvalidInput("Say why the rejections are reversed.", details={"reason": "required"})
    wanted = sorted(set(label_ids))
    mine = own_annotator_id(session, user)
    outcomes = dict.fromkeys(wanted, "not_found")
    found = session.execute(
        select(Label.id, Label.annotator_id, Label.review_state)
        .where(Label.id.in_(wanted), Label.project_id == project.id)
        .order_by(Label.task_id, Label.id)
    ).all()
    chosen: list[tuple[Label, Appeal | None]] = []
    for label_id, annotator_id, review_state in found:
        if annotator_id == mine:
            outcomes[label_id] = "own_label"
            continue
        outcomes[label_id] = "not_rejected"
        if review_state != ReviewState.REJECTED:
            continue  # read without a lock: a pending label is a reviewer's to lock, not ours
        # An appeal filed meanwhile (filing locks the label) is found by the second look.
        appeal = _locked_appeal(session, label_id)
        label = session.get_one(Label, label_id, with_for_update={"key_share": True}, populate_existing=True)
        appeal = appeal or _locked_appeal(session, label_id)
        if label.review_state == ReviewState.REJECTED:
            chosen.append((label, appeal))
    for label, _ in chosen:  # already in item order
        if not label.is_gold:
            lock_task(session, label.task_id)
    with_gold = {label.annotator_id for label, _ in chosen if label.is_gold}
    locked_workers: set[int] = set()
    for label, appeal in sorted(chosen, key=lambda pair: (pair[0].annotator_id, pair[0].id)):
        if label.annotator_id in with_gold and label.annotator_id not in locked_workers:
            # before any of the annotator's skill rows: their gold answer's check takes the two in that order
            lock_worker(session, project.id, label.annotator_id)
            locked_workers.add(label.annotator_id)
        if appeal is not None and appeal.state == AppealState.OPEN:
            appeal.state = AppealState.UPHELD.value
            appeal.decided_by_id = user.id
            appeal.decided_at = now
            appeal.reason = reason
        overturn_rejection(
            session, label=label, project=project, user=user, reason=reason, source="reversal", now=now
        )
        outcomes[label.id] = "reversed"
    session.flush()
    return outcomes
