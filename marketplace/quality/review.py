"""Manual review: the queue of labels waiting for a person, their decisions, and acceptance when nobody decides.

A reviewer, manager or admin of the project's organisation decides; nobody decides on their own label. A
reviewer who asks for the next label holds a claim on it for a few minutes, so two reviewers working the same
queue are handed different labels (PostgreSQL also skips rows another transaction is taking). A label nobody
decided within the project's `review_window_hours` is accepted and paid (MTurk's and Toloka's auto-approval),
without accuracy evidence: nobody checked it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from marketplace.accounts.auth import is_platform_admin, organisation_role
from marketplace.accounts.models import Membership, OrgRole, User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.errors import Conflict, Forbidden, InvalidInput, NotFound
from marketplace.projects.models import Project
from marketplace.quality.accuracy import REVIEW_WEIGHT
from marketplace.quality.models import ReviewEntry
from marketplace.quality.outcomes import accept_and_record, reject_and_record
from marketplace.work.models import Label, ReviewState

REVIEWER_ROLES = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.REVIEWER.value)
CLAIM = timedelta(minutes=10)


def _locking(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def queue_for_review(
    session: Session, *, label: Label, project: Project, now: datetime, reason: str, new_label: bool = False
) -> ReviewEntry:
    """Put a pending label in front of reviewers, due for automatic acceptance after the review window.

    Queuing a label twice returns its entry; `new_label` (a label created in this unit of work, which cannot be
    queued yet) skips that lookup.
    """
    if not new_label:
        existing = session.get(ReviewEntry, label.id)
        if existing is not None:
            return existing
    hours = int(project.review_params.get("review_window_hours", 72))
    entry = ReviewEntry(
        label_id=label.id,
        project_id=project.id,
        reason=reason,
        queued_at=now,
        due_at=now + timedelta(hours=hours),
    )
    session.add(entry)
    return entry


def project_labels(
    session: Session,
    *,
    project_id: int,
    review_state: str | None = None,
    annotator_id: int | None = None,
    reviewed_by_id: int | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[Label]:
    """A project's labels by id after `after`, optionally only those in one review state, by one annotator or
    decided by one reviewer (the API's list and the web's rejections page)."""
    stmt = select(Label).where(Label.project_id == project_id, Label.id > after)
    if review_state is not None:
        stmt = stmt.where(Label.review_state == review_state)
    if annotator_id is not None:
        stmt = stmt.where(Label.annotator_id == annotator_id)
    if reviewed_by_id is not None:
        stmt = stmt.where(Label.reviewed_by_id == reviewed_by_id)
    return list(session.scalars(stmt.order_by(Label.id).limit(limit)))


def reviewable_project_ids(user: User) -> Select[tuple[int]]:
    """The projects whose labels the user may review (all of them for a platform admin)."""
    stmt = select(Project.id)
    if is_platform_admin(user):
        return stmt
    return stmt.join(Membership, Membership.organisation_id == Project.organisation_id).where(
        Membership.user_id == user.id, Membership.role.in_(REVIEWER_ROLES)
    )


def own_annotator_id(session: Session, user: User) -> int | None:
    """The user's annotator profile id, if they label too."""
    return session.scalar(select(AnnotatorProfile.id).where(AnnotatorProfile.user_id == user.id))


def check_reviewer(session: Session, *, user: User, project: Project, what: str) -> None:
    """A reviewer, manager or admin of the project's organisation may go on; others get 404 (or 403 if a member)."""
    if is_platform_admin(user):
        return
    role = organisation_role(session, user, project.organisation_id)
    if role is None:
        raise NotFound(f"{what} not found.")
    if role not in REVIEWER_ROLES:
        raise Forbidden(f"This needs the role {' or '.join(REVIEWER_ROLES)} in the project's organisation.")


def next_for_review(
    session: Session, *, user: User, now: datetime, project_id: int | None = None
) -> ReviewEntry | None:
    """Claim the oldest label waiting for review that the user may decide (never their own)."""
    mine = own_annotator_id(session, user)
    stmt = (
        select(ReviewEntry)
        .join(Label, Label.id == ReviewEntry.label_id)
        .where(
            ReviewEntry.project_id.in_(reviewable_project_ids(user)),
            Label.review_state == ReviewState.PENDING.value,
            or_(
                ReviewEntry.claimed_by_id.is_(None),
                ReviewEntry.claimed_by_id == user.id,
                ReviewEntry.claim_expires_at <= now,
            ),
        )
        .order_by(ReviewEntry.queued_at, ReviewEntry.label_id)
        .limit(1)
    )
    if project_id is not None:
        stmt = stmt.where(ReviewEntry.project_id == project_id)
    if mine is not None:
        stmt = stmt.where(Label.annotator_id != mine)
    if _locking(session):
        stmt = stmt.with_for_update(skip_locked=True, of=ReviewEntry)
    entry = session.scalar(stmt)
    if entry is None:
        return None
    entry.claimed_by_id = user.id
    entry.claim_expires_at = now + CLAIM
    session.flush()
    return entry


def review_label(
    session: Session, *, label_id: int, user: User, decision: str, reason: str | None, now: datetime
) -> Label:
    """A reviewer's decision on a label waiting for review: accept, or reject with a reason."""
    label = session.get(Label, label_id)
    if label is None:
        raise NotFound(f"Label {label_id} not found.")
    project = session.get_one(Project, label.project_id)
    check_reviewer(session, user=user, project=project, what=f"Label {label_id}")
    if label.annotator_id == own_annotator_id(session, user):
        raise Forbidden("You cannot review your own label.", code="own_label")
    reason = (reason or "").strip() or None
    if decision == "reject" and reason is None:
        raise InvalidInput("A rejection needs a reason.", details={"reason": "required to reject"})
    entry = session.scalar(select(ReviewEntry).where(ReviewEntry.label_id == label.id).with_for_update())
    if entry is None or label.review_state != ReviewState.PENDING:
        raise Conflict(
            f"Label {label_id} is not waiting for review (it is {label.review_state}).", code="not_in_review"
        )
    if decision == "accept":
        return accept_and_record(
            session,
            label=label,
            now=now,
            source="review",
            reviewer_id=user.id,
            reason=reason,
            accuracy_weight=REVIEW_WEIGHT,
        )
    assert reason is not None
    return reject_and_record(
        session,
        label=label,
        reason=reason,
        now=now,
        source="review",
        reviewer_id=user.id,
        accuracy_weight=REVIEW_WEIGHT,
    )


def auto_accept_overdue(session: Session, *, now: datetime, limit: int = 500) -> int:
    """Accept and pay labels nobody reviewed within their project's review window; how many."""
    stmt = (
        select(ReviewEntry)
        .join(Label, Label.id == ReviewEntry.label_id)
        .where(
            ReviewEntry.due_at <= now,
            Label.review_state == ReviewState.PENDING.value,
            # a reviewer looking at it right now gets to finish
            or_(ReviewEntry.claim_expires_at.is_(None), ReviewEntry.claim_expires_at <= now),
        )
        .order_by(ReviewEntry.due_at, ReviewEntry.label_id)
        .limit(limit)
    )
    if _locking(session):
        stmt = stmt.with_for_update(skip_locked=True, of=ReviewEntry)
    entries = list(session.scalars(stmt))
    for entry in entries:
        label = session.get_one(Label, entry.label_id)
        hours = round((entry.due_at - entry.queued_at).total_seconds() / 3600)
        accept_and_record(
            session,
            label=label,
            now=now,
            source="auto",
            reason=f"accepted automatically: not reviewed within {hours} hours",
        )
    return len(entries)
