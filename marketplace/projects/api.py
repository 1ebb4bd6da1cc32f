"""Projects, task import, task listing and result export: /api/v1/projects."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import marshmallow as ma
from flask import Flask, Response, request, stream_with_context
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import select

from marketplace.accounts.auth import current_user, is_platform_admin, project_for
from marketplace.accounts.models import Membership, Organisation, OrgRole
from marketplace.api import Api, Blueprint, Currency, Moment, PlainInteger, StrictInteger, money_dict
from marketplace.db import get_session, retry_transaction
from marketplace.errors import Forbidden, InvalidInput, NotFound
from marketplace.limits import MAX_AMOUNT_MINOR, MAX_ID, MAX_PRICE_MINOR
from marketplace.projects import imports, services
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, TaskStatus

blp = Blueprint("projects", __name__, url_prefix="/api/v1", description="Projects, tasks and exports")

MANAGERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value)
READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.REVIEWER.value, OrgRole.FINANCE.value)


class ProjectFields(ma.Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    instructions = fields.String(validate=validate.Length(max=50_000))
    label_schema = fields.Dict()
    skill = fields.String(validate=validate.Length(min=1, max=100))
    min_level = StrictInteger(validate=validate.Range(1, 5))
    pay_per_label_minor = StrictInteger(validate=validate.Range(0, MAX_PRICE_MINOR))
    budget_minor = StrictInteger(validate=validate.Range(0, MAX_AMOUNT_MINOR))
    labels_per_item = StrictInteger(validate=validate.Range(1, 50))
    review_policy = fields.String(validate=validate.OneOf([p.value for p in ReviewPolicy]))
    review_params = fields.Dict()
    lease_seconds = StrictInteger(validate=validate.Range(60, 7 * 24 * 3600))
    deadline = Moment()
    status = fields.String(validate=validate.OneOf([s.value for s in ProjectStatus]))
    webhook_url = fields.URL(allow_none=True, schemes={"http", "https"})


class ProjectCreate(ProjectFields):
    organisation_id = StrictInteger(validate=validate.Range(1, MAX_ID))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    label_schema = fields.Dict(required=True)
    skill = fields.String(required=True, validate=validate.Length(min=1, max=100))
    pay_per_label_minor = StrictInteger(required=True, validate=validate.Range(0, MAX_PRICE_MINOR))
    currency = Currency(required=True)
    deadline = Moment(required=True)


class ProjectOut(ma.Schema):
    id = fields.Integer()
    organisation_id = fields.Integer()
    name = fields.String()
    instructions = fields.String()
    label_schema = fields.Dict()
    skill = fields.String()
    min_level = fields.Integer()
    pay_per_label = fields.Dict()
    budget = fields.Dict()
    labels_per_item = fields.Integer()
    review_policy = fields.String()
    review_params = fields.Dict()
    lease_seconds = fields.Integer()
    deadline = fields.DateTime()
    status = fields.String()
    webhook_url = fields.String(allow_none=True)
    created_at = fields.DateTime()


class TaskOut(ma.Schema):
    id = fields.Integer()
    external_id = fields.String()
    payload = fields.Dict()
    priority = fields.Integer()
    is_gold = fields.Boolean()
    status = fields.String()
    labels_needed = fields.Integer()
    labels_accepted = fields.Integer()
    labels_in_progress = fields.Integer()


class TaskPage(ma.Schema):
    items = fields.List(fields.Nested(TaskOut))
    next_after = fields.Integer(allow_none=True)


class TaskQuery(ma.Schema):
    # query strings are text: these parse "10" (but not "1.5")
    after = PlainInteger(load_default=0, validate=validate.Range(0, MAX_ID))
    limit = PlainInteger(load_default=100, validate=validate.Range(1, 1000))
    status = fields.String(validate=validate.OneOf([s.value for s in TaskStatus]))


class ImportQuery(ma.Schema):
    format = fields.String(validate=validate.OneOf(imports.FORMATS))


class ImportOut(ma.Schema):
    rows = fields.Integer()
    created = fields.Integer()
    existing = fields.Integer()


class ExportQuery(ma.Schema):
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "jsonl", "csv"]))


def project_dict(project: Project) -> dict[str, Any]:
    """A project as the API shows it."""
    return {
        "id": project.id,
        "organisation_id": project.organisation_id,
        "name": project.name,
        "instructions": project.instructions,
        "label_schema": project.label_schema,
        "skill": project.skill.name,
        "min_level": project.min_level,
        "pay_per_label": money_dict(project.pay_per_label_minor, project.currency),
        "budget": money_dict(project.budget_minor, project.currency),
        "labels_per_item": project.labels_per_item,
        "review_policy": project.review_policy,
        "review_params": project.review_params,
        "lease_seconds": project.lease_seconds,
        "deadline": project.deadline_at,
        "status": project.status,
        "webhook_url": project.webhook_url,
        "created_at": project.created_at,
    }


@blp.route("/projects")
class Projects(MethodView):
    @blp.arguments(ProjectCreate)
    @blp.response(201, ProjectOut)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a project in an organisation you manage."""
        session = get_session()
        user = current_user()
        org_id = body.pop("organisation_id", None)
        managed = list(
            session.scalars(
                select(Membership.organisation_id).where(
                    Membership.user_id == user.id, Membership.role.in_(MANAGERS)
                )
            )
        )
        if org_id is None:
            if len(managed) != 1:
                raise InvalidInput(
                    "Say which organisation: organisation_id is needed when you manage several (or none).",
                    details={"organisation_id": "required"},
                )
            org_id = managed[0]
        elif org_id not in managed:
            if not is_platform_admin(user):
                raise Forbidden("You do not manage that organisation.")
            if session.get(Organisation, org_id) is None:
                raise NotFound(f"Organisation {org_id} not found.")
        project = services.create_project(session, organisation_id=org_id, created_by_id=user.id, fields=body)
        return project_dict(project)

    @blp.response(200, ProjectOut(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Projects of the organisations you belong to."""
        session = get_session()
        user = current_user()
        stmt = select(Project).order_by(Project.id)
        if not is_platform_admin(user):
            org_ids = select(Membership.organisation_id).where(Membership.user_id == user.id)
            stmt = stmt.where(Project.organisation_id.in_(org_ids))
        return [project_dict(p) for p in session.scalars(stmt)]


@blp.route("/projects/<int:project_id>")
class ProjectById(MethodView):
    @blp.response(200, ProjectOut)
    def get(self, project_id: int) -> dict[str, Any]:
        """One project."""
        return project_dict(project_for(get_session(), project_id, *READERS))

    @blp.arguments(ProjectFields)
    @blp.response(200, ProjectOut)
    @retry_transaction
    def patch(self, body: dict[str, Any], project_id: int) -> dict[str, Any]:
        """Change a project (its managers)."""
        session = get_session()
        project = project_for(session, project_id, *MANAGERS, lock=True)
        return project_dict(services.update_project(session, project=project, fields=body))


@blp.route("/projects/<int:project_id>/tasks")
class ProjectTasks(MethodView):
    @blp.arguments(ImportQuery, location="query")
    @blp.response(201, ImportOut)
    @blp.doc(
        requestBody={
            "required": True,
            "description": "Tasks as a JSON array, JSON Lines, or CSV/TSV with a header "
            "(external_id, priority, gold_answer; other columns form the payload).",
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    )
    def post(self, query: dict[str, Any], project_id: int) -> dict[str, Any]:
        """Import tasks: all or nothing, idempotent by external_id."""
        session = get_session()
        project = project_for(session, project_id, *MANAGERS)
        fmt = query.get("format") or imports.format_for_mimetype(request.mimetype)
        if fmt is None:
            raise InvalidInput(
                "Send Content-Type application/json, application/x-ndjson, text/csv or "
                "text/tab-separated-values (or ?format=).",
                code="unsupported_media_type",
            )
        result = imports.import_tasks(session, project=project, rows=imports.read_rows(request.stream, fmt))
        return {"rows": result.rows, "created": result.created, "existing": result.existing}

    @blp.arguments(TaskQuery, location="query")
    @blp.response(200, TaskPage)
    def get(self, query: dict[str, Any], project_id: int) -> dict[str, Any]:
        """A page of tasks, keyset-paginated: pass `next_after` back as `after`."""
        session = get_session()
        project = project_for(session, project_id, *READERS)
        items, next_after = services.list_tasks(session, project=project, **query)
        return {"items": items, "next_after": next_after}


@blp.route("/projects/<int:project_id>/export")
class ProjectExport(MethodView):
    @blp.arguments(ExportQuery, location="query")
    @blp.response(200, content_type="application/json")
    def get(self, query: dict[str, Any], project_id: int) -> Response:
        """Accepted labels per task as JSON, JSON Lines or CSV (streamed)."""
        project = project_for(get_session(), project_id, *READERS)
        fmt = query["format"]
        project_id = project.id

        def rows() -> Iterator[dict[str, Any]]:
            # The request's transaction has ended when the body streams: read with a fresh session.
            session = get_session()
            yield from services.iter_export_rows(session, project=session.get_one(Project, project_id))

        body = {"json": _as_json_array, "jsonl": _as_jsonl, "csv": _as_csv}[fmt](rows())
        mimetype = {"json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv"}[fmt]
        response = Response(stream_with_context(body), mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="project-{project_id}-labels.{fmt}"'
        return response


def _as_json_array(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for index, row in enumerate(rows):
        yield ("," if index else "") + json.dumps(row)
    yield "]"


def _as_jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row) + "\n"


def _as_csv(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["task_id", "external_id", "label_id", "annotator_id", "value", "created_at"])
    for row in rows:
        for label in row["labels"]:
            value = label["value"] if isinstance(label["value"], str) else json.dumps(label["value"])
            writer.writerow(
                [
                    row["task_id"],
                    row["external_id"],
                    label["label_id"],
                    label["annotator_id"],
                    value,
                    label["created_at"],
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def init_app(app: Flask, api: Api) -> None:
    api.register_blueprint(blp)
