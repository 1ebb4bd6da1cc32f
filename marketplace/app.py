"""The application factory."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Flask, jsonify
from flask_wtf import CSRFProtect
from sqlalchemy import text

from marketplace import api as api_module
from marketplace import db, errors
from marketplace import redis as redis_module
from marketplace.client_json import ClientJSONRequest, refuse_unstorable_parameters
from marketplace.config import load_config


def _version() -> str:
    try:
        return version("labelforce")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, overridden by `config` (tests pass theirs here)."""
    app = Flask(__name__, instance_relative_config=True)
    # before any route exists: ids in paths are bounded, and request bodies parsed, by the service's rules
    app.url_map.converters["int"] = api_module.IdConverter
    app.request_class = ClientJSONRequest
    app.before_request(refuse_unstorable_parameters)
    settings = load_config()
    if config:
        settings.update(config)
    app.config.from_mapping(settings)
    logging.basicConfig(level=logging.INFO if not app.testing else logging.WARNING)

    db.init_app(app)
    redis_module.init_app(app)
    errors.init_app(app)
    csrf = CSRFProtect(app)
    app.extensions["csrf"] = csrf
    api = api_module.init_app(app)
    from marketplace import ratelimit

    ratelimit.init_app(app)

    from marketplace import jobs, seed
    from marketplace.accounts import api as accounts_api
    from marketplace.accounts import auth
    from marketplace.accounts import cli as accounts_cli
    from marketplace.annotators import api as annotators_api
    from marketplace.billing import api as billing_api
    from marketplace.planning import api as planning_api
    from marketplace.planning import cli as planning_cli
    from marketplace.projects import api as projects_api
    from marketplace.projects import cli as projects_cli
    from marketplace.work import api as work_api
    from marketplace.work import cli as work_cli

    auth.init_app(app)
    from marketplace import web

    web.init_app(app)
    for module in (accounts_api, annotators_api, projects_api, billing_api, planning_api, work_api):
        module.init_app(app, api)
    from marketplace import events, payouts, quality, throughput

    for package in (quality, throughput, events, payouts):
        package.init_app(app, api)
    for cli_module in (accounts_cli, projects_cli, planning_cli, work_cli, jobs, seed):
        cli_module.init_app(app)
    _exempt_api_from_csrf(app, csrf)
    _register_health(app)
    return app


def _exempt_api_from_csrf(app: Flask, csrf: CSRFProtect) -> None:
    # The API authenticates with bearer tokens only (see accounts/auth.py), so a forged cross-site request carries
    # no credentials; CSRF tokens guard the cookie-authenticated web UI.
    for name, blueprint in app.blueprints.items():
        if name not in {"web"}:
            csrf.exempt(blueprint)


def _register_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> Any:
        try:
            with db.database().engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database_ok = True
        except Exception:
            logging.getLogger(__name__).exception("health check: database unreachable")
            database_ok = False
        redis_ok = redis_module.ping(app)
        healthy = database_ok and redis_ok is not False
        body = {
            "status": "ok" if healthy else "degraded",
            "version": _version(),
            "database": {"ok": database_ok, "dialect": db.database().dialect},
            "redis": {"configured": redis_ok is not None, "ok": bool(redis_ok)},
        }
        return jsonify(body), 200 if database_ok else 503
