"""Bad input gets a JSON problem with the right 4xx status, never a 500, and nothing is written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.projects.models import Project
from tests import factories as f


@pytest.fixture
def manager_auth(db_session):
    org = f.organisation(db_session)
    f.skill(db_session)
    manager = f.member(db_session, org, "manager")
    secret = f.token(db_session, manager)
    db_session.commit()
    return f.auth(secret)


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_malformed_json(client, manager_auth) -> None:
    response = client.post(
        "/api/v1/projects", data="{not json", content_type="application/json", headers=manager_auth
    )
    _problem(response, 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pay_per_label_minor", 1.5),
        ("pay_per_label_minor", 80.0),
        ("pay_per_label_minor", True),
        ("pay_per_label_minor", "80"),
        ("labels_per_item", False),
        ("budget_minor", -1),
        ("currency", "euro"),
        ("deadline", "2030-01-01T00:00:00"),  # no time zone
    ],
)
def test_wrong_types_and_floats_for_money(client, manager_auth, db_session, field, value) -> None:
    response = client.post("/api/v1/projects", json=f.project_body(**{field: value}), headers=manager_auth)
    error = _problem(response, 422)
    assert field in error["details"]
    assert db_session.scalar(select(func.count()).select_from(Project)) == 0


def test_unknown_fields_are_refused(client, manager_auth) -> None:
    response = client.post("/api/v1/projects", json=f.project_body(colour="blue"), headers=manager_auth)
    assert "colour" in _problem(response, 422)["details"]


def test_bad_label_schema(client, manager_auth) -> None:
    body = f.project_body(label_schema={"type": "single_choice", "choices": ["only-one"]})
    assert (
        "choices"
        in _problem(client.post("/api/v1/projects", json=body, headers=manager_auth), 422)["message"]
    )


def test_deadline_in_the_past(client, manager_auth) -> None:
    body = f.project_body(deadline="2001-01-01T00:00:00+00:00")
    assert (
        "future" in _problem(client.post("/api/v1/projects", json=body, headers=manager_auth), 422)["message"]
    )


def test_oversize_body_is_413(app_config, make_app, manager_auth) -> None:
    app_config["MAX_CONTENT_LENGTH"] = 1024
    client = make_app(app_config).test_client()
    response = client.post(
        "/api/v1/projects", json=f.project_body(instructions="x" * 5000), headers=manager_auth
    )
    _problem(response, 413)


def test_wrong_method_says_which_are_allowed(client) -> None:
    response = client.put("/api/v1/tokens")
    _problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_bad_query_parameter(client, manager_auth, db_session) -> None:
    org_id = client.get("/api/v1/me", headers=manager_auth).get_json()["memberships"][0]["organisation_id"]
    created = client.post(
        "/api/v1/projects", json=f.project_body(organisation_id=org_id), headers=manager_auth
    )
    project_id = created.get_json()["id"]
    response = client.get(f"/api/v1/projects/{project_id}/tasks?limit=abc", headers=manager_auth)
    assert "limit" in _problem(response, 422)["details"]
