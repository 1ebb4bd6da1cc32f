"""Next task: opening leases (releases, heartbeats and expiry of open ones: `marketplace.work.leases`).

The cost of `lease_next_assignment` does not grow with a project's size: it reads the annotator's few ranked
offers, or the head of one project's open-item index, and claims a slot with one conditional UPDATE.

Claiming a slot is ``UPDATE tasks SET labels_in_progress = labels_in_progress + 1 WHERE id = :id AND status =
'open' AND labels_in_progress + labels_accepted < labels_needed``: the database re-checks the condition under the
row's lock, so a slot is never leased twice on either database, and the CHECK constraint on tasks holds the same
invariant. Candidate rows are read ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so concurrent annotators spread over
different items instead of queueing on one; SQLite has one writer at a time and needs no such care.

Lock order, everywhere: the task row, then the ledger's balance rows (taken by the hold). Accepting a label takes
only ledger rows, so no cycle can form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, exists, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.dml import ReturningUpdate

from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill, AnnotatorStatus
from marketplace.billing.services import hold_for_assignment
from marketplace.events.services import record_event
from marketplace.planning.models import Offer
from marketplace.projects.models import Project, ProjectStatus, Task, TaskStatus
from marketplace.work.leases import lock_annotator
from marketplace.work.models import Assignment, AssignmentState, ProjectWorker
from payments.errors import InsufficientFunds
from payments.money import Money, fee_for

#: a lease can be extended by heartbeats up to this many times its project's lease length
LEASE_CAP_FACTOR = 3
#: how many planned offers one request looks at before falling back to a spot match
OFFERS_PER_REQUEST = 25
#: "seen recently" (what the planner asks) needs minutes, not every request: write it at most this often
SEEN_TOUCH_INTERVAL = timedelta(minutes=1)

NO_WORK_MESSAGES = {
    "account_paused": "Your account is paused; set your status to active to get work.",
    "at_capacity": "You hold as many leases as your capacity allows; submit or release one first.",
    "no_eligible_project": "No active project matches your skills, levels and price right now.",
    "budget_exhausted": "The projects you qualify for have no budget left for another label.",
    "all_slots_leased": "Every open item you qualify for is leased to someone else or already labelled by you.",
    "blocked": "You are blocked from this project.",
}


@dataclass(frozen=True)
class LeaseOutcome:
    """A new assignment, or why there is none (`detail`: a block's reason, which the annotator is shown, as MTurk
    shows a block's reason to the worker)."""

    assignment: Assignment | None
    reason: str | None = None
    detail: str | None = None

    @property
    def message(self) -> str | None:
        if self.reason == "blocked" and self.detail:
            return f"You are blocked from this project: {self.detail}"
        return NO_WORK_MESSAGES.get(self.reason or "")


def _block_reason(session: Session, *, project_id: int, annotator_id: int) -> str | None:
    """Why the annotator is blocked from the project, if they are (asked only when a request for its work found
    nothing eligible)."""
    return session.scalar(
        select(ProjectWorker.blocked_reason).where(
            ProjectWorker.project_id == project_id,
            ProjectWorker.annotator_id == annotator_id,
            ProjectWorker.blocked_at.is_not(None),
        )
    )


def _locking(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# The work loop's statements are built once, with bound parameters: SQLAlchemy then finds their compiled form by
# the statement object's memoised cache key instead of building and hashing a new expression on every request.

_LIVE_LEASES: Select[tuple[int]] = (
    select(func.count())
    .select_from(Assignment)
    .where(
        Assignment.annotator_id == bindparam("annotator_id"),
        Assignment.state == AssignmentState.LEASED.value,
    )
)


def live_lease_count(session: Session, annotator_id: int) -> int:
    """How many leases the annotator holds now."""
    return session.scalar(_LIVE_LEASES, {"annotator_id": annotator_id}) or 0


def _eligible_projects_query(*, one_project: bool) -> Select[tuple[Project]]:
    """Active projects an annotator qualifies for, by deadline. Parameters: `annotator_id`, `currency`,
    `price_minor`, `deadline_after` (one label must still fit before the deadline) and, with `one_project`,
    `project_id` (see `_eligible_params`)."""
    annotator_id = bindparam("annotator_id")
    level = (
        select(AnnotatorSkill.level)
        .where(AnnotatorSkill.annotator_id == annotator_id, AnnotatorSkill.skill_id == Project.skill_id)
        .scalar_subquery()
    )
    blocked = exists().where(
        ProjectWorker.project_id == Project.id,
        ProjectWorker.annotator_id == annotator_id,
        ProjectWorker.blocked_at.is_not(None),
    )
    stmt = (
        select(Project)
        .where(
            Project.status == ProjectStatus.ACTIVE.value,
            Project.deadline_at > bindparam("deadline_after", type_=Project.deadline_at.type),
            Project.currency == bindparam("currency"),
            Project.pay_per_label_minor >= bindparam("price_minor"),
            level >= Project.min_level,
            ~blocked,
        )
        .order_by(Project.deadline_at, Project.id)
    )
    if one_project:
        stmt = stmt.where(Project.id == bindparam("project_id"))
    return stmt


def _eligible_params(annotator: AnnotatorProfile, now: datetime, project_id: int | None) -> dict[str, object]:
    hours_per_label = 1.0 / max(annotator.measured_labels_per_hour or annotator.labels_per_hour, 1e-6)
    return {
        "annotator_id": annotator.id,
        "deadline_after": now + timedelta(hours=hours_per_label),
        "currency": annotator.currency,
        "price_minor": annotator.price_minor,
        "project_id": project_id,
    }


_ELIGIBLE_PROJECTS = {one: _eligible_projects_query(one_project=one) for one in (False, True)}


def eligible_projects(
    session: Session, *, annotator: AnnotatorProfile, now: datetime, project_id: int | None = None
) -> list[Project]:
    """Active projects the annotator qualifies for (skill level, price, currency, not blocked), by deadline."""
    stmt = _ELIGIBLE_PROJECTS[project_id is not None]
    return list(session.scalars(stmt, _eligible_params(annotator, now, project_id)))


@dataclass(frozen=True)
class _Standing:
    """What one query tells about the annotator before leasing: where they may work, how many leases they hold,
    and whether a plan left them offers."""

    projects: list[Project]
    live_leases: int
    has_offers: bool


#: eligible projects, live lease count and whether offers exist, in one statement
_STANDING = {
    one: stmt.add_columns(
        _LIVE_LEASES.scalar_subquery(), exists().where(Offer.annotator_id == bindparam("annotator_id"))
    )
    for one, stmt in _ELIGIBLE_PROJECTS.items()
}


def _standing(
    session: Session, *, annotator: AnnotatorProfile, now: datetime, project_id: int | None
) -> _Standing:
    """`eligible_projects`, `live_lease_count` and whether offers exist, in one query (a second only when no
    project qualifies: then the offers do not matter)."""
    stmt = _STANDING[project_id is not None]
    rows = session.execute(stmt, _eligible_params(annotator, now, project_id)).all()
    if not rows:
        return _Standing([], live_lease_count(session, annotator.id), has_offers=False)
    return _Standing([project for project, _, _ in rows], int(rows[0][1]), bool(rows[0][2]))


def gold_due(session: Session, project: Project, annotator_id: int) -> bool:
    """Whether the next item for this annotator should be a gold item (the first one is, then at gold_rate)."""
    rate = float(project.review_params.get("gold_rate", 0.0))
    if rate <= 0:
        return False
    worker = session.get(ProjectWorker, (project.id, annotator_id))
    leased, gold_leased = (worker.leased, worker.gold_leased) if worker is not None else (0, 0)
    return gold_leased < math.ceil((leased + 1) * rate - 1e-9)


#: counting a lease on the annotator's standing in the project, creating the row on their first: one upsert.
#: Plain SQL that both databases speak: a dialect's INSERT ... ON CONFLICT construct is not cacheable in
#: SQLAlchemy, and compiling it again on every lease cost more than the statement itself.
_COUNT_LEASE = text(
    "INSERT INTO project_workers (project_id, annotator_id, leased, gold_leased, gold_correct, gold_wrong)"
    " VALUES (:project_id, :annotator_id, 1, :gold, 0, 0)"
    " ON CONFLICT (project_id, annotator_id) DO UPDATE SET leased = project_workers.leased + 1,"
    " gold_leased = project_workers.gold_leased + excluded.gold_leased"
    " RETURNING leased, gold_leased"
)


def _count_lease(session: Session, *, project_id: int, annotator_id: int, gold: bool) -> None:
    """Count a lease on the annotator's standing in the project, creating it on their first: one upsert."""
    params = {"project_id": project_id, "annotator_id": annotator_id, "gold": int(gold)}
    leased, gold_leased = session.execute(_COUNT_LEASE, params).one()
    loaded = session.identity_map.get(session.identity_key(ProjectWorker, (project_id, annotator_id)))
    if loaded is not None:  # keep a copy read earlier in this unit of work in step with the row
        set_committed_value(loaded, "leased", leased)
        set_committed_value(loaded, "gold_leased", gold_leased)


def _next_task_query(*, gold: bool, locking: bool) -> Select[tuple[int]]:
    """The head of a project's open-item index that the annotator has not had. Parameters: `project_id`,
    `annotator_id`."""
    stmt = (
        select(Task.id)
        .where(
            Task.project_id == bindparam("project_id"),
            Task.status == TaskStatus.OPEN.value,
            Task.is_gold == gold,
            ~exists().where(
                Assignment.task_id == Task.id, Assignment.annotator_id == bindparam("annotator_id")
            ),
        )
        .order_by(Task.priority.desc(), Task.id)
        .limit(1)
    )
    if not gold:
        stmt = stmt.where(Task.free_slots > 0)
        if locking:
            stmt = stmt.with_for_update(skip_locked=True, of=Task)
    return stmt


_NEXT_TASK = {
    (gold, locking): _next_task_query(gold=gold, locking=locking)
    for gold in (False, True)
    for locking in (False, True)
}


def _next_task_id(session: Session, *, project: Project, annotator_id: int, gold: bool) -> int | None:
    stmt = _NEXT_TASK[(gold, _locking(session))]
    return session.scalar(stmt, {"project_id": project.id, "annotator_id": annotator_id})


def _claim_slot_statement(*, skip_locked: bool) -> ReturningUpdate[tuple[Task]]:
    """Take one of the item's free slots; the item comes back whole. With `skip_locked` (PostgreSQL) an item
    whose row another transaction holds is not waited for: the claim fails and the lease tries its next
    candidate, as the spot match's SKIP LOCKED does. A row is held by an expiry batch returning its slot, a
    decision on its labels, or another lease taking a slot; waiting for it would stall the lease behind that
    transaction, and deadlock when the holder then wants a row this transaction holds (a "submit and next"
    holds the item it just labelled). FOR NO KEY UPDATE: a label being inserted for the item (a key share) does
    not make the item look taken."""
    target = Task.id == bindparam("task_id")
    if skip_locked:
        target = Task.id == (
            select(Task.id)
            .where(Task.id == bindparam("task_id"))
            .with_for_update(skip_locked=True, key_share=True)
            .scalar_subquery()
        )
    return (
        update(Task)
        .where(
            target,
            Task.status == TaskStatus.OPEN.value,
            Task.labels_in_progress + Task.labels_accepted < Task.labels_needed,
        )
        .values(labels_in_progress=Task.labels_in_progress + 1)
        .returning(Task)
    )


_CLAIM_SLOT = {skip_locked: _claim_slot_statement(skip_locked=skip_locked) for skip_locked in (False, True)}


def _claim_slot(session: Session, task_id: int) -> bool:
    """Take one of the item's free slots; False if it has none left (or, on PostgreSQL, if another transaction
    holds the item). The item comes back whole (RETURNING) and stays in the session, where the answer to the
    annotator reads its payload."""
    claimed = session.scalars(
        _CLAIM_SLOT[_locking(session)],
        {"task_id": task_id},
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).first()
    return claimed is not None


def _open_assignment(
    session: Session,
    *,
    annotator: AnnotatorProfile,
    project: Project,
    task_id: int,
    gold: bool,
    source: str,
    now: datetime,
    fee_bps: int,
    follows_assignment_id: int | None,
) -> Assignment | None:
    """Claim a slot, open the lease and hold the budget, all or nothing (a savepoint); None if taken meanwhile.

    InsufficientFunds propagates after the savepoint is rolled back.
    """
    try:
        with session.begin_nested():
            if not gold and not _claim_slot(session, task_id):
                return None
            lease = timedelta(seconds=project.lease_seconds)
            assignment = Assignment(
                task_id=task_id,
                project_id=project.id,
                annotator_id=annotator.id,
                state=AssignmentState.LEASED.value,
                price_minor=annotator.price_minor,
                fee_minor=fee_for(Money(annotator.price_minor, project.currency), fee_bps).amount,
                currency=project.currency,
                source=source,
                is_gold=gold,
                leased_at=now,
                lease_expires_at=now + lease,
                lease_cap_at=now + lease * LEASE_CAP_FACTOR,
                follows_assignment_id=follows_assignment_id,
            )
            session.add(assignment)
            session.flush()  # generate assignment.id (the hold is keyed by it); the unique pair is checked here
            record_event(
                session,
                project_id=project.id,
                type="assignment.leased",
                data={
                    "assignment_id": assignment.id,
                    "task_id": task_id,
                    "annotator_id": annotator.id,
                    "price": {"amount_minor": assignment.price_minor, "currency": assignment.currency},
                    "lease_expires_at": assignment.lease_expires_at,
                },
            )
            _count_lease(session, project_id=project.id, annotator_id=annotator.id, gold=gold)
            # Last: the hold checks the project's budget now but changes its balance row, which every lease of
            # the project needs, only at the commit (payments.deferred_balances), so the row is locked briefly.
            hold_for_assignment(session, assignment=assignment)
    except IntegrityError:
        return None  # the same annotator took this item in a concurrent request
    return assignment


def _planned_offers_query(*, one_project: bool, locking: bool) -> Select[tuple[Offer]]:
    stmt = (
        select(Offer)
        .where(Offer.annotator_id == bindparam("annotator_id"))
        .order_by(Offer.rank)
        .limit(OFFERS_PER_REQUEST)
    )
    if one_project:
        stmt = stmt.where(Offer.project_id == bindparam("project_id"))
    if locking:
        stmt = stmt.with_for_update(skip_locked=True)
    return stmt


_PLANNED_OFFERS = {
    (one, locking): _planned_offers_query(one_project=one, locking=locking)
    for one in (False, True)
    for locking in (False, True)
}


def _planned_offers(session: Session, annotator_id: int, project_id: int | None) -> list[Offer]:
    stmt = _PLANNED_OFFERS[(project_id is not None, _locking(session))]
    return list(session.scalars(stmt, {"annotator_id": annotator_id, "project_id": project_id}))


def lease_next_assignment(
    session: Session,
    *,
    annotator: AnnotatorProfile,
    now: datetime,
    fee_bps: int,
    project_id: int | None = None,
    follows_assignment_id: int | None = None,
) -> LeaseOutcome:
    """The annotator's next assignment: the best still-valid planned offer, else a spot match by the same rules.

    `follows_assignment_id`: the assignment whose "submit and next" asks (see `lease_after_submit`).
    """
    if annotator.last_seen_at is None or now - annotator.last_seen_at > SEEN_TOUCH_INTERVAL:
        annotator.last_seen_at = now
    status, capacity = lock_annotator(session, annotator)
    if status != AnnotatorStatus.ACTIVE:
        return LeaseOutcome(None, "account_paused")
    standing = _standing(session, annotator=annotator, now=now, project_id=project_id)
    if standing.live_leases >= capacity:
        return LeaseOutcome(None, "at_capacity")
    projects = {p.id: p for p in standing.projects}
    if not projects:
        if project_id is not None:
            blocked = _block_reason(session, project_id=project_id, annotator_id=annotator.id)
            if blocked is not None:
                return LeaseOutcome(None, "blocked", detail=blocked)
        return LeaseOutcome(None, "no_eligible_project")
    unaffordable: set[int] = set()

    def attempt(project: Project, task_id: int | None, source: str) -> Assignment | None:
        if gold_due(session, project, annotator.id):
            gold_id = _next_task_id(session, project=project, annotator_id=annotator.id, gold=True)
            if gold_id is not None:
                task_id, source = gold_id, "gold"
        if task_id is None:
            return None
        try:
            return _open_assignment(
                session,
                annotator=annotator,
                project=project,
                task_id=task_id,
                gold=source == "gold",
                source=source,
                now=now,
                fee_bps=fee_bps,
                follows_assignment_id=follows_assignment_id,
            )
        except InsufficientFunds:
            unaffordable.add(project.id)
            return None

    for offer in _planned_offers(session, annotator.id, project_id) if standing.has_offers else []:
        project = projects.get(offer.project_id)
        session.delete(offer)  # an offer is used once, whether it still holds or not
        if project is None or project.id in unaffordable:
            continue
        assignment = attempt(project, offer.task_id, "plan")
        if assignment is not None:
            return LeaseOutcome(assignment)
    for project in projects.values():
        if project.id in unaffordable:
            continue
        # A few tries per project: a concurrent annotator may take the row between our read and our claim.
        for _ in range(3):
            task_id = _next_task_id(session, project=project, annotator_id=annotator.id, gold=False)
            if task_id is None and not gold_due(session, project, annotator.id):
                break
            assignment = attempt(project, task_id, "spot")
            if assignment is not None:
                return LeaseOutcome(assignment)
            if project.id in unaffordable or task_id is None:
                break
    if unaffordable and unaffordable == set(projects):
        return LeaseOutcome(None, "budget_exhausted")
    return LeaseOutcome(None, "all_slots_leased")


def lease_after_submit(
    session: Session,
    *,
    annotator: AnnotatorProfile,
    submitted: Assignment,
    now: datetime,
    fee_bps: int,
    replayed: bool = True,
) -> LeaseOutcome:
    """ "Submit and next": the annotator's next assignment in the project of the one just submitted.

    The new lease names the assignment it follows (a unique column), so a retried submit is answered with the
    same next assignment, never a second lease; if the first attempt found no work, a retry looks again.
    `replayed=False` says the submit was recorded just now, in this transaction, under the assignment's row lock:
    nothing can follow it yet, and the look for an earlier answer is skipped.
    """
    if replayed:
        earlier = session.scalar(select(Assignment).where(Assignment.follows_assignment_id == submitted.id))
        if earlier is not None:
            return LeaseOutcome(earlier)
    return lease_next_assignment(
        session,
        annotator=annotator,
        now=now,
        fee_bps=fee_bps,
        project_id=submitted.project_id,
        follows_assignment_id=submitted.id,
    )
