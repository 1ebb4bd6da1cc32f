"""Event replay and webhook settings: /api/v1/events, /api/v1/projects/{id}/webhook."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import validate
from sqlalchemy import func, select

from marketplace.accounts.auth import current_user, project_for
from marketplace.accounts.models import OrgRole, PlatformRole
from marketplace.api import Blueprint, Id, PlainInteger
from marketplace.db import get_session, utcnow
from marketplace.errors import Forbidden
from marketplace.events import services
from marketplace.events.delivery import MAX_ATTEMPTS, SIGNATURE_HEADER
from marketplace.events.models import DeliveryState, WebhookDelivery
from marketplace.limits import MAX_POSITION

blp = Blueprint("events", __name__, url_prefix="/api/v1", description="Event replay and webhooks")

MANAGERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value)


class EventsQuery(ma.Schema):
    project_id = Id(metadata={"description": "Omit for the platform stream (staff only)."})
    after = PlainInteger(
        load_default=0, validate=validate.Range(0, MAX_POSITION), metadata={"description": "A sequence."}
    )
    limit = PlainInteger(load_default=100, validate=validate.Range(1, 1000))


@blp.route("/events")
class Events(MethodView):
    @blp.arguments(EventsQuery, location="query")
    @blp.response(200)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """A project's events after the `after` sequence, in commit order; pass `next_after` back to go on."""
        session = get_session()
        project_id = query.get("project_id")
        if project_id is None:
            user = current_user()
            if user.platform_role not in {PlatformRole.ADMIN.value, PlatformRole.FINANCE.value}:
                raise Forbidden("Pass project_id: only platform staff read the platform stream.")
        else:
            project_for(session, project_id, *MANAGERS)
        rows = services.list_events(
            session, project_id=project_id, after=query["after"], limit=query["limit"]
        )
        return {
            "items": [services.event_dict(row) for row in rows],
            "next_after": rows[-1].seq if rows else query["after"],
        }


@blp.route("/projects/<int:project_id>/webhook")
class ProjectWebhook(MethodView):
    @blp.response(200)
    def get(self, project_id: int) -> dict[str, Any]:
        """The webhook URL, the signing secret (created on first use) and the deliveries by state."""
        session = get_session()
        project = project_for(session, project_id, *MANAGERS)
        secret = services.webhook_secret(session, project_id=project.id)
        counts = dict(
            session.execute(
                select(WebhookDelivery.state, func.count())
                .where(WebhookDelivery.project_id == project.id)
                .group_by(WebhookDelivery.state)
            )
            .tuples()
            .all()
        )
        return {
            "project_id": project.id,
            "url": project.webhook_url,
            "secret": secret.secret,
            "signature_header": SIGNATURE_HEADER,
            "max_attempts": MAX_ATTEMPTS,
            "deliveries": {state.value: int(counts.get(state.value, 0)) for state in DeliveryState},
        }


@blp.route("/projects/<int:project_id>/webhook/secret")
class RotateSecret(MethodView):
    @blp.response(200)
    def post(self, project_id: int) -> dict[str, Any]:
        """Replace the signing secret; deliveries sent from now on use the new one."""
        session = get_session()
        project = project_for(session, project_id, *MANAGERS)
        secret = services.rotate_webhook_secret(session, project_id=project.id, now=utcnow())
        return {"project_id": project.id, "secret": secret.secret}
