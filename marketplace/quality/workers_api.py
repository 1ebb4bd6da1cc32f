"""A project's workforce: /api/v1/projects/{id}/workers (per-annotator performance) and blocking annotators."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy.orm import Session

from marketplace.accounts.auth import current_user, project_for
from marketplace.accounts.models import OrgRole
from marketplace.api import Blueprint, PlainInteger
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import NotFound
from marketplace.limits import MAX_ID
from marketplace.projects.models import Project
from marketplace.quality import workers
from marketplace.throughput.workforce import project_workforce

blp = Blueprint(
    "workforce",
    __name__,
    url_prefix="/api/v1",
    description="A project's annotators: performance, cost, and blocks",
)

#: who sees the numbers (money included) and who blocks
READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.FINANCE.value)
DECIDERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value)


class WorkersQuery(ma.Schema):
    after = PlainInteger(load_default=0, validate=validate.Range(0, MAX_ID))
    limit = PlainInteger(load_default=50, validate=validate.Range(1, 200))


class BlockIn(ma.Schema):
    reason = fields.String(
        required=True,
        validate=validate.Length(1, workers.MAX_REASON),
        metadata={"description": "why; kept with the block and sent in the worker.blocked event"},
    )


def _worker_json(session: Session, project: Project, annotator_id: int) -> dict[str, Any]:
    found = project_workforce(session, project=project, annotator_id=annotator_id)
    if not found:
        raise NotFound(f"Annotator {annotator_id} has not worked on project {project.id}.")
    return found[0].to_json()


@blp.route("/projects/<int:project_id>/workers")
class ProjectWorkers(MethodView):
    @blp.arguments(WorkersQuery, location="query")
    @blp.response(200)
    def get(self, query: dict[str, Any], project_id: int) -> dict[str, Any]:
        """Everyone who took a lease in the project, by annotator id (keyset pages: pass `next_after` back as
        `after`): leases, labels, acceptance, gold answers, time on task, earnings, cost and any block."""
        session = get_session()
        project = project_for(session, project_id, *READERS)
        page = project_workforce(session, project=project, after=query["after"], limit=query["limit"])
        next_after = page[-1].annotator_id if len(page) == query["limit"] else None
        return {
            "project_id": project.id,
            "currency": project.currency,
            "items": [worker.to_json() for worker in page],
            "next_after": next_after,
        }


@blp.route("/projects/<int:project_id>/workers/<int:annotator_id>")
class OneWorker(MethodView):
    @blp.response(200)
    def get(self, project_id: int, annotator_id: int) -> dict[str, Any]:
        """One annotator's numbers in the project (404 if they never took a lease in it)."""
        session = get_session()
        project = project_for(session, project_id, *READERS)
        return _worker_json(session, project, annotator_id)


@blp.route("/projects/<int:project_id>/workers/<int:annotator_id>/block")
class BlockWorker(MethodView):
    @blp.arguments(BlockIn)
    @blp.response(200)
    @retry_transaction
    def post(self, body: dict[str, Any], project_id: int, annotator_id: int) -> dict[str, Any]:
        """Block an annotator from the project, with a reason (admins and managers): no more offers or leases
        in it, and their live leases in it go back to the pool now. `changed` is false if they were blocked
        already (the block they have is kept)."""
        session = get_session()
        project = project_for(session, project_id, *DECIDERS)
        standing = workers.block_annotator(
            session,
            project=project,
            annotator_id=annotator_id,
            reason=body["reason"],
            by_user_id=current_user().id,
            now=utcnow(),
        )
        session.flush()
        return {"changed": standing.changed, "worker": _worker_json(session, project, annotator_id)}


@blp.route("/projects/<int:project_id>/workers/<int:annotator_id>/unblock")
class UnblockWorker(MethodView):
    @blp.response(200)
    @retry_transaction
    def post(self, project_id: int, annotator_id: int) -> dict[str, Any]:
        """Lift any block on an annotator in the project (admins and managers), with a fresh start: the gold and
        fast-answer counts behind automatic blocks restart from zero. `changed` is false if they were not
        blocked."""
        session = get_session()
        project = project_for(session, project_id, *DECIDERS)
        standing = workers.unblock_annotator(
            session, project=project, annotator_id=annotator_id, by_user_id=current_user().id, now=utcnow()
        )
        session.flush()
        return {"changed": standing.changed, "worker": _worker_json(session, project, annotator_id)}
