"""The manager's settings page of a project: its status, what `PATCH /api/v1/projects/<id>` changes, and the
webhook's signing secret.

As on the setup pages, the form is read as people write it (amounts as decimals in the project's currency, the
lease in minutes, the deadline as a UTC wall time) and turned into the API's body, holding only what differs
from the project. That body is checked by the API's own schema (`ProjectFields`) and handed to the same service
(`update_project`); refusals land on the fields their `details` name. The signing secret is shown masked; a
rotation (`rotate_webhook_secret`) shows the new one once.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import flash, redirect, render_template, request, url_for
from flask import session as browser_session
from werkzeug.wrappers import Response

from marketplace.accounts.auth import project_for
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import Conflict, InvalidInput
from marketplace.events.delivery import SIGNATURE_HEADER
from marketplace.events.models import WebhookSecret
from marketplace.events.services import rotate_webhook_secret
from marketplace.projects.api import ProjectFields
from marketplace.projects.models import Project, ProjectStatus

# `allowed_transitions` reads the table `update_project` enforces, so the offered buttons are exactly the changes
# the service allows.
from marketplace.projects.services import REVIEW_DEFAULTS, allowed_transitions, update_project
from marketplace.web.access import PROJECT_MANAGERS, PROJECTS, area_required, reload_user_on_retry
from marketplace.web.blueprint import bp
from marketplace.web.formatting import amount_input, parse_amount
from marketplace.web.forms import ActionForm, ProjectSettingsForm, ProjectStatusForm
from marketplace.web.project_setup_views import (
    schema_errors,
    service_error,
)
from payments.money import Money

#: every review parameter on the form, and the type the service wants it in (one per REVIEW_DEFAULTS entry)
REVIEW_PARAMS: dict[str, type] = {
    "gold_rate": float,
    "gold_accuracy_floor": float,
    "gold_min_items": int,
    "pay_correct_gold": bool,
    "agreement_threshold": float,
    "max_extra_labels": int,
    "review_window_hours": int,
    "min_seconds_per_label": float,
    "fast_answer_limit": int,
}
#: API field → form field, where their names differ
_FORM_FIELD = {
    "pay_per_label_minor": "pay_per_label",
    "budget_minor": "budget",
    "lease_seconds": "lease_minutes",
}
#: (from, to) → the button that makes that change, and what it means for annotators
_STATUS_ACTIONS: dict[tuple[str, str], tuple[str, str]] = {
    (ProjectStatus.DRAFT, ProjectStatus.ACTIVE): ("Activate", "Annotators get its tasks once it has budget."),
    (ProjectStatus.ACTIVE, ProjectStatus.PAUSED): ("Pause", "Annotators get no new tasks until it resumes."),
    (ProjectStatus.PAUSED, ProjectStatus.ACTIVE): ("Resume", "Annotators get its tasks again."),
}
_COMPLETE = ("Complete", "Final: a completed project can no longer be changed or reopened.")
#: the message after a status change, by the new status
_STATUS_DONE = {
    ProjectStatus.ACTIVE: "Project active: annotators get its tasks.",
    ProjectStatus.PAUSED: "Project paused: annotators get no new tasks from it.",
    ProjectStatus.COMPLETED: "Project completed.",
}
#: the browser session's key naming the secret just rotated (a digest of it, never the secret itself)
_ROTATION_NOTE = "web.webhook_rotation"


def status_actions(project: Project) -> list[tuple[str, str, str]]:
    """The status changes `update_project` allows from the project's status: (status, button, explanation)."""
    allowed = allowed_transitions(project.status)
    actions = []
    for target in sorted(allowed, key=lambda status: status == ProjectStatus.COMPLETED):
        button, note = _STATUS_ACTIONS.get((project.status, target), _COMPLETE)
        actions.append((str(target), button, note))
    return actions


