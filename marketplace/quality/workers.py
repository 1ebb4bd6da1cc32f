"""An annotator's standing in one project: blocks by quality rules and by the project's managers, and lifting them.

Three things block an annotator from a project (`project_workers.blocked_at`): a gold accuracy under the
project's floor (`marketplace.quality.gold`), too many labels submitted faster than the project's
`min_seconds_per_label` (Toloka's "fast responses" rule), and a manager's decision with a reason (MTurk's and
Toloka's block). A blocked annotator gets no offers and no leases in the project; their live leases there are
released at once, so the items go back to others now rather than when the leases expire. Labels they already
submitted stay with the review policy.

A manager lifts any block. Unblocking is a fresh start in the project: the gold and fast-answer counts that
decide the automatic blocks start again from zero (accuracy per skill, which routing uses, is kept).

Lock order: the annotator's profile row, then their project-worker row, then the leases being released (item
rows, then the ledger at the commit): the order of the annotator's own leases and submits, which take the
profile row first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.errors import InvalidInput, NotFound
from marketplace.events.services import record_event
from marketplace.limits import visible_text
from marketplace.projects.models import Project
from marketplace.work.leases import lock_annotator, release_assignment
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker

#: the start of a fast-answer block's reason
FAST_PREFIX = "Too fast"
#: what blocked or unblocked: a quality rule, a person, or an upheld appeal (which can lift a gold block)
SOURCE_GOLD = "gold"
SOURCE_FAST = "fast_answers"
SOURCE_MANAGER = "manager"
SOURCE_APPEAL = "appeal"
MAX_REASON = 500


def lock_worker(session: Session, project_id: int, annotator_id: int) -> ProjectWorker:
    """The annotator's standing in the project, locked and re-read (created if missing)."""
    worker = session.get(
        ProjectWorker, (project_id, annotator_id), with_for_update=True, populate_existing=True
    )
    if worker is None:  # leasing creates it; a label always follows a lease, but stay total
        worker = ProjectWorker(
            project_id=project_id,
            annotator_id=annotator_id,
            leased=0,
            gold_leased=0,
            gold_correct=0,
            gold_wrong=0,
            fast_answers=0,
        )
        session.add(worker)
    return worker


