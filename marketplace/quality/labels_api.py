"""A project's labels for its staff: /api/v1/projects/{id}/labels (filtered, keyset pages) and reversing rejections."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate

from marketplace.accounts.auth import current_user, project_for
from marketplace.accounts.models import OrgRole
from marketplace.api import Blueprint, Id, PlainInteger, StrictInteger
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.limits import MAX_ID
from marketplace.quality import appeals, review
from marketplace.quality.api import label_view
from marketplace.work.models import ReviewState

blp = Blueprint(
    "labels", __name__, url_prefix="/api/v1", description="A project's labels, and reversing rejections"
)

READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.REVIEWER.value, OrgRole.FINANCE.value)
REVERSERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value)


class LabelsQuery(ma.Schema):
    review_state = fields.String(validate=validate.OneOf([s.value for s in ReviewState]))
    annotator_id = Id()
    reviewed_by_id = Id(metadata={"description": "the reviewer (user) who decided the label"})
    after = PlainInteger(load_default=0, validate=validate.Range(0, MAX_ID))
    limit = PlainInteger(load_default=100, validate=validate.Range(1, 500))


class ReverseIn(ma.Schema):
    label_ids = fields.List(
        StrictInteger(validate=validate.Range(1, MAX_ID)),
        required=True,
        validate=validate.Length(1, appeals.MAX_REVERSALS),
    )
    reason = fields.String(
        required=True, validate=validate.Length(1, 1000), metadata={"description": "shown to the annotators"}
    )


@blp.route("/projects/<int:project_id>/labels")
class ProjectLabels(MethodView):
    @blp.arguments(LabelsQuery, location="query")
    @blp.response(200)
    def get(self, query: dict[str, Any], project_id: int) -> dict[str, Any]:
        """The project's labels by id (keyset pages: pass `next_after` back as `after`), optionally only those in
        one review state, by one annotator or decided by one reviewer."""
        session = get_session()
        project = project_for(session, project_id, *READERS)
        labels = review.project_labels(
            session,
            project_id=project.id,
            review_state=query.get("review_state"),
            annotator_id=query.get("annotator_id"),
            reviewed_by_id=query.get("reviewed_by_id"),
            after=query["after"],
            limit=query["limit"],
        )
        return {
            "items": [label_view(label) for label in labels],
            "next_after": labels[-1].id if len(labels) == query["limit"] else None,
        }


@blp.route("/projects/<int:project_id>/rejections/reverse")
class ReverseRejections(MethodView):
    @blp.arguments(ReverseIn)
    @blp.response(200)
    @retry_transaction
    def post(self, body: dict[str, Any], project_id: int) -> dict[str, Any]:
        """Reverse rejections (admins and managers; up to 500 labels): each rejected label is accepted and paid as
        an upheld appeal would be, with your reason, and an open appeal on it is closed as upheld. All or nothing:
        the budget must pay them all (409 `insufficient_funds` otherwise). A retry reverses nothing twice: those
        labels come back `not_rejected`."""
        session = get_session()
        project = project_for(session, project_id, *REVERSERS)
        outcomes = appeals.reverse_rejections(
            session,
            project=project,
            label_ids=body["label_ids"],
            user=current_user(),
            reason=body["reason"],
            now=utcnow(),
        )
        return {
            "reversed": sum(1 for outcome in outcomes.values() if outcome == "reversed"),
            "outcomes": [
                {"label_id": label_id, "outcome": outcome} for label_id, outcome in outcomes.items()
            ],
        }