def _current_values(project: Project) -> dict[str, Any]:
    """The form's fields as the project holds them now (what the page shows, and what a change differs from)."""
    params = {**REVIEW_DEFAULTS, **(project.review_params or {})}
    return {
        "name": project.name,
        "instructions": project.instructions,
        # the form's precision: a minute, UTC
        "deadline": project.deadline_at.astimezone(UTC).replace(tzinfo=None, second=0, microsecond=0),
        "pay_per_label": amount_input(Money(project.pay_per_label_minor, project.currency)),
        "budget": amount_input(Money(project.budget_minor, project.currency)),
        "lease_minutes": project.lease_seconds // 60,
        "webhook_url": project.webhook_url or "",
        **{
            name: Decimal(str(params[name])) if kind is float else kind(params[name])
            for name, kind in REVIEW_PARAMS.items()
        },
    }


def _lines(text: str | None) -> str:
    # browsers send a textarea's line breaks as CRLF
    return (text or "").replace("\r\n", "\n")


def _changes(form: ProjectSettingsForm, project: Project) -> dict[str, Any] | None:
    """The API's fields for `update_project`: only those the form changes, checked by the API's schema; None
    (and errors on the form) if something is wrong."""
    current = _current_values(project)
    body: dict[str, Any] = {}
    name = (form.name.data or "").strip()
    if name != project.name:
        body["name"] = name
    instructions = _lines(form.instructions.data)
    if instructions != _lines(project.instructions):
        body["instructions"] = instructions
    assert form.deadline.data is not None  # InputRequired
    if form.deadline.data != current["deadline"]:
        # the form's deadline is a UTC wall time, as its label says
        body["deadline"] = form.deadline.data.replace(tzinfo=UTC).isoformat()
    amounts_ok = True
    for field, api_name, stored in (
        (form.pay_per_label, "pay_per_label_minor", project.pay_per_label_minor),
        (form.budget, "budget_minor", project.budget_minor),
    ):
        try:
            amount = parse_amount(field.data, project.currency)
        except ValueError as exc:
            field.errors = [*field.errors, str(exc)]
            amounts_ok = False
            continue
        if amount.amount != stored:
            body[api_name] = amount.amount
    if form.lease_minutes.data != current["lease_minutes"]:
        assert form.lease_minutes.data is not None  # InputRequired
        body["lease_seconds"] = form.lease_minutes.data * 60
    webhook_url = (form.webhook_url.data or "").strip() or None
    if webhook_url != project.webhook_url:
        body["webhook_url"] = webhook_url
    params = {
        name: kind(getattr(form, name).data)
        for name, kind in REVIEW_PARAMS.items()
        if getattr(form, name).data != current[name]
    }
    if params:
        body["review_params"] = params
    if not amounts_ok:
        return None
    schema = ProjectFields()
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ma.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
        schema_errors(form, messages, schema, project.currency, _FORM_FIELD)
        return None
    return loaded


def _changed_labels(form: ProjectSettingsForm, fields: dict[str, Any]) -> list[str]:
    """The labels of the form's fields behind the API's `fields`, in the form's order."""
    names = {_FORM_FIELD.get(name, name) for name in fields if name != "review_params"}
    names |= set(fields.get("review_params", {}))
    return [field.label.text for field in form if field.name in names]


def _secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _masked(secret: str) -> str:
    """'whsec_••••••••Ab3d': enough to tell secrets apart, not enough to sign with."""
    prefix = "whsec_" if secret.startswith("whsec_") else ""
    return f"{prefix}{'•' * 8}{secret[-4:]}"


