"""The Redis client: an accelerator only (counters, rate limits, jobs, caches). Nothing true lives only here."""

from __future__ import annotations

import logging

import redis as redis_lib
from flask import Flask, current_app

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Build the app's client (none when REDIS_URL is unset: every feature then runs from the database)."""
    url = app.config.get("REDIS_URL")
    client = (
        redis_lib.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        if url
        else None
    )
    app.extensions["labelforce.redis"] = client


def get_redis(app: Flask | None = None) -> redis_lib.Redis | None:
    """The app's Redis client, or None when Redis is not configured."""
    app = app or current_app
    client: redis_lib.Redis | None = app.extensions.get("labelforce.redis")
    return client


def key(*parts: object, app: Flask | None = None) -> str:
    """A key under the app's prefix, so that runs and tenants of one server never see each other's keys."""
    app = app or current_app
    return str(app.config.get("REDIS_PREFIX", "lf:")) + ":".join(str(p) for p in parts)


def ping(app: Flask | None = None) -> bool | None:
    """True if Redis answers, False if it is configured but down, None if it is not configured."""
    client = get_redis(app)
    if client is None:
        return None
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        log.warning("redis did not answer", exc_info=True)
        return False
