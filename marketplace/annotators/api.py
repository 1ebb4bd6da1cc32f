"""Skills and annotator profiles: /api/v1/skills, /api/v1/annotators."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Flask, request
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import select

from marketplace.accounts import services as account_services
from marketplace.accounts.auth import current_user, is_platform_admin, require_platform_role
from marketplace.accounts.models import Membership, OrgRole
from marketplace.annotators import services
from marketplace.annotators.models import AnnotatorProfile, AnnotatorStatus, Skill
from marketplace.api import Api, Blueprint, Currency, StrictInteger, money_dict, public
from marketplace.db import get_session
from marketplace.errors import Forbidden, InvalidInput, NotFound
from marketplace.limits import MAX_PRICE_MINOR

blp = Blueprint("annotators", __name__, url_prefix="/api/v1", description="Skills and annotators")


class SkillSchema(ma.Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    description = fields.String(load_default="", validate=validate.Length(max=1000))


SkillLevels = fields.Dict(
    keys=fields.String(validate=validate.Length(min=1, max=100)),
    values=StrictInteger(validate=validate.Range(1, 5)),
)


class AnnotatorSignup(ma.Schema):
    email = fields.Email(metadata={"description": "Needed unless you are already signed in."})
    password = fields.String(validate=validate.Length(min=8, max=200))
    name = fields.String(validate=validate.Length(min=1, max=200))
    display_name = fields.String(validate=validate.Length(min=1, max=200))
    price_minor = StrictInteger(required=True, validate=validate.Range(0, MAX_PRICE_MINOR))
    currency = Currency(required=True)
    capacity = StrictInteger(load_default=5, validate=validate.Range(0, 1000))
    labels_per_hour = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=10000))
    skills = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=100)),
        values=StrictInteger(validate=validate.Range(1, 5)),
        required=True,
    )


class AnnotatorUpdate(ma.Schema):
    display_name = fields.String(validate=validate.Length(min=1, max=200))
    price_minor = StrictInteger(validate=validate.Range(0, MAX_PRICE_MINOR))
    capacity = StrictInteger(validate=validate.Range(0, 1000))
    labels_per_hour = fields.Float(validate=validate.Range(min=0.1, max=10000))
    status = fields.String(validate=validate.OneOf([s.value for s in AnnotatorStatus]))
    skills = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=100)),
        values=StrictInteger(validate=validate.Range(1, 5)),
    )


class SkillLevelOut(ma.Schema):
    skill = fields.String()
    level = fields.Integer()
    accuracy = fields.Float()
    gold_seen = fields.Integer()


class AnnotatorOut(ma.Schema):
    id = fields.Integer()
    display_name = fields.String()
    price = fields.Dict()
    capacity = fields.Integer()
    status = fields.String()
    labels_per_hour = fields.Float()
    measured_labels_per_hour = fields.Float(allow_none=True)
    skills = fields.List(fields.Nested(SkillLevelOut))
    labels_submitted = fields.Integer()
    labels_accepted = fields.Integer()
    labels_rejected = fields.Integer()
    token = fields.String(metadata={"description": "Only on sign-up of a new user: shown once."})


def profile_dict(profile: AnnotatorProfile) -> dict[str, Any]:
    """A profile as the API shows it."""
    counts = services.label_counts(get_session(), annotator_id=profile.id)
    return {
        "id": profile.id,
        "display_name": profile.display_name,
        "price": money_dict(profile.price_minor, profile.currency),
        "capacity": profile.capacity,
        "status": profile.status,
        "labels_per_hour": profile.labels_per_hour,
        "measured_labels_per_hour": profile.measured_labels_per_hour,
        "skills": [
            {
                "skill": s.skill.name,
                "level": s.level,
                "accuracy": round(s.accuracy, 4),
                "gold_seen": s.gold_seen,
            }
            for s in profile.skills
        ],
        "labels_submitted": counts.submitted,
        "labels_accepted": counts.accepted,
        "labels_rejected": counts.rejected,
    }


@blp.route("/skills")
class Skills(MethodView):
    @blp.response(200, SkillSchema(many=True))
    def get(self) -> list[Skill]:
        """All skills."""
        current_user()
        return list(get_session().scalars(select(Skill).order_by(Skill.name)))

    @blp.arguments(SkillSchema)
    @blp.response(201, SkillSchema)
    def post(self, body: dict[str, Any]) -> Skill:
        """Create a skill (platform admin)."""
        require_platform_role("admin")
        return services.create_skill(get_session(), name=body["name"], description=body["description"])


@blp.route("/annotators")
class Annotators(MethodView):
    @blp.arguments(AnnotatorSignup)
    @blp.response(201, AnnotatorOut)
    @public
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign up as an annotator (a new user, or the signed-in one)."""
        session = get_session()
        secret = None
        if request.headers.get("Authorization"):
            user = current_user()
        else:
            missing = [f for f in ("email", "password", "name") if not body.get(f)]
            if missing:
                raise InvalidInput(
                    "A new annotator needs email, password and name.",
                    details=dict.fromkeys(missing, "required"),
                ) from None
            user = account_services.create_user(
                session, email=body["email"], name=body["name"], password=body["password"]
            )
            secret = account_services.issue_token(session, user=user, name="signup")[1]
        profile = services.create_profile(
            session,
            user=user,
            display_name=body.get("display_name") or user.name,
            price_minor=body["price_minor"],
            currency=body["currency"],
            capacity=body["capacity"],
            labels_per_hour=body["labels_per_hour"],
            skills=body["skills"],
        )
        session.refresh(profile)
        out = profile_dict(profile)
        if secret:
            out["token"] = secret
        return out

    @blp.response(200, AnnotatorOut(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Annotator profiles (platform staff and the managers of client organisations)."""
        session = get_session()
        user = current_user()
        if not (user.platform_role or _is_manager_anywhere(user.id)):
            raise Forbidden("Only managers and platform staff can browse annotators.")
        profiles = session.scalars(select(AnnotatorProfile).order_by(AnnotatorProfile.id).limit(1000))
        return [profile_dict(p) for p in profiles]


def _is_manager_anywhere(user_id: int) -> bool:
    role = get_session().scalar(
        select(Membership.role).where(
            Membership.user_id == user_id, Membership.role.in_([OrgRole.ADMIN.value, OrgRole.MANAGER.value])
        )
    )
    return role is not None


@blp.route("/annotators/me")
class MyProfile(MethodView):
    @blp.response(200, AnnotatorOut)
    def get(self) -> dict[str, Any]:
        """Your annotator profile."""
        from marketplace.accounts.auth import current_annotator

        return profile_dict(current_annotator(get_session()))

    @blp.arguments(AnnotatorUpdate)
    @blp.response(200, AnnotatorOut)
    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change your skills, price, capacity, speed or status."""
        from marketplace.accounts.auth import current_annotator

        session = get_session()
        profile = current_annotator(session)
        skills = body.pop("skills", None)
        for name, value in body.items():
            setattr(profile, name, value)
        if skills is not None:
            services.set_skill_levels(session, profile=profile, levels=skills)
        session.flush()
        session.refresh(profile)
        return profile_dict(profile)


@blp.route("/annotators/<int:annotator_id>")
class AnnotatorById(MethodView):
    @blp.response(200, AnnotatorOut)
    def get(self, annotator_id: int) -> dict[str, Any]:
        """One annotator's profile (platform staff, managers, or the annotator themself)."""
        session = get_session()
        user = current_user()
        profile = session.get(AnnotatorProfile, annotator_id)
        if profile is None:
            raise NotFound(f"Annotator {annotator_id} not found.")
        if profile.user_id != user.id and not (
            is_platform_admin(user) or user.platform_role or _is_manager_anywhere(user.id)
        ):
            raise NotFound(f"Annotator {annotator_id} not found.")
        return profile_dict(profile)


def init_app(app: Flask, api: Api) -> None:
    api.register_blueprint(blp)