def block_worker(
    session: Session,
    *,
    worker: ProjectWorker,
    project: Project,
    reason: str,
    source: str,
    now: datetime,
    blocked_by_id: int | None = None,
) -> None:
    """Block a (locked) worker from the project, release their live leases in it and record worker.blocked."""
    worker.blocked_at = now
    worker.blocked_reason = reason[:MAX_REASON]
    worker.blocked_source = source
    worker.blocked_by_id = blocked_by_id
    annotator = session.get_one(AnnotatorProfile, worker.annotator_id)
    # Locked and re-read: a lease that an expiry or the annotator's own release ended meanwhile no longer matches
    # (PostgreSQL re-checks the condition on the row it waited for) and is left alone.
    leases = session.scalars(
        select(Assignment)
        .where(
            Assignment.project_id == project.id,
            Assignment.annotator_id == worker.annotator_id,
            Assignment.state == AssignmentState.LEASED.value,
        )
        .order_by(Assignment.task_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for assignment in leases:
        # records its own assignment.released event, like any release
        release_assignment(session, annotator=annotator, assignment_id=assignment.id, now=now)
    record_event(
        session,
        project_id=project.id,
        type="worker.blocked",
        data={
            "annotator_id": worker.annotator_id,
            "reason": worker.blocked_reason,
            "source": source,
            "blocked_by_id": blocked_by_id,
            "leases_released": len(leases),
        },
        now=now,
    )


@dataclass(frozen=True, slots=True)
class Standing:
    """A manager's block or unblock: the worker as it is now, and whether this call changed it."""

    worker: ProjectWorker
    changed: bool


def _project_worker(session: Session, project: Project, annotator_id: int) -> ProjectWorker:
    """Lock the annotator's profile, then their standing in the project; someone who never worked there is a 404."""
    annotator = session.get(AnnotatorProfile, annotator_id)
    exists = annotator is not None and session.scalar(
        select(ProjectWorker.annotator_id).where(
            ProjectWorker.project_id == project.id, ProjectWorker.annotator_id == annotator_id
        )
    )
    if annotator is None or not exists:
        raise NotFound(f"Annotator {annotator_id} has not worked on project {project.id}.")
    lock_annotator(session, annotator)
    return lock_worker(session, project.id, annotator_id)


def block_annotator(
    session: Session, *, project: Project, annotator_id: int, reason: str, by_user_id: int, now: datetime
) -> Standing:
    """A manager blocks someone who worked on the project, with a reason (one that shows nothing is refused);
    blocking a blocked annotator changes nothing."""
    reason = visible_text(reason)
    if not reason:
        raise InvalidInput("Give a reason for the block.", details={"reason": "blank"})
    worker = _project_worker(session, project, annotator_id)
    if worker.blocked_at is not None:
        return Standing(worker, changed=False)
    block_worker(
        session,
        worker=worker,
        project=project,
        reason=reason,
        source=SOURCE_MANAGER,
        now=now,
        blocked_by_id=by_user_id,
    )
    return Standing(worker, changed=True)


def unblock_annotator(
    session: Session, *, project: Project, annotator_id: int, by_user_id: int, now: datetime
) -> Standing:
    """Lift any block (a rule's or a manager's) with a fresh start; unblocking an unblocked annotator changes
    nothing."""
    worker = _project_worker(session, project, annotator_id)
    if worker.blocked_at is None:
        return Standing(worker, changed=False)
    lift_block(
        session, worker=worker, project=project, source=SOURCE_MANAGER, now=now, unblocked_by_id=by_user_id
    )
    worker.gold_correct = worker.gold_wrong = worker.fast_answers = 0
    return Standing(worker, changed=True)


def lift_block(
    session: Session,
    *,
    worker: ProjectWorker,
    project: Project,
    source: str,
    now: datetime,
    unblocked_by_id: int | None = None,
) -> None:
    """Clear a (locked) worker's block and record worker.unblocked: by a manager, or by an upheld appeal that
    undid the gold answers behind a gold block."""
    reason = worker.blocked_reason
    worker.blocked_at = None
    worker.blocked_reason = None
    worker.blocked_source = None
    worker.blocked_by_id = None
    record_event(
        session,
        project_id=project.id,
        type="worker.unblocked",
        data={
            "annotator_id": worker.annotator_id,
            "source": source,
            "unblocked_by_id": unblocked_by_id,
            "was_blocked_for": reason,
        },
        now=now,
    )


def min_seconds_per_label(project: Project) -> float:
    """The project's minimum plausible time per label (0: no fast-answer rule)."""
    return float(project.review_params.get("min_seconds_per_label", 0.0))


def note_fast_answer(session: Session, *, label: Label, project: Project, now: datetime) -> bool:
    """Whether a just-submitted label came in under the project's minimum time; count it, and block the
    annotator once they reach the project's `fast_answer_limit`."""
    minimum = min_seconds_per_label(project)
    if minimum <= 0 or label.time_spent_ms >= minimum * 1000:
        return False
    worker = lock_worker(session, project.id, label.annotator_id)
    worker.fast_answers += 1
    limit = int(project.review_params.get("fast_answer_limit", 3))
    if worker.blocked_at is None and worker.fast_answers >= limit:
        block_worker(
            session,
            worker=worker,
            project=project,
            reason=(
                f"{FAST_PREFIX}: {worker.fast_answers} labels submitted in under {minimum:g} s each, "
                "the project's minimum time per label."
            ),
            source=SOURCE_FAST,
            now=now,
        )
    return True


def fast_answer_reason(label: Label, project: Project) -> str:
    """Why a fast label waits for a reviewer."""
    return (
        f"answered in {label.time_spent_ms / 1000:.1f} s, under the project's minimum of "
        f"{min_seconds_per_label(project):g} s"
    )
