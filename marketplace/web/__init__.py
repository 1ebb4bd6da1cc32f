"""The server-rendered web UI: the annotator's workspace, the manager's projects, review and the finance console.

`init_app(app)` registers the blueprint named `web` (CSRF stays on for it; the API blueprints are exempt).
"""

from __future__ import annotations

from typing import Any

import flask_login
from flask import Flask, request
from sqlalchemy.exc import SQLAlchemyError

from marketplace.db import get_session
from marketplace.web import formatting
from marketplace.web.blueprint import bp


@bp.app_context_processor
def _navigation() -> dict[str, Any]:
    """The menu of the logged-in user's areas (also on error pages, unless the database is what failed)."""
    from marketplace.web.access import areas_for

    if request.path.startswith(("/api/", "/static/")):
        return {}
    try:
        user = flask_login.current_user
        if not user.is_authenticated:
            return {"nav_areas": [], "nav_user": None}
        return {"nav_areas": areas_for(get_session(), user), "nav_user": user}
    except SQLAlchemyError:
        return {"nav_areas": [], "nav_user": None}


def init_app(app: Flask) -> None:
    """Register the web blueprint, its pages and the template filters."""
    # Importing the view modules attaches their routes to `bp`.
    from marketplace.web import (  # noqa: F401
        account_views,
        bonus_views,
        finance_views,
        payout_views,
        project_settings_views,
        project_setup_views,
        project_views,
        review_views,
        work_views,
        workforce_views,
    )

    formatting.init_app(app)
    app.register_blueprint(bp)
