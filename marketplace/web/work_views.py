"""The annotator's workspace: next task, the task page (label, release, more time), my work, earnings.

Every step calls the same services as /api/v1/work, so the web and the API cannot disagree.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask import current_app, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_annotator
from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.earnings import annotator_earnings
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import Conflict, InvalidInput, NotFound
from marketplace.projects.models import Project, Task
from marketplace.quality import appeals
from marketplace.quality.models import Appeal
from marketplace.quality.policy import review_submitted_label
from marketplace.web.access import WORK, area_required, reload_user_on_retry
from marketplace.web.blueprint import bp, id_arg, parse_id
from marketplace.web.forms import ActionForm, AppealForm, NextTaskForm, SubmitLabelForm
from marketplace.work import decisions, leases, leasing
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker
from payments.money import Money

HISTORY_PAGE = 50
EARNINGS_PERIODS = (7, 30, 90)
#: the latest bonuses of the period the earnings page lists
EARNINGS_BONUSES_SHOWN = 200


def _price(assignment: Assignment) -> Money:
    return Money(assignment.price_minor, assignment.currency)


@bp.get("/work")
@area_required(WORK)
def workspace() -> str:
    """Live leases, the projects open to me, and the 'Get next task' button."""
    session = get_session()
    annotator = current_annotator(session)
    now = utcnow()
    live = session.execute(
        select(Assignment, Project.name)
        .join(Project, Project.id == Assignment.project_id)
        .where(
            Assignment.annotator_id == annotator.id,
            Assignment.state == AssignmentState.LEASED.value,
            Assignment.lease_expires_at > now,
        )
        .order_by(Assignment.lease_expires_at)
    ).all()
    projects = leasing.eligible_projects(session, annotator=annotator, now=now)
    # projects that blocked me, with why (as MTurk shows a block's reason to the worker)
    blocks = session.execute(
        select(Project.name, ProjectWorker.blocked_reason, ProjectWorker.blocked_at)
        .join(Project, Project.id == ProjectWorker.project_id)
        .where(ProjectWorker.annotator_id == annotator.id, ProjectWorker.blocked_at.is_not(None))
        .order_by(ProjectWorker.blocked_at.desc())
    ).all()
    return render_template(
        "web/work/workspace.html",
        annotator=annotator,
        live=live,
        projects=projects,
        blocks=blocks,
        my_price=Money(annotator.price_minor, annotator.currency),
        form=NextTaskForm(),
        now=now,
    )


@bp.post("/work/next")
@area_required(WORK)
@retry_transaction
@reload_user_on_retry
def next_task() -> Response:
    """Lease my next item (the plan's best offer or a spot match) and open it; otherwise say why not."""
    form = NextTaskForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for("web.workspace"))
    session = get_session()
    annotator = current_annotator(session)
    project_id = parse_id(form.project_id.data)
    outcome = leasing.lease_next_assignment(
        session,
        annotator=annotator,
        now=utcnow(),
        fee_bps=current_app.config["PLATFORM_FEE_BPS"],
        project_id=project_id,
    )
    if outcome.assignment is None:
        flash(outcome.message or "There is no work for you right now.", "info")
        return redirect(url_for("web.workspace"))
    return redirect(url_for("web.assignment", assignment_id=outcome.assignment.id))


def _task_page(
    annotator: AnnotatorProfile,
    assignment: Assignment,
    *,
    error: str | None = None,
    status: int = 200,
    appeal_form: AppealForm | None = None,
) -> tuple[str, int]:
    session = get_session()
    task = session.get_one(Task, assignment.task_id)
    project = session.get_one(Project, assignment.project_id)
    label = session.scalar(select(Label).where(Label.assignment_id == assignment.id))
    appeal = session.scalar(select(Appeal).where(Appeal.label_id == label.id)) if label is not None else None
    now = utcnow()
    live = assignment.state == AssignmentState.LEASED and assignment.lease_expires_at > now
    form = SubmitLabelForm()
    if not form.submit_key.data:
        form.submit_key.data = uuid.uuid4().hex
    return (
        render_template(
            "web/work/assignment.html",
            assignment=assignment,
            task=task,
            project=project,
            schema=project.label_schema,
            label=label,
            appeal=appeal,
            appeal_form=appeal_form or AppealForm(),
            appeal_open=label is not None
            and label.review_state == "rejected"
            and appeal is None
            and (label.reviewed_at is None or now - label.reviewed_at <= appeals.APPEAL_WINDOW),
            live=live,
            price=_price(assignment),
            form=form,
            action_form=ActionForm(),
            next_form=NextTaskForm(),
            error=error,
            chosen=_chosen_values(project.label_schema) if error else [],
            text_value=request.form.get("text", "") if error else "",
            seconds_left=max(0, int((assignment.lease_expires_at - now).total_seconds())),
            can_extend=live and assignment.lease_expires_at < assignment.lease_cap_at,
            now=now,
        ),
        status,
    )


