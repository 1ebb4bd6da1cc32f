"""Logging in and out, and the home page that sends each role to its area."""

from __future__ import annotations

from urllib.parse import urlsplit

import flask_login
from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_user
from marketplace.accounts.services import authenticate
from marketplace.db import get_session
from marketplace.errors import Unauthorized
from marketplace.web.access import areas_for
from marketplace.web.blueprint import bp
from marketplace.web.forms import ActionForm, LoginForm


def _safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site (never another host: no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or not target.isprintable()  # a CR or LF would end the Location header (and fail the redirect)
    ):
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    """Email and password; on success back to the page that asked, or home."""
    if flask_login.current_user.is_authenticated:
        return redirect(url_for("web.home"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            user = authenticate(get_session(), email=form.email.data or "", password=form.password.data or "")
        except Unauthorized as exc:
            error = exc.message
        else:
            flask_login.login_user(user, remember=bool(form.remember.data))
            return redirect(_safe_next(request.args.get("next")) or url_for("web.home"))
    status = 200 if error is None and not form.errors else 401 if error else 422
    return render_template("web/login.html", form=form, error=error), status


@bp.post("/logout")
@flask_login.login_required
def logout() -> Response:
    """End the session (a POST with a CSRF token: a link elsewhere cannot log you out)."""
    form = ActionForm()
    if form.validate_on_submit():
        flask_login.logout_user()
        flash("You are logged out.", "info")
    return redirect(url_for("web.login"))


@bp.get("/")
@flask_login.login_required
def home() -> str | Response:
    """Straight to the one area a user has; a choice when there are several."""
    user = current_user()
    areas = areas_for(get_session(), user)
    if len(areas) == 1:
        return redirect(url_for(areas[0].endpoint))
    return render_template("web/home.html", areas=areas, user=user)
