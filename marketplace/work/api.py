"""The annotator's work loop: /api/v1/work/next, /api/v1/assignments/{id}/submit|release|heartbeat."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Flask, current_app, request
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.auth import current_annotator
from marketplace.api import Api, Blueprint, PlainInteger, StrictInteger, money_dict
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import InvalidInput
from marketplace.limits import MAX_ID
from marketplace.projects.models import Project, Task
from marketplace.quality.policy import review_submitted_label
from marketplace.work import decisions, leases, leasing
from marketplace.work.models import Assignment, Label

blp = Blueprint(
    "work", __name__, url_prefix="/api/v1", description="Getting, labelling and handing back work"
)


class NextRequest(ma.Schema):
    project_id = StrictInteger(validate=validate.Range(1, MAX_ID))


class SubmitRequest(ma.Schema):
    value = fields.Raw(
        required=True, allow_none=False, metadata={"description": "A value of the project's label schema."}
    )
    next = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Submit and next: also lease your next item of the same project, in the same request "
            "(the answer's `next` is what POST /work/next would answer; a retry answers with the same one)."
        },
    )


class AssignmentQuery(ma.Schema):
    state = fields.String(validate=validate.OneOf(["leased", "submitted", "released", "expired"]))
    after = PlainInteger(load_default=0, validate=validate.Range(0, MAX_ID))
    limit = PlainInteger(load_default=50, validate=validate.Range(1, 500))


def assignment_dict(
    assignment: Assignment,
    *,
    task: Task | None = None,
    project: Project | None = None,
    label: Label | None = None,
) -> dict[str, Any]:
    """An assignment as its annotator sees it: the item, the schema, the price and the lease."""
    out: dict[str, Any] = {
        "id": assignment.id,
        "project_id": assignment.project_id,
        "task_id": assignment.task_id,
        "state": assignment.state,
        "price": money_dict(assignment.price_minor, assignment.currency),
        "leased_at": assignment.leased_at.isoformat(),
        "lease_expires_at": assignment.lease_expires_at.isoformat(),
        "lease_cap_at": assignment.lease_cap_at.isoformat(),
        "submitted_at": assignment.submitted_at.isoformat() if assignment.submitted_at else None,
    }
    if task is not None:
        out["task"] = {"id": task.id, "external_id": task.external_id, "payload": task.payload}
    if project is not None:
        out["project"] = {
            "id": project.id,
            "name": project.name,
            "instructions": project.instructions,
            "label_schema": project.label_schema,
        }
    if label is not None:
        out["label"] = label_dict(label)
    return out


def label_dict(label: Label) -> dict[str, Any]:
    return {
        "id": label.id,
        "value": label.value,
        "review_state": label.review_state,
        "reason": label.reason,
        "time_spent_ms": label.time_spent_ms,
        "created_at": label.created_at.isoformat(),
    }


def _next_answer(session: Session, outcome: leasing.LeaseOutcome) -> dict[str, Any]:
    """The answer to "what next": the assignment with its item and schema, or null with the reason."""
    if outcome.assignment is None:
        return {"assignment": None, "reason": outcome.reason, "message": outcome.message}
    assignment = outcome.assignment
    task = session.get_one(Task, assignment.task_id)
    project = session.get_one(Project, assignment.project_id)
    return {
        "assignment": assignment_dict(assignment, task=task, project=project),
        "reason": None,
        "message": None,
    }


@blp.route("/work/next")
class NextWork(MethodView):
    @blp.arguments(NextRequest, required=False)
    @blp.response(200)
    @retry_transaction
    def post(self, body: dict[str, Any] | None) -> dict[str, Any]:
        """Lease the next item the routing plan chose for you (or a spot match); `assignment` is null when there is none."""
        session = get_session()
        annotator = current_annotator(session)
        outcome = leasing.lease_next_assignment(
            session,
            annotator=annotator,
            now=utcnow(),
            fee_bps=current_app.config["PLATFORM_FEE_BPS"],
            project_id=(body or {}).get("project_id"),
        )
        return _next_answer(session, outcome)


@blp.route("/assignments/<int:assignment_id>/submit")
class Submit(MethodView):
    @blp.arguments(SubmitRequest)
    @blp.response(200)
    @blp.doc(
        parameters=[
            {"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}, "required": False}
        ]
    )
    @retry_transaction
    def post(self, body: dict[str, Any], assignment_id: int) -> dict[str, Any]:
        """Submit the label of a live lease; a retry with the same Idempotency-Key returns the first result."""
        session = get_session()
        annotator = current_annotator(session)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 200:
            raise InvalidInput("Idempotency-Key must have 1 to 200 characters.")
        now = utcnow()
        label, created = decisions.submit_label(
            session,
            annotator=annotator,
            assignment_id=assignment_id,
            value=body["value"],
            idempotency_key=key,
            now=now,
        )
        if created:
            review_submitted_label(session, label=label, now=now)
        assignment = session.get_one(Assignment, label.assignment_id)
        out = assignment_dict(assignment, label=label)
        if body["next"]:
            outcome = leasing.lease_after_submit(
                session,
                annotator=annotator,
                submitted=assignment,
                now=now,
                fee_bps=current_app.config["PLATFORM_FEE_BPS"],
                replayed=not created,
            )
            out["next"] = _next_answer(session, outcome)
        return out


@blp.route("/assignments/<int:assignment_id>/release")
class Release(MethodView):
    @blp.response(200)
    @retry_transaction
    def post(self, assignment_id: int) -> dict[str, Any]:
        """Hand the item back to the pool (voids the budget hold)."""
        session = get_session()
        annotator = current_annotator(session)
        return assignment_dict(
            leases.release_assignment(session, annotator=annotator, assignment_id=assignment_id, now=utcnow())
        )


@blp.route("/assignments/<int:assignment_id>/heartbeat")
class Heartbeat(MethodView):
    @blp.response(200)
    @retry_transaction
    def post(self, assignment_id: int) -> dict[str, Any]:
        """Still working: extend the lease (up to its cap)."""
        session = get_session()
        annotator = current_annotator(session)
        return assignment_dict(
            leases.extend_lease(session, annotator=annotator, assignment_id=assignment_id, now=utcnow())
        )


@blp.route("/work/assignments")
class MyAssignments(MethodView):
    @blp.arguments(AssignmentQuery, location="query")
    @blp.response(200)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Your assignments, newest first (keyset: pass `next_after` back as `after`)."""
        session = get_session()
        annotator = current_annotator(session)
        stmt = (
            select(Assignment, Label)
            .outerjoin(Label, Label.assignment_id == Assignment.id)
            .where(Assignment.annotator_id == annotator.id)
        )
        if query.get("state"):
            stmt = stmt.where(Assignment.state == query["state"])
        if query["after"]:
            stmt = stmt.where(Assignment.id < query["after"])
        rows = session.execute(stmt.order_by(Assignment.id.desc()).limit(query["limit"] + 1)).all()
        items = [assignment_dict(a, label=lbl) for a, lbl in rows[: query["limit"]]]
        next_after = rows[query["limit"] - 1][0].id if len(rows) > query["limit"] else None
        return {"items": items, "next_after": next_after}


def init_app(app: Flask, api: Api) -> None:
    api.register_blueprint(blp)
