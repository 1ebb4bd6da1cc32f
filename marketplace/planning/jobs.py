"""The planner as a job: warm-started from the previous plan's potentials (cached in Redis, rebuildable)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta

import redis as redis_lib
from flask import Flask, current_app

from marketplace.db import unit_of_work, utcnow
from marketplace.planning.models import PlanRun
from marketplace.planning.planner import plan_offers, plan_summary
from marketplace.redis import get_redis, key

log = logging.getLogger(__name__)


def _load_potentials(app: Flask) -> dict[str, dict[str, int]] | None:
    client = get_redis(app)
    if client is None:
        return None
    try:
        raw = client.get(key("plan", "potentials", app=app))
    except redis_lib.RedisError:
        log.warning("could not read plan potentials from Redis; planning cold", exc_info=True)
        return None
    if not raw:
        return None
    # The cache only speeds a plan up: an entry of another shape (another version wrote it, or a hand edit) is
    # ignored, not trusted, and the next plan overwrites it.
    try:
        loaded = json.loads(str(raw))
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict) or not all(
        isinstance(currency, str)
        and isinstance(by_annotator, dict)
        and all(isinstance(a, str) and type(p) is int for a, p in by_annotator.items())
        for currency, by_annotator in loaded.items()
    ):
        log.warning("ignoring a plan potentials cache entry of an unknown shape; planning cold")
        return None
    return loaded


def _store_potentials(app: Flask, potentials: dict[str, dict[str, int]]) -> None:
    client = get_redis(app)
    if client is None or not potentials:
        return
    try:
        client.set(key("plan", "potentials", app=app), json.dumps(potentials), ex=24 * 3600)
    except redis_lib.RedisError:
        log.warning("could not cache plan potentials in Redis", exc_info=True)


def run_plan(
    app: Flask | None = None,
    *,
    method: str = "flow",
    project_id: int | None = None,
    time_limit_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Plan once, in one transaction, and return the run's summary."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    warm = _load_potentials(app)
    with unit_of_work(app) as session:
        run, potentials = plan_offers(
            session,
            now=utcnow(),
            fee_bps=app.config["PLATFORM_FEE_BPS"],
            method=method,
            objective=app.config["PLAN_OBJECTIVE"],
            project_id=project_id,
            seen_window=timedelta(seconds=app.config["ANNOTATOR_SEEN_WINDOW_SECONDS"]),
            time_limit_s=time_limit_s,
            warm_potentials=warm,
            progress=progress,
        )
        summary = plan_summary(run)
    _store_potentials(app, potentials)
    return summary


def plan_job() -> dict[str, object]:
    """RQ entry point: plan over everything (the worker provides the app context)."""
    return run_plan()


def latest_run_summary(app: Flask) -> dict[str, object] | None:
    """The newest plan run, if any."""
    from sqlalchemy import select

    with unit_of_work(app) as session:
        run = session.scalar(select(PlanRun).order_by(PlanRun.id.desc()).limit(1))
        return plan_summary(run) if run else None
