"""Who is asking: bearer tokens for programs (the API), sessions for the web UI, and the ownership checks.

The API accepts only bearer tokens, never the session cookie, so API calls need no CSRF token and a page
cannot make a browser call the API on its owner's behalf.
"""

from __future__ import annotations

import flask_login
from flask import Flask, current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.models import Membership, PlatformRole, User
from marketplace.accounts.services import caller_for_token
from marketplace.annotators.models import AnnotatorProfile
from marketplace.api import is_public
from marketplace.db import get_session
from marketplace.errors import Forbidden, NotFound, Unauthorized
from marketplace.projects.models import Project

login_manager = flask_login.LoginManager()
login_manager.login_view = "web.login"


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    user = get_session().get(User, int(user_id))
    return user if user is not None and user.is_active else None


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.before_request(_authenticate_api_request)


def _authenticate_api_request() -> None:
    """Every API operation but the public ones (`marketplace.api.public`) needs a valid token, checked before the
    operation reads its arguments: a caller without one gets a 401 whatever they sent, and an operation added
    later is closed by default. Views still ask `current_user()`, which answers from here without a second query."""
    if not request.path.startswith("/api/") or request.blueprint == "api-docs":
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return  # no such route: the 404 or 405 follows
    view_class = getattr(view, "view_class", None)
    operation = getattr(view_class, request.method.lower(), None) if view_class is not None else view
    if operation is None or is_public(operation):
        return
    current_user()


def current_user() -> User:
    """The authenticated caller, or a 401 problem."""
    cached: User | None = g.get("auth_user")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("Use 'Authorization: Bearer <token>'.")
        caller = caller_for_token(get_session(), secret=secret.strip())
        if caller is None:
            raise Unauthorized("The token is unknown or revoked.", code="invalid_token")
        g.auth_user, g.auth_profile = caller
        return caller[0]
    if not request.path.startswith("/api/"):
        web_user = flask_login.current_user
        if web_user.is_authenticated:
            assert isinstance(web_user, User)
            g.auth_user = web_user
            return web_user
    raise Unauthorized("Authentication required: send 'Authorization: Bearer <token>' (POST /api/v1/tokens).")


def require_platform_role(*roles: str) -> User:
    """The caller, if they are platform staff with one of `roles` (admin always qualifies)."""
    user = current_user()
    if user.platform_role == PlatformRole.ADMIN or user.platform_role in roles:
        return user
    raise Forbidden(f"This needs the platform role {' or '.join(roles)}.")


def is_platform_admin(user: User) -> bool:
    return user.platform_role == PlatformRole.ADMIN


def current_annotator(session: Session) -> AnnotatorProfile:
    """The caller's annotator profile, or a 403 problem if they have none."""
    user = current_user()
    profile: AnnotatorProfile | None = g.get("auth_profile")  # read with the bearer token, in this session
    if profile is None or profile not in session:
        profile = session.scalar(select(AnnotatorProfile).where(AnnotatorProfile.user_id == user.id))
    if profile is None:
        raise Forbidden("This needs an annotator profile (POST /api/v1/annotators).", code="not_an_annotator")
    return profile


def organisation_role(session: Session, user: User, organisation_id: int) -> str | None:
    """The user's role in the organisation, or None if they are not a member."""
    return session.scalar(
        select(Membership.role).where(
            Membership.user_id == user.id, Membership.organisation_id == organisation_id
        )
    )


def require_org_role(session: Session, organisation_id: int, *roles: str) -> User:
    """The caller, if they hold one of `roles` in the organisation; outsiders get a 404 (it is not theirs)."""
    user = current_user()
    if is_platform_admin(user):
        return user
    role = organisation_role(session, user, organisation_id)
    if role is None:
        raise NotFound("No such organisation.")
    if roles and role not in roles:
        raise Forbidden(f"This needs the role {' or '.join(roles)} in the organisation.")
    return user


def project_for(session: Session, project_id: int, *roles: str, lock: bool = False) -> Project:
    """The project, if the caller belongs to its organisation with one of `roles`; another tenant's is a 404."""
    user = current_user()
    stmt = select(Project).where(Project.id == project_id)
    if lock:
        # FOR NO KEY UPDATE: it orders changes to the project, while the key-share locks that inserting its
        # assignments, labels and review entries takes (their foreign keys) go on. A plain FOR UPDATE made a
        # lease that had claimed an item wait for the project, and a change to the project's items wait for
        # that lease's item: a deadlock.
        stmt = stmt.with_for_update(key_share=True)
    project = session.scalar(stmt)
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    if is_platform_admin(user):
        return project
    role = organisation_role(session, user, project.organisation_id)
    if role is None:
        raise NotFound(f"Project {project_id} not found.")
    if roles and role not in roles:
        raise Forbidden(f"This needs the role {' or '.join(roles)} in the project's organisation.")
    return project
