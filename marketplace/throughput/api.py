"""Progress and speed: /api/v1/projects/{id}/progress, /api/v1/annotators/me/stats, /api/v1/skills/{id}/throughput."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app
from flask.views import MethodView
from sqlalchemy import select

from marketplace.accounts.auth import current_annotator, current_user, project_for
from marketplace.accounts.models import Membership, OrgRole
from marketplace.annotators.models import Skill
from marketplace.api import Blueprint
from marketplace.db import get_session, utcnow
from marketplace.errors import Forbidden, NotFound
from marketplace.redis import get_redis
from marketplace.throughput.counters import window_counts
from marketplace.throughput.services import annotator_stats, project_progress

blp = Blueprint(
    "throughput", __name__, url_prefix="/api/v1", description="Progress, throughput and forecasts"
)

READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.REVIEWER.value, OrgRole.FINANCE.value)


@blp.route("/projects/<int:project_id>/progress")
class ProjectProgress(MethodView):
    @blp.response(200)
    def get(self, project_id: int) -> dict[str, Any]:
        """Items and labels done, throughput, ETA at the current pace and at full capacity, budget and risks."""
        session = get_session()
        project = project_for(session, project_id, *READERS)
        progress = project_progress(
            session,
            project=project,
            now=utcnow(),
            fee_bps=int(current_app.config["PLATFORM_FEE_BPS"]),
            seen_window=timedelta(seconds=int(current_app.config["ANNOTATOR_SEEN_WINDOW_SECONDS"])),
            client=get_redis(),
        )
        return progress.to_json()


@blp.route("/annotators/me/stats")
class MyStats(MethodView):
    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """Your speed, recent throughput, acceptance rate, accuracy per skill and effective hourly pay."""
        session = get_session()
        return annotator_stats(
            session, annotator=current_annotator(session), now=utcnow(), client=get_redis()
        )


@blp.route("/skills/<int:skill_id>/throughput")
class SkillThroughput(MethodView):
    @blp.response(200)
    def get(self, skill_id: int) -> dict[str, Any]:
        """Labels per hour in a skill over the last 15 minutes, hour and day (platform staff and managers)."""
        session = get_session()
        user = current_user()
        is_manager = session.scalar(
            select(Membership.id).where(
                Membership.user_id == user.id,
                Membership.role.in_([OrgRole.ADMIN.value, OrgRole.MANAGER.value]),
            )
        )
        if not (user.platform_role or is_manager):
            raise Forbidden("Only managers and platform staff can read skill throughput.")
        skill = session.get(Skill, skill_id)
        if skill is None:
            raise NotFound(f"Skill {skill_id} not found.")
        counts, source = window_counts(
            session, scope="skill", scope_id=skill.id, now=utcnow(), client=get_redis()
        )
        return {"skill": skill.name, "source": source, "windows": [c.to_json() for c in counts]}
