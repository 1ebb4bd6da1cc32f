"""Project rules a manager meets over the API that the CRUD tests leave out: which projects are listed, the label
schema (its validation, its lock once labels exist), the values a schema accepts, and import rows refused."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import User
from marketplace.projects.models import Project, Task
from marketplace.work.models import Label
from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    annotators,
    fast_password_hashing,
    make_project,
    work,
)


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def _manager_of(db_session, org) -> dict[str, str]:
    headers = f.auth(f.token(db_session, f.member(db_session, org, "manager")))
    db_session.commit()
    return headers


# --- the project list ---------------------------------------------------------------------------------------


def test_the_list_holds_the_projects_of_ones_organisations_and_all_for_platform_admins(
    client, db_session
) -> None:
    mine, theirs = f.organisation(db_session), f.organisation(db_session)
    own = [f.project(db_session, mine).id for _ in range(2)]
    other = f.project(db_session, theirs).id
    reviewer = f.auth(f.token(db_session, f.member(db_session, mine, "reviewer")))
    admin = f.auth(f.token(db_session, f.user(db_session, platform_role="admin")))
    outsider = f.auth(f.token(db_session, f.user(db_session)))
    db_session.commit()
    assert [p["id"] for p in client.get("/api/v1/projects", headers=reviewer).get_json()] == own
    assert [p["id"] for p in client.get("/api/v1/projects", headers=admin).get_json()] == [*own, other]
    assert client.get("/api/v1/projects", headers=outsider).get_json() == []


# --- the label schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "detail"),
    [
        (["cat", "dog"], "label_schema"),
        ({"type": "ranking", "choices": ["a", "b"]}, "label_schema.type"),
        ({"type": "single_choice", "choices": ["a", "b"], "colour": "red"}, "label_schema"),
        ({"type": "text", "max_length": 0}, "label_schema.max_length"),
        ({"type": "text", "max_length": 100_001}, "label_schema.max_length"),
        ({"type": "single_choice", "choices": ["a", "a"]}, "label_schema.choices"),
        ({"type": "single_choice", "choices": ["a", " "]}, "label_schema.choices"),
        ({"type": "multi_choice", "choices": ["a", "b", "c"], "min": 3, "max": 2}, "label_schema.min"),
        ({"type": "multi_choice", "choices": ["a", "b"], "max": 3}, "label_schema.max"),
    ],
)
def test_a_bad_label_schema_is_refused_naming_its_field(client, db_session, schema, detail) -> None:
    f.skill(db_session)
    headers = _manager_of(db_session, f.organisation(db_session))
    response = client.post("/api/v1/projects", json=f.project_body(label_schema=schema), headers=headers)
    error = _problem(response, 422)
    assert detail in error["details"]
    assert db_session.scalar(select(func.count()).select_from(Project)) == 0


def test_schemas_are_stored_with_their_defaults(client, db_session) -> None:
    f.skill(db_session)
    headers = _manager_of(db_session, f.organisation(db_session))
    multi = f.project_body(label_schema={"type": "multi_choice", "choices": ["a", "b", "c"]})
    created = client.post("/api/v1/projects", json=multi, headers=headers).get_json()
    assert created["label_schema"] == {"type": "multi_choice", "choices": ["a", "b", "c"], "min": 1, "max": 3}
    text = f.project_body(label_schema={"type": "text"})
    created = client.post("/api/v1/projects", json=text, headers=headers).get_json()
    assert created["label_schema"] == {"type": "text", "max_length": 2000}


def test_the_schema_can_change_until_the_first_label_then_it_is_locked(client, db_session) -> None:
    org = f.organisation(db_session)
    project = make_project(db_session, org=org, tasks=2, review_policy="gold")
    headers = _manager_of(db_session, org)
    url = f"/api/v1/projects/{project.id}"
    changed = client.patch(
        url,
        json={"label_schema": {"type": "single_choice", "choices": ["cat", "dog", "bird"]}},
        headers=headers,
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["label_schema"]["choices"] == ["cat", "dog", "bird"]
    db_session.expire_all()  # the project row as the request left it
    (worker,) = annotators(db_session, 1)
    work(db_session, worker, "bird")
    locked = client.patch(url, json={"label_schema": {"type": "text"}}, headers=headers)
    assert _problem(locked, 409)["code"] == "schema_locked"
    db_session.expire_all()
    assert db_session.get_one(Project, project.id).label_schema["type"] == "single_choice"
    # other fields still change
    renamed = client.patch(url, json={"name": "Birds too"}, headers=headers)
    assert renamed.get_json()["name"] == "Birds too"


def test_the_skill_changes_by_name_and_an_unknown_one_is_refused(client, db_session) -> None:
    org = f.organisation(db_session)
    project = f.project(db_session, org)
    audio = f.skill(db_session, "audio")
    headers = _manager_of(db_session, org)
    url = f"/api/v1/projects/{project.id}"
    changed = client.patch(url, json={"skill": "audio"}, headers=headers)
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["skill"] == "audio"
    db_session.expire_all()
    assert db_session.get_one(Project, project.id).skill_id == audio.id
    unknown = client.patch(url, json={"skill": "telepathy"}, headers=headers)
    assert unknown.status_code == 422
    db_session.expire_all()
    assert db_session.get_one(Project, project.id).skill_id == audio.id


# --- the values a schema accepts ----------------------------------------------------------------------------


def _lease_for(client, db_session, schema: dict) -> tuple[dict[str, str], int]:
    make_project(db_session, tasks=1, review_policy="gold", label_schema=schema)
    (worker,) = annotators(db_session, 1)
    headers = f.auth(f.token(db_session, db_session.get_one(User, worker.user_id)))
    db_session.commit()
    leased = client.post("/api/v1/work/next", headers=headers).get_json()["assignment"]
    assert leased is not None
    return headers, leased["id"]


def test_multi_choice_values_are_distinct_choices_in_range_and_stored_in_schema_order(
    client, db_session
) -> None:
    schema = {"type": "multi_choice", "choices": ["red", "green", "blue"], "min": 1, "max": 2}
    headers, assignment_id = _lease_for(client, db_session, schema)
    url = f"/api/v1/assignments/{assignment_id}/submit"
    for bad in (["red", "red"], ["purple"], "red", [], ["red", "green", "blue"]):
        _problem(client.post(url, json={"value": bad}, headers=headers), 422)
    assert db_session.scalar(select(func.count()).select_from(Label)) == 0
    done = client.post(url, json={"value": ["blue", "red"]}, headers=headers)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["label"]["value"] == ["red", "blue"]
    assert db_session.scalar(select(Label.value)) == ["red", "blue"]


def test_text_values_are_non_empty_and_bounded(client, db_session) -> None:
    headers, assignment_id = _lease_for(client, db_session, {"type": "text", "max_length": 10})
    url = f"/api/v1/assignments/{assignment_id}/submit"
    for bad in ("   ", "x" * 11, 5, ["a"]):
        _problem(client.post(url, json={"value": bad}, headers=headers), 422)
    done = client.post(url, json={"value": "a cat"}, headers=headers)
    assert done.status_code == 200, done.get_json()
    assert db_session.scalar(select(Label.value)) == "a cat"


# --- import rows refused ------------------------------------------------------------------------------------


@pytest.fixture
def importing(db_session):
    org = f.organisation(db_session)
    project = f.project(db_session, org)
    headers = _manager_of(db_session, org)
    return project, headers, f"/api/v1/projects/{project.id}/tasks"


def _tasks(db_session, project) -> list[tuple[str, int]]:
    return [
        tuple(row)
        for row in db_session.execute(
            select(Task.external_id, Task.priority).where(Task.project_id == project.id).order_by(Task.id)
        )
    ]


def test_a_json_object_with_tasks_imports_and_numeric_ids_become_text(client, db_session, importing) -> None:
    project, headers, url = importing
    body = {
        "tasks": [{"external_id": 7, "payload": {"n": 7}, "priority": -100}, {"id": "x", "data": {"n": 1}}]
    }
    response = client.post(url, json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json() == {"rows": 2, "created": 2, "existing": 0}
    assert _tasks(db_session, project) == [("7", -100), ("x", 0)]


def test_rows_with_unknown_fields_or_a_bad_priority_reject_the_import(client, db_session, importing) -> None:
    project, headers, url = importing
    rows = [
        {"external_id": "a", "payload": {"n": 1}, "colour": "red"},
        {"external_id": "b", "payload": {"n": 2}, "priority": 101},
        {"external_id": "c", "payload": {"n": 3}, "priority": 1.5},
        "just text",
        {"external_id": "", "payload": {"n": 4}},
        {"external_id": "ok", "payload": {"n": 5}},
    ]
    error = _problem(client.post(url, json=rows, headers=headers), 422)
    assert error["code"] == "import_rejected"
    reported = {e["line"]: e["error"] for e in error["details"]["errors"]}
    assert set(reported) == {1, 2, 3, 4, 5}
    assert "colour" in reported[1]
    assert "priority" in reported[2]
    assert "priority" in reported[3]
    assert "object" in reported[4]
    assert "external_id" in reported[5]
    assert _tasks(db_session, project) == []


def test_csv_rows_with_extra_fields_or_a_bad_priority_are_reported(client, db_session, importing) -> None:
    project, headers, url = importing
    body = "external_id,priority,url\na,1,u1\nb,high,u2\nc,2,u3,extra\n"
    error = _problem(client.post(url, data=body, content_type="text/csv", headers=headers), 422)
    reported = {e["line"]: e["error"] for e in error["details"]["errors"]}
    assert set(reported) == {3, 4}
    assert "priority" in reported[3]
    assert "more fields" in reported[4]
    assert _tasks(db_session, project) == []


def test_a_body_that_is_not_utf8_is_refused(client, db_session, importing) -> None:
    project, headers, url = importing
    body = b"external_id,url\na,caf\xe9\n"
    error = _problem(client.post(url, data=body, content_type="text/csv", headers=headers), 422)
    assert "UTF-8" in error["message"]
    assert _tasks(db_session, project) == []


def test_a_completed_project_takes_no_tasks(client, db_session, importing) -> None:
    project, headers, url = importing
    closed = client.patch(f"/api/v1/projects/{project.id}", json={"status": "completed"}, headers=headers)
    assert closed.status_code == 200
    refused = client.post(url, json=[{"external_id": "a", "payload": {"n": 1}}], headers=headers)
    assert _problem(refused, 409)["code"] == "project_completed"
    assert _tasks(db_session, project) == []
