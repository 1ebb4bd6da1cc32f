"""Tokens and the caller's identity: POST/DELETE /api/v1/tokens, GET /api/v1/me."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Flask
from flask.views import MethodView
from flask_limiter.util import get_remote_address
from marshmallow import fields, validate
from sqlalchemy import select

from marketplace.accounts import services
from marketplace.accounts.auth import current_user
from marketplace.accounts.models import Membership, Organisation
from marketplace.annotators.models import AnnotatorProfile
from marketplace.api import Api, Blueprint, public
from marketplace.db import get_session, retry_transaction
from marketplace.ratelimit import LOGIN_LIMIT, limiter

blp = Blueprint("tokens", __name__, url_prefix="/api/v1", description="Authentication and identity")


class TokenRequest(ma.Schema):
    email = fields.Email(required=True)
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))
    name = fields.String(load_default="api", validate=validate.Length(min=1, max=100))


class TokenResponse(ma.Schema):
    id = fields.Integer()
    token = fields.String(metadata={"description": "Shown once; store it now."})
    prefix = fields.String()
    name = fields.String()


class MembershipOut(ma.Schema):
    organisation_id = fields.Integer()
    organisation = fields.String()
    role = fields.String()


class MeResponse(ma.Schema):
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    platform_role = fields.String(allow_none=True)
    memberships = fields.List(fields.Nested(MembershipOut))
    annotator_id = fields.Integer(allow_none=True)


@blp.route("/tokens")
class Tokens(MethodView):
    decorators = [limiter.limit(LOGIN_LIMIT, key_func=get_remote_address, methods=["POST"])]

    @blp.arguments(TokenRequest)
    @blp.response(201, TokenResponse)
    @public
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange email and password for an API token."""
        session = get_session()
        user = services.authenticate(session, email=body["email"], password=body["password"])
        token, secret = services.issue_token(session, user=user, name=body["name"])
        return {"id": token.id, "token": secret, "prefix": token.prefix, "name": token.name}


@blp.route("/tokens/<int:token_id>")
class TokenById(MethodView):
    @blp.response(204)
    @retry_transaction
    def delete(self, token_id: int) -> None:
        """Revoke one of your tokens."""
        services.revoke_token(get_session(), user=current_user(), token_id=token_id)


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, MeResponse)
    def get(self) -> dict[str, Any]:
        """Who you are: roles in organisations and your annotator profile."""
        session = get_session()
        user = current_user()
        rows = session.execute(
            select(Membership.organisation_id, Organisation.name, Membership.role)
            .join(Organisation, Organisation.id == Membership.organisation_id)
            .where(Membership.user_id == user.id)
            .order_by(Membership.organisation_id)
        ).all()
        annotator_id = session.scalar(select(AnnotatorProfile.id).where(AnnotatorProfile.user_id == user.id))
        return {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "platform_role": user.platform_role,
            "memberships": [{"organisation_id": r[0], "organisation": r[1], "role": r[2]} for r in rows],
            "annotator_id": annotator_id,
        }


def init_app(app: Flask, api: Api) -> None:
    api.register_blueprint(blp)
