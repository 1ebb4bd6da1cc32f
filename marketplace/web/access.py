"""Who may see which area of the web UI. Objects inside an area are checked by marketplace.accounts.auth.

Areas follow the roles: annotators work, organisation members see their projects, reviewers (and the managers
and admins above them) review, platform finance sees payouts. A user may have several areas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import g
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.auth import current_user, is_platform_admin
from marketplace.accounts.models import Membership, Organisation, OrgRole, PlatformRole, User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.db import get_session
from marketplace.errors import Forbidden

F = TypeVar("F", bound=Callable[..., Any])

#: organisation roles that manage projects (import tasks) and those that may read them
PROJECT_MANAGERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value)
PROJECT_READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.REVIEWER.value, OrgRole.FINANCE.value)
#: organisation roles that see a project's money (as the budget API)
BUDGET_READERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.FINANCE.value)
#: organisation roles that decide labels in manual review
REVIEWERS = (OrgRole.ADMIN.value, OrgRole.MANAGER.value, OrgRole.REVIEWER.value)


@dataclass(frozen=True)
class Area:
    key: str
    title: str
    endpoint: str
    description: str
    #: the URL prefix of the area's pages (marks the menu entry of the current page)
    path: str


WORK = Area("work", "Work", "web.workspace", "Get paid tasks, see your labels and earnings.", "/work")
PROJECTS = Area(
    "projects", "Projects", "web.projects", "Progress, budget and pace of your projects.", "/projects"
)
REVIEW = Area(
    "review", "Review", "web.review_queue", "Decide labels waiting for review, and appeals.", "/review"
)
FINANCE = Area("finance", "Finance", "web.finance", "Payouts and reconciliation.", "/finance")


def areas_for(session: Session, user: User) -> list[Area]:
    """The areas `user` may open, in menu order (two small indexed queries, once per request)."""
    cached: list[Area] | None = g.get("web_areas")
    if cached is not None:
        return cached
    roles = set(session.scalars(select(Membership.role).where(Membership.user_id == user.id).distinct()))
    annotator = session.scalar(select(AnnotatorProfile.id).where(AnnotatorProfile.user_id == user.id))
    admin = is_platform_admin(user)
    areas = []
    if annotator is not None:
        areas.append(WORK)
    if admin or roles:
        areas.append(PROJECTS)
    if admin or roles & set(REVIEWERS):
        areas.append(REVIEW)
    if admin or user.platform_role == PlatformRole.FINANCE:
        areas.append(FINANCE)
    g.web_areas = areas
    return areas


def managed_organisations(session: Session, user: User) -> list[Organisation]:
    """The organisations `user` may create projects in: those they administer or manage (every one for
    platform admins, as the API allows)."""
    stmt = select(Organisation).order_by(Organisation.name, Organisation.id)
    if not is_platform_admin(user):
        stmt = stmt.where(
            Organisation.id.in_(
                select(Membership.organisation_id).where(
                    Membership.user_id == user.id, Membership.role.in_(PROJECT_MANAGERS)
                )
            )
        )
    return list(session.scalars(stmt))


def reload_user_on_retry(view: F) -> F:
    """Under `retry_transaction`: a retried attempt reloads the logged-in user in its fresh session.

    The retry closes the session that loaded Flask-Login's cached user (`g._login_user`), leaving it detached
    and expired; dropping it makes Flask-Login load the user again through its user loader.
    """

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("web_attempted"):
            g.pop("_login_user", None)
            g.pop("web_areas", None)
        g.web_attempted = True
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def area_required(area: Area) -> Callable[[F], F]:
    """Log in first (redirect to the login page), then refuse with 403 anyone without `area`."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if area not in areas_for(get_session(), current_user()):
                raise Forbidden(f"Your account has no access to {area.title}.", code="no_access")
            return view(*args, **kwargs)

        return login_required(wrapper)  # type: ignore[return-value]

    return decorator
