"""The reviewer's pages: the next label waiting for a person, and the next appeal against a rejection.

The queue, the claims and the decisions are marketplace.quality's (as for /api/v1/review/next); these views
show them and post the reviewer's decision.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, url_for
from sqlalchemy import func, or_, select
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_user
from marketplace.annotators.models import AnnotatorProfile
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import Conflict, InvalidInput
from marketplace.projects.models import Project, Task
from marketplace.quality import appeals, review
from marketplace.quality.models import Appeal, AppealState, ReviewEntry
from marketplace.web.access import REVIEW, area_required, reload_user_on_retry
from marketplace.web.blueprint import bp, id_arg
from marketplace.web.forms import AppealDecisionForm, ReviewForm
from marketplace.work.models import Assignment, Label, ReviewState
from payments.money import Money


def _waiting(project_id: int | None) -> int:
    """Labels waiting for the caller (in their organisations, not their own, not claimed by someone else)."""
    session = get_session()
    user = current_user()
    now = utcnow()
    stmt = (
        select(func.count())
        .select_from(ReviewEntry)
        .join(Label, Label.id == ReviewEntry.label_id)
        .where(
            ReviewEntry.project_id.in_(review.reviewable_project_ids(user)),
            Label.review_state == ReviewState.PENDING.value,
            or_(
                ReviewEntry.claimed_by_id.is_(None),
                ReviewEntry.claimed_by_id == user.id,
                ReviewEntry.claim_expires_at <= now,
            ),
        )
    )
    if project_id is not None:
        stmt = stmt.where(ReviewEntry.project_id == project_id)
    mine = review.own_annotator_id(session, user)
    if mine is not None:
        stmt = stmt.where(Label.annotator_id != mine)
    return int(session.scalar(stmt) or 0)


def _open_appeals() -> int:
    user = current_user()
    return int(
        get_session().scalar(
            select(func.count())
            .select_from(Appeal)
            .where(
                Appeal.state == AppealState.OPEN.value,
                Appeal.project_id.in_(review.reviewable_project_ids(user)),
                or_(Appeal.rejected_by_id.is_(None), Appeal.rejected_by_id != user.id),
            )
        )
        or 0
    )


def _label_context(label: Label) -> dict[str, Any]:
    session = get_session()
    assignment = session.get_one(Assignment, label.assignment_id)
    return {
        "label": label,
        "task": session.get_one(Task, label.task_id),
        "project": session.get_one(Project, label.project_id),
        "annotator": session.get_one(AnnotatorProfile, label.annotator_id),
        "price": Money(assignment.price_minor, assignment.currency),
    }


def _review_page(entry: ReviewEntry | None, form: ReviewForm, project_id: int | None) -> str:
    context: dict[str, Any] = {
        "entry": entry,
        "form": form,
        "project_id": project_id,
        "waiting": _waiting(project_id),
        "open_appeals": _open_appeals(),
        "now": utcnow(),
    }
    if entry is not None:
        context |= _label_context(get_session().get_one(Label, entry.label_id))
    return render_template("web/review/next.html", **context)


@bp.get("/review")
@area_required(REVIEW)
def review_queue() -> str:
    """The oldest label waiting for review that I may decide (claimed for me for a few minutes)."""
    project_id = id_arg("project_id")
    entry = review.next_for_review(get_session(), user=current_user(), now=utcnow(), project_id=project_id)
    return _review_page(entry, ReviewForm(), project_id)


@bp.post("/review/labels/<int:label_id>")
@area_required(REVIEW)
@retry_transaction
@reload_user_on_retry
def decide(label_id: int) -> Response | tuple[str, int]:
    """Accept (pays the annotator) or reject (reason required; the slot opens again)."""
    session = get_session()
    project_id = id_arg("project_id")
    back = url_for("web.review_queue", project_id=project_id)
    form = ReviewForm()
    if form.validate_on_submit():
        try:
            review.review_label(
                session,
                label_id=label_id,
                user=current_user(),
                decision=form.decision.data,
                reason=form.reason.data,
                now=utcnow(),
            )
        except Conflict as exc:  # decided meanwhile (or never queued)
            flash(exc.message, "error")
            return redirect(back)
        except InvalidInput as exc:  # the form checks the reason first; the service has the last word
            form.reason.errors = [*form.reason.errors, exc.message]
        else:
            verdict = "accepted" if form.decision.data == "accept" else "rejected"
            flash(f"Label {label_id} {verdict}.", "success")
            return redirect(back)
    # Show the same label again with what to fix (another tenant's label is a 404, as in the service).
    entry = session.get(ReviewEntry, label_id)
    if entry is None:
        return redirect(back)
    project = session.get_one(Project, entry.project_id)
    review.check_reviewer(session, user=current_user(), project=project, what=f"Label {label_id}")
    return _review_page(entry, form, project_id), 422


@bp.get("/review/appeals")
@area_required(REVIEW)
def appeal_queue() -> str:
    """The oldest open appeal I may decide (not on my own rejection), with the label and the comment."""
    session = get_session()
    project_id = id_arg("project_id")
    appeal = appeals.next_appeal(session, user=current_user(), project_id=project_id)
    return _appeal_page(appeal, AppealDecisionForm(), project_id)


def _appeal_page(appeal: Appeal | None, form: AppealDecisionForm, project_id: int | None) -> str:
    context: dict[str, Any] = {
        "appeal": appeal,
        "form": form,
        "project_id": project_id,
        "open_appeals": _open_appeals(),
        "now": utcnow(),
    }
    if appeal is not None:
        context |= _label_context(get_session().get_one(Label, appeal.label_id))
    return render_template("web/review/appeal.html", **context)


@bp.post("/review/appeals/<int:appeal_id>")
@area_required(REVIEW)
@retry_transaction
@reload_user_on_retry
def decide_appeal(appeal_id: int) -> Response | tuple[str, int]:
    """Uphold (the label is accepted and paid) or deny (with a reason) an appeal."""
    session = get_session()
    project_id = id_arg("project_id")
    back = url_for("web.appeal_queue", project_id=project_id)
    form = AppealDecisionForm()
    if form.validate_on_submit():
        try:
            appeals.decide_appeal(
                session,
                appeal_id=appeal_id,
                user=current_user(),
                decision=form.decision.data,
                reason=form.reason.data,
                now=utcnow(),
            )
        except Conflict as exc:
            flash(exc.message, "error")
        else:
            verdict = "upheld: the label is accepted and paid" if form.decision.data == "uphold" else "denied"
            flash(f"Appeal {appeal_id} {verdict}.", "success")
        return redirect(back)
    appeal = session.get(Appeal, appeal_id)
    if appeal is None or appeal.state != AppealState.OPEN:
        return redirect(back)
    project = session.get_one(Project, appeal.project_id)
    review.check_reviewer(session, user=current_user(), project=project, what=f"Appeal {appeal_id}")
    return _appeal_page(appeal, form, project_id), 422
