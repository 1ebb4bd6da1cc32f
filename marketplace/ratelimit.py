"""Rate limits (Flask-Limiter): a default per caller, and a strict one on password logins.

Counters live in Redis when it is configured (shared by every web process) and in memory otherwise. A limit that
is hit answers 429 with a JSON problem and a Retry-After header.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from marketplace.accounts.security import hash_token

#: password guessing is slowed per client address, whatever the token endpoint's callers do otherwise
LOGIN_LIMIT = "10 per minute"


def _caller_key() -> str:
    # A token identifies its caller better than an address shared by a whole office; only its hash is used.
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return "token:" + hash_token(header[7:].strip())[:32]
    return "addr:" + get_remote_address()


limiter = Limiter(key_func=_caller_key, headers_enabled=True)


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", f"{app.config.get('REDIS_PREFIX', 'lf:')}ratelimit")
    app.config["RATELIMIT_DEFAULT"] = app.config.get("RATELIMIT_DEFAULT", "6000 per minute")
    app.config.setdefault("RATELIMIT_ENABLED", True)
    limiter.init_app(app)
