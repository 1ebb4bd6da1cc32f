"""What the plan decided: GET /api/v1/routing/plans/latest and GET /api/v1/annotators/me/offers."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.views import MethodView
from sqlalchemy import select

from marketplace.accounts.auth import current_annotator, current_user, is_platform_admin
from marketplace.accounts.models import Membership, OrgRole
from marketplace.api import Api, Blueprint, money_dict
from marketplace.db import get_session
from marketplace.errors import Forbidden, NotFound
from marketplace.planning.models import Offer, PlanRun
from marketplace.planning.planner import plan_summary
from marketplace.projects.models import Project, Task

blp = Blueprint("routing_plans", __name__, url_prefix="/api/v1", description="The routing plan")


@blp.route("/routing/plans/latest")
class LatestPlan(MethodView):
    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """The last plan's figures: size, status, slots filled, cost and timings (managers and admins)."""
        session = get_session()
        user = current_user()
        if not is_platform_admin(user):
            role = session.scalar(
                select(Membership.role)
                .where(
                    Membership.user_id == user.id,
                    Membership.role.in_([OrgRole.ADMIN.value, OrgRole.MANAGER.value]),
                )
                .limit(1)
            )
            if role is None:
                raise Forbidden("Plans are shown to managers and admins.")
        run = session.scalar(select(PlanRun).order_by(PlanRun.id.desc()).limit(1))
        if run is None:
            raise NotFound("No plan has run yet.")
        return plan_summary(run)


@blp.route("/annotators/me/offers")
class MyOffers(MethodView):
    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """What the plan queued for you, in the order you will get it, with what each pays you."""
        session = get_session()
        annotator = current_annotator(session)
        rows = session.execute(
            select(Offer, Project.name, Task.external_id)
            .join(Project, Project.id == Offer.project_id)
            .join(Task, Task.id == Offer.task_id)
            .where(Offer.annotator_id == annotator.id)
            .order_by(Offer.rank)
            .limit(200)
        ).all()
        return {
            "items": [
                {
                    "rank": offer.rank,
                    "project_id": offer.project_id,
                    "project": name,
                    "task_id": offer.task_id,
                    "external_id": external_id,
                    "price": money_dict(offer.price_minor, offer.currency),
                    "plan_run_id": offer.plan_run_id,
                }
                for offer, name, external_id in rows
            ]
        }


def init_app(app: Flask, api: Api) -> None:
    api.register_blueprint(blp)