def _render(
    project: Project,
    *,
    form: ProjectSettingsForm,
    status_form: ProjectStatusForm,
    status: int,
    rotated: Any = None,
) -> tuple[str, int]:
    """The page; `rotated` is the browser session's note of a rotation, which shows the secret if it is this one."""
    secret = get_session().get(WebhookSecret, project.id)
    show_secret = (
        secret is not None
        and isinstance(rotated, dict)
        and rotated.get("project_id") == project.id
        and hmac.compare_digest(str(rotated.get("digest", "")), _secret_digest(secret.secret))
    )
    return (
        render_template(
            "web/projects/settings.html",
            project=project,
            form=form,
            status_form=status_form,
            actions=status_actions(project),
            rotate_form=ActionForm(),
            secret=secret,
            masked_secret=_masked(secret.secret) if secret is not None else None,
            show_secret=show_secret,
            signature_header=SIGNATURE_HEADER,
            pay=Money(project.pay_per_label_minor, project.currency),
            locked=project.status == ProjectStatus.COMPLETED,
        ),
        status,
    )


@bp.route("/projects/<int:project_id>/settings", methods=["GET", "POST"])
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def project_settings(project_id: int) -> Response | tuple[str, int]:
    """Change what `update_project` changes; only the fields that differ from the project are sent."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS, lock=request.method == "POST")
    form = ProjectSettingsForm(data=_current_values(found))
    status = 200
    if form.validate_on_submit():
        fields = _changes(form, found)
        if fields is not None and not fields:
            flash("Nothing changed: the settings were already as sent.", "info")
            return redirect(url_for("web.project_settings", project_id=found.id))
        if fields is not None:
            try:
                # a refusal found half-way must not leave the project half-changed for the page below
                with session.begin_nested():
                    update_project(session, project=found, fields=fields)
            except InvalidInput as exc:
                service_error(
                    form,
                    exc,
                    {
                        **{f"review_params.{name}": getattr(form, name) for name in REVIEW_PARAMS},
                        "deadline": form.deadline,
                    },
                )
                status = 422
            except Conflict as exc:
                form.form_errors.append(exc.message)
                status = 409
            else:
                flash(f"Saved: {', '.join(_changed_labels(form, fields))}.", "success")
                return redirect(url_for("web.project_settings", project_id=found.id))
        else:
            status = 422
    elif form.is_submitted():
        status = 422
    # the note of a rotation is read once: a reload shows the secret masked again
    rotated = browser_session.pop(_ROTATION_NOTE, None) if request.method == "GET" else None
    return _render(found, form=form, status_form=ProjectStatusForm(), status=status, rotated=rotated)


@bp.post("/projects/<int:project_id>/settings/status")
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def project_status(project_id: int) -> Response | tuple[str, int]:
    """Move the project to a status `update_project` allows from its own (activate, pause, resume, complete)."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS, lock=True)
    status_form = ProjectStatusForm()
    status = 422
    if status_form.validate_on_submit():
        wanted = status_form.status.data or ""
        if wanted == found.status:
            flash(f"The project is already {wanted}.", "info")
            return redirect(url_for("web.project", project_id=found.id))
        try:
            fields = ProjectFields().load({"status": wanted})
            update_project(session, project=found, fields=fields)
        except ma.ValidationError:
            status_form.status.errors = [*status_form.status.errors, "Choose one of the offered changes."]
        except Conflict as exc:
            status_form.status.errors = [*status_form.status.errors, exc.message]
            status = 409
        else:
            flash(_STATUS_DONE[ProjectStatus(wanted)], "success")
            return redirect(url_for("web.project", project_id=found.id))
    return _render(
        found, form=ProjectSettingsForm(data=_current_values(found)), status_form=status_form, status=status
    )


@bp.post("/projects/<int:project_id>/settings/webhook-secret")
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def rotate_secret(project_id: int) -> Response:
    """Replace the webhook signing secret; the settings page shows the new one once."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS, lock=True)
    if ActionForm().validate_on_submit():
        secret = rotate_webhook_secret(session, project_id=found.id, now=utcnow())
        # The page after the redirect shows the secret if it is still this one; the browser's session (a
        # cookie) carries only its digest.
        browser_session[_ROTATION_NOTE] = {"project_id": found.id, "digest": _secret_digest(secret.secret)}
        flash("New signing secret made: deliveries from now on are signed with it.", "success")
    return redirect(url_for("web.project_settings", project_id=found.id))
