"""Configuration from the environment, with safe defaults for a laptop and strict rules for production."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


class ConfigError(RuntimeError):
    """The configuration cannot be used (for example a production app without a SECRET_KEY)."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def load_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Read the app's settings from `env` (default: the process environment)."""
    env = dict(os.environ) if env is None else env
    production = env.get("LABELFORCE_ENV", "development") == "production"
    secret = env.get("SECRET_KEY")
    if not secret:
        if production:
            raise ConfigError("SECRET_KEY must be set when LABELFORCE_ENV=production")
        secret = secrets.token_hex(32)
    default_db = f"sqlite:///{INSTANCE_DIR / 'labelforce.db'}"
    return {
        "ENV_NAME": "production" if production else "development",
        "SECRET_KEY": secret,
        "DATABASE_URL": env.get("DATABASE_URL") or default_db,
        "DATABASE_POOL_SIZE": _int(env, "DATABASE_POOL_SIZE", 10),
        "DATABASE_MAX_OVERFLOW": _int(env, "DATABASE_MAX_OVERFLOW", 20),
        "REDIS_URL": env.get("REDIS_URL") or None,
        "REDIS_PREFIX": env.get("REDIS_PREFIX", "lf:"),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 64 * 1024 * 1024),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "PLATFORM_FEE_BPS": _int(env, "PLATFORM_FEE_BPS", 2000),
        "PAYOUT_GATEWAY": env.get("PAYOUT_GATEWAY", "local"),
        "PAYOUT_MIN_AMOUNT_MINOR": _int(env, "PAYOUT_MIN_AMOUNT_MINOR", 1000),
        "STRIPE_SECRET_KEY": env.get("STRIPE_SECRET_KEY"),
        "STRIPE_WEBHOOK_SECRET": env.get("STRIPE_WEBHOOK_SECRET"),
        "STRIPE_API_BASE": env.get("STRIPE_API_BASE"),
        "STRIPE_TRANSFERS_PER_SECOND": _int(env, "STRIPE_TRANSFERS_PER_SECOND", 20),
        "PLAN_INTERVAL_SECONDS": _int(env, "PLAN_INTERVAL_SECONDS", 60),
        "PLAN_OBJECTIVE": env.get("PLAN_OBJECTIVE", "production"),
        "ANNOTATOR_SEEN_WINDOW_SECONDS": _int(env, "ANNOTATOR_SEEN_WINDOW_SECONDS", 3600),
        "RATELIMIT_ENABLED": env.get("RATELIMIT_ENABLED", "true").lower() == "true",
        "RATELIMIT_DEFAULT": env.get("RATELIMIT_DEFAULT", "6000 per minute"),
        # flask-smorest / OpenAPI
        "API_TITLE": "Labelforce API",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api/v1",
        "OPENAPI_JSON_PATH": "openapi.json",
        "WTF_CSRF_TIME_LIMIT": None,
    }