@bp.get("/work/assignments/<int:assignment_id>")
@area_required(WORK)
def assignment(assignment_id: int) -> tuple[str, int]:
    """The item, the instructions, the choices, the price and the lease; or the result once submitted."""
    session = get_session()
    annotator = current_annotator(session)
    own = leases.assignment_for(session, annotator=annotator, assignment_id=assignment_id, lock=False)
    return _task_page(annotator, own)


def _chosen_values(schema: dict[str, Any]) -> list[str]:
    return request.form.getlist("choice") if schema["type"] != "text" else []


def _value_from_form(schema: dict[str, Any]) -> Any:
    """The label value the form's inputs describe, in the shape `validate_value` checks."""
    if schema["type"] == "single_choice":
        return request.form.get("choice")
    if schema["type"] == "multi_choice":
        return request.form.getlist("choice")
    return request.form.get("text", "")


@bp.post("/work/assignments/<int:assignment_id>/submit")
@area_required(WORK)
@retry_transaction
@reload_user_on_retry
def submit(assignment_id: int) -> Response | tuple[str, int]:
    """Submit the label; a double click or a resent form returns the first result (same submit key)."""
    session = get_session()
    annotator = current_annotator(session)
    own = leases.assignment_for(session, annotator=annotator, assignment_id=assignment_id)
    form = SubmitLabelForm()
    if not form.validate_on_submit():
        return _task_page(annotator, own, error="The form expired; please submit again.", status=400)
    project = session.get_one(Project, own.project_id)
    now = utcnow()
    try:
        label, created = decisions.submit_label(
            session,
            annotator=annotator,
            assignment_id=own.id,
            value=_value_from_form(project.label_schema),
            idempotency_key=f"web:{form.submit_key.data}" if form.submit_key.data else None,
            now=now,
        )
    except InvalidInput as exc:
        return _task_page(annotator, own, error=_schema_hint(project.label_schema, exc), status=422)
    except Conflict as exc:
        flash(exc.message, "error")
        return redirect(url_for("web.assignment", assignment_id=own.id))
    if created:
        review_submitted_label(session, label=label, now=now)
        flash(f"Submitted. You earn {_price(own).format()} if it is accepted.", "success")
    if request.form.get("and_next"):
        following = leasing.lease_after_submit(
            session,
            annotator=annotator,
            submitted=own,
            now=now,
            fee_bps=int(current_app.config["PLATFORM_FEE_BPS"]),
            replayed=not created,
        )
        if following.assignment is not None:
            return redirect(url_for("web.assignment", assignment_id=following.assignment.id))
        flash(following.message or "No more work in this project right now.", "info")
    return redirect(url_for("web.assignment", assignment_id=own.id))


def _schema_hint(schema: dict[str, Any], exc: InvalidInput) -> str:
    if schema["type"] == "single_choice":
        return "Pick one of the choices."
    if schema["type"] == "multi_choice":
        low, high = schema["min"], schema["max"]
        return (
            f"Pick {low} choice{'s' if low != 1 else ''}."
            if low == high
            else f"Pick {low} to {high} choices."
        )
    return exc.message


@bp.post("/work/assignments/<int:assignment_id>/release")
@area_required(WORK)
@retry_transaction
@reload_user_on_retry
def release(assignment_id: int) -> Response:
    """Give the item back (its budget hold is voided) and return to the workspace."""
    session = get_session()
    annotator = current_annotator(session)
    if ActionForm().validate_on_submit():
        try:
            leases.release_assignment(session, annotator=annotator, assignment_id=assignment_id, now=utcnow())
        except Conflict as exc:
            flash(exc.message, "error")
        else:
            flash("Released: the item went back to the pool.", "info")
    return redirect(url_for("web.workspace"))


