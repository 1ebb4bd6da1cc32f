from __future__ import annotations

import pytest

from marketplace.config import ConfigError, load_config


def test_production_without_secret_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config({"LABELFORCE_ENV": "production"})


def test_development_defaults_are_safe() -> None:
    config = load_config({})
    assert config["DATABASE_URL"].startswith("sqlite:///")
    assert config["REDIS_URL"] is None
    assert len(config["SECRET_KEY"]) >= 32
    assert config["SESSION_COOKIE_SECURE"] is False
    assert load_config({"LABELFORCE_ENV": "production", "SECRET_KEY": "s"})["SESSION_COOKIE_SECURE"] is True


def test_bad_integer_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PLATFORM_FEE_BPS"):
        load_config({"PLATFORM_FEE_BPS": "twenty"})


def test_health_reports_database_and_redis(client) -> None:
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["redis"] == {"configured": True, "ok": True}


def test_health_degraded_when_redis_is_down(app_config, make_app) -> None:
    app_config["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    app = make_app(app_config)
    body = app.test_client().get("/healthz").get_json()
    assert body["status"] == "degraded"
    assert body["redis"] == {"configured": True, "ok": False}
    assert body["database"]["ok"] is True


def test_openapi_document_describes_the_api(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["info"]["title"] == "Labelforce API"
    for path in ("/api/v1/tokens", "/api/v1/me", "/api/v1/projects", "/api/v1/projects/{project_id}/tasks"):
        assert path in spec["paths"], path
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_unknown_page_is_html_for_browsers_and_json_for_the_api(client) -> None:
    page = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    api = client.get("/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.get_json()["error"]["code"] == "not_found"
