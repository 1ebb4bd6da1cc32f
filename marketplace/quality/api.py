"""Manual review and appeals: /api/v1/review/next, /api/v1/labels/{id}/review|appeal, /api/v1/appeals."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.auth import current_annotator, current_user
from marketplace.accounts.models import User
from marketplace.api import Blueprint, Id
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import NotFound
from marketplace.projects.models import Project, Task
from marketplace.quality import appeals, review
from marketplace.quality.models import Appeal, ReviewEntry
from marketplace.work.models import Label

blp = Blueprint("quality", __name__, url_prefix="/api/v1", description="Manual review and appeals")


class QueueQuery(ma.Schema):
    project_id = Id()


class ReviewIn(ma.Schema):
    decision = fields.String(required=True, validate=validate.OneOf(["accept", "reject"]))
    reason = fields.String(
        validate=validate.Length(max=1000), metadata={"description": "Required to reject."}
    )


class AppealIn(ma.Schema):
    comment = fields.String(required=True, validate=validate.Length(min=1, max=5000))


class AppealDecisionIn(ma.Schema):
    decision = fields.String(required=True, validate=validate.OneOf(["uphold", "deny"]))
    reason = fields.String(validate=validate.Length(max=1000), metadata={"description": "Required to deny."})


def label_view(label: Label) -> dict[str, Any]:
    """A label as reviewers and its annotator see it."""
    return {
        "id": label.id,
        "task_id": label.task_id,
        "project_id": label.project_id,
        "annotator_id": label.annotator_id,
        "value": label.value,
        "is_gold": label.is_gold,
        "review_state": label.review_state,
        "reason": label.reason,
        "reviewed_by_id": label.reviewed_by_id,
        "reviewed_at": label.reviewed_at.isoformat() if label.reviewed_at else None,
        "time_spent_ms": label.time_spent_ms,
        "created_at": label.created_at.isoformat(),
    }


def _context(label: Label) -> dict[str, Any]:
    session = get_session()
    task = session.get_one(Task, label.task_id)
    project = session.get_one(Project, label.project_id)
    return {
        "label": label_view(label),
        "task": {"id": task.id, "external_id": task.external_id, "payload": task.payload},
        "project": {
            "id": project.id,
            "name": project.name,
            "instructions": project.instructions,
            "label_schema": project.label_schema,
        },
    }


def appeal_view(appeal: Appeal) -> dict[str, Any]:
    """An appeal as the API shows it."""
    return {
        "id": appeal.id,
        "label_id": appeal.label_id,
        "project_id": appeal.project_id,
        "annotator_id": appeal.annotator_id,
        "comment": appeal.comment,
        "state": appeal.state,
        "rejected_by_id": appeal.rejected_by_id,
        "decided_by_id": appeal.decided_by_id,
        "decided_at": appeal.decided_at.isoformat() if appeal.decided_at else None,
        "reason": appeal.reason,
        "created_at": appeal.created_at.isoformat(),
    }


def _entry_view(entry: ReviewEntry) -> dict[str, Any]:
    label = get_session().get_one(Label, entry.label_id)
    return {
        **_context(label),
        "queue": {
            "reason": entry.reason,
            "queued_at": entry.queued_at.isoformat(),
            "auto_accept_at": entry.due_at.isoformat(),
            "claim_expires_at": entry.claim_expires_at.isoformat() if entry.claim_expires_at else None,
        },
    }


def _reviewable_project_id(session: Session, user: User, query: dict[str, Any]) -> int | None:
    """The `project_id` filter of a queue, checked: the caller must review for that project."""
    project_id: int | None = query.get("project_id")
    if project_id is not None:
        project = session.get(Project, project_id)
        if project is None:
            raise NotFound(f"Project {project_id} not found.")
        review.check_reviewer(session, user=user, project=project, what=f"Project {project_id}")
    return project_id


@blp.route("/review/next")
class NextReview(MethodView):
    @blp.arguments(QueueQuery, location="query")
    @blp.response(200)
    @retry_transaction
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Claim the oldest label waiting for review in your organisations (`label` is null when none waits)."""
        session = get_session()
        user = current_user()
        project_id = _reviewable_project_id(session, user, query)
        entry = review.next_for_review(session, user=user, now=utcnow(), project_id=project_id)
        if entry is None:
            return {"label": None, "task": None, "project": None, "queue": None}
        return _entry_view(entry)


@blp.route("/labels/<int:label_id>/review")
class ReviewLabel(MethodView):
    @blp.arguments(ReviewIn)
    @blp.response(200)
    @retry_transaction
    def post(self, body: dict[str, Any], label_id: int) -> dict[str, Any]:
        """Accept or reject (with a reason) a label waiting for review; never your own."""
        session = get_session()
        label = review.review_label(
            session,
            label_id=label_id,
            user=current_user(),
            decision=body["decision"],
            reason=body.get("reason"),
            now=utcnow(),
        )
        return label_view(label)


@blp.route("/labels/<int:label_id>/appeal")
class LabelAppeal(MethodView):
    @blp.arguments(AppealIn)
    @blp.response(201)
    @retry_transaction
    def post(self, body: dict[str, Any], label_id: int) -> dict[str, Any]:
        """Appeal the rejection of your label (once per label, within 30 days)."""
        session = get_session()
        appeal = appeals.file_appeal(
            session,
            label_id=label_id,
            annotator=current_annotator(session),
            comment=body["comment"],
            now=utcnow(),
        )
        return appeal_view(appeal)

    @blp.response(200)
    def get(self, label_id: int) -> dict[str, Any]:
        """The appeal on your label, and where it stands."""
        session = get_session()
        annotator = current_annotator(session)
        appeal = session.scalar(
            select(Appeal).where(Appeal.label_id == label_id, Appeal.annotator_id == annotator.id)
        )
        if appeal is None:
            raise NotFound(f"No appeal on label {label_id}.")
        return appeal_view(appeal)


@blp.route("/appeals/next")
class NextAppeal(MethodView):
    @blp.arguments(QueueQuery, location="query")
    @blp.response(200)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The oldest open appeal you may decide (not on your own rejection); `appeal` is null when none waits."""
        session = get_session()
        user = current_user()
        project_id = _reviewable_project_id(session, user, query)
        appeal = appeals.next_appeal(session, user=user, project_id=project_id)
        if appeal is None:
            return {"appeal": None, "label": None, "task": None, "project": None}
        return {"appeal": appeal_view(appeal), **_context(session.get_one(Label, appeal.label_id))}


@blp.route("/appeals/<int:appeal_id>/decide")
class DecideAppeal(MethodView):
    @blp.arguments(AppealDecisionIn)
    @blp.response(200)
    @retry_transaction
    def post(self, body: dict[str, Any], appeal_id: int) -> dict[str, Any]:
        """Uphold (the label is accepted and paid) or deny (with a reason) an appeal; not on your own rejection."""
        session = get_session()
        appeal = appeals.decide_appeal(
            session,
            appeal_id=appeal_id,
            user=current_user(),
            decision=body["decision"],
            reason=body.get("reason"),
            now=utcnow(),
        )
        return {"appeal": appeal_view(appeal), "label": label_view(session.get_one(Label, appeal.label_id))}