@bp.post("/work/assignments/<int:assignment_id>/heartbeat")
@area_required(WORK)
@retry_transaction
@reload_user_on_retry
def heartbeat(assignment_id: int) -> Response:
    """More time: extend the lease up to its cap. JSON for the page's script, a redirect for a plain form."""
    session = get_session()
    annotator = current_annotator(session)
    wants_json = request.accept_mimetypes.best == "application/json"
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for("web.assignment", assignment_id=assignment_id))
    now = utcnow()
    # A Conflict (the lease ended) propagates: the error handler answers JSON or a page, as asked.
    extended = leases.extend_lease(session, annotator=annotator, assignment_id=assignment_id, now=now)
    if wants_json:
        return jsonify(
            {
                "lease_expires_at": extended.lease_expires_at.isoformat(),
                "seconds_left": int((extended.lease_expires_at - now).total_seconds()),
                "can_extend": extended.lease_expires_at < extended.lease_cap_at,
            }
        )
    flash("The lease is extended.", "info")
    return redirect(url_for("web.assignment", assignment_id=assignment_id))


@bp.post("/work/labels/<int:label_id>/appeal")
@area_required(WORK)
@retry_transaction
@reload_user_on_retry
def appeal(label_id: int) -> Response | tuple[str, int]:
    """Appeal the rejection of one of my labels, with a comment for the reviewer."""
    session = get_session()
    annotator = current_annotator(session)
    label = session.scalar(select(Label).where(Label.id == label_id, Label.annotator_id == annotator.id))
    if label is None:
        raise NotFound(f"Label {label_id} not found.")
    own = leases.assignment_for(session, annotator=annotator, assignment_id=label.assignment_id, lock=False)
    form = AppealForm()
    if not form.validate_on_submit():
        return _task_page(annotator, own, status=422, appeal_form=form)
    try:
        appeals.file_appeal(
            session, label_id=label.id, annotator=annotator, comment=form.comment.data or "", now=utcnow()
        )
    except Conflict as exc:
        flash(exc.message, "error")
    else:
        flash("Appeal sent: a different reviewer will look at it.", "success")
    return redirect(url_for("web.assignment", assignment_id=own.id))


@bp.get("/work/history")
@area_required(WORK)
def history() -> str:
    """My recent assignments, newest first, with their review state and any rejection reason (keyset pages)."""
    session = get_session()
    annotator = current_annotator(session)
    before = id_arg("before")
    stmt = (
        select(Assignment, Project.name, Task.external_id, Label, Appeal.state)
        .join(Project, Project.id == Assignment.project_id)
        .join(Task, Task.id == Assignment.task_id)
        .outerjoin(Label, Label.assignment_id == Assignment.id)
        .outerjoin(Appeal, Appeal.label_id == Label.id)
        .where(Assignment.annotator_id == annotator.id)
    )
    if before:
        stmt = stmt.where(Assignment.id < before)
    rows = session.execute(stmt.order_by(Assignment.id.desc()).limit(HISTORY_PAGE + 1)).all()
    more = len(rows) > HISTORY_PAGE
    rows = rows[:HISTORY_PAGE]
    return render_template(
        "web/work/history.html",
        rows=rows,
        next_before=rows[-1][0].id if more else None,
        now=utcnow(),
    )


@bp.get("/work/earnings")
@area_required(WORK)
def earnings() -> str:
    """Pending, accepted, rejected, bonuses and paid out, in total and per day, over 7, 30 or 90 days; the
    period's bonuses with their projects and reasons."""
    session = get_session()
    annotator = current_annotator(session)
    days = request.args.get("days", type=int)
    days = days if days in EARNINGS_PERIODS else 30
    now = utcnow()
    report = annotator_earnings(
        session,
        annotator_id=annotator.id,
        since=now - timedelta(days=days),
        until=now,
        label_limit=0,
        bonus_limit=EARNINGS_BONUSES_SHOWN,
    )
    project_ids = {item.project_id for item in report.bonus_items}
    project_names = (
        dict(
            session.execute(select(Project.id, Project.name).where(Project.id.in_(project_ids)))
            .tuples()
            .all()
        )
        if project_ids
        else {}
    )
    return render_template(
        "web/work/earnings.html",
        report=report,
        days=days,
        periods=EARNINGS_PERIODS,
        my_price=Money(annotator.price_minor, annotator.currency),
        project_names=project_names,
        bonuses_shown=EARNINGS_BONUSES_SHOWN,
    )
