from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from marketplace.projects.models import Task
from tests import factories as f


@pytest.fixture
def setup(db_session):
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    project = f.project(db_session, org, creator=manager, labels_per_item=2)
    headers = f.auth(f.token(db_session, manager))
    db_session.commit()
    return project, headers


def _count(db_session, project_id: int) -> int:
    return db_session.scalar(select(func.count()).select_from(Task).where(Task.project_id == project_id))


def test_json_array_import_and_idempotent_reimport(client, db_session, setup) -> None:
    project, headers = setup
    rows = [{"external_id": f"img-{i}", "payload": {"url": f"u{i}"}, "priority": i % 3} for i in range(50)]
    url = f"/api/v1/projects/{project.id}/tasks"
    first = client.post(url, json=rows, headers=headers)
    assert first.status_code == 201, first.get_json()
    assert first.get_json() == {"rows": 50, "created": 50, "existing": 0}
    again = client.post(
        url, json=[*rows, {"external_id": "img-new", "payload": {"url": "x"}}], headers=headers
    )
    assert again.get_json() == {"rows": 51, "created": 1, "existing": 50}
    assert _count(db_session, project.id) == 51
    task = db_session.scalar(select(Task).where(Task.external_id == "img-4"))
    assert task.labels_needed == 2
    assert task.priority == 1
    assert task.payload == {"url": "u4"}


def test_jsonl_import_with_gold(client, db_session, setup) -> None:
    project, headers = setup
    body = "\n".join(
        json.dumps(r)
        for r in [
            {"id": "a", "data": {"text": "x"}},
            {"external_id": "b", "payload": {"text": "y"}, "gold_answer": "dog"},
        ]
    )
    response = client.post(
        f"/api/v1/projects/{project.id}/tasks",
        data=body + "\n\n",
        content_type="application/x-ndjson",
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    gold = db_session.scalar(select(Task).where(Task.external_id == "b"))
    assert gold.is_gold
    assert gold.gold_answer == "dog"


def test_csv_import_puts_other_columns_in_the_payload(client, db_session, setup) -> None:
    project, headers = setup
    body = "external_id,image_url,priority,gold_answer\nc1,http://x/1.jpg,5,\nc2,http://x/2.jpg,,cat\n"
    response = client.post(
        f"/api/v1/projects/{project.id}/tasks", data=body, content_type="text/csv", headers=headers
    )
    assert response.get_json() == {"rows": 2, "created": 2, "existing": 0}
    c1 = db_session.scalar(select(Task).where(Task.external_id == "c1"))
    c2 = db_session.scalar(select(Task).where(Task.external_id == "c2"))
    assert c1.payload == {"image_url": "http://x/1.jpg"}
    assert c1.priority == 5
    assert not c1.is_gold
    assert c2.gold_answer == "cat"


def test_one_bad_row_rejects_the_whole_import_with_line_numbers(client, db_session, setup) -> None:
    project, headers = setup
    lines = [json.dumps({"external_id": f"ok-{i}", "payload": {"n": i}}) for i in range(2500)]
    lines[1200] = json.dumps({"external_id": "bad", "payload": {}})
    lines[2400] = "{oops"
    lines.append(json.dumps({"external_id": "ok-7", "payload": {"n": 7}}))  # duplicate of line 8
    lines.append(json.dumps({"external_id": "g", "payload": {"n": 1}, "gold_answer": "zebra"}))
    response = client.post(
        f"/api/v1/projects/{project.id}/tasks",
        data="\n".join(lines),
        content_type="application/x-ndjson",
        headers=headers,
    )
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "import_rejected"
    reported = {e["line"]: e["error"] for e in error["details"]["errors"]}
    assert set(reported) == {1201, 2401, 2501, 2502}
    assert "payload" in reported[1201]
    assert "invalid JSON" in reported[2401]
    assert "first at line 8" in reported[2501]
    assert "choices" in reported[2502]
    assert _count(db_session, project.id) == 0  # the chunks before the bad rows were rolled back too


def test_unsupported_media_type_and_empty_import(client, setup) -> None:
    project, headers = setup
    url = f"/api/v1/projects/{project.id}/tasks"
    assert client.post(url, data="x", content_type="text/plain", headers=headers).status_code == 422
    empty = client.post(url, json=[], headers=headers)
    assert empty.status_code == 422
    assert empty.get_json()["error"]["code"] == "import_empty"
    not_array = client.post(url, json={"external_id": "x"}, headers=headers)
    assert not_array.status_code == 422


def test_keyset_pagination_walks_every_task_once(client, setup) -> None:
    project, headers = setup
    rows = [{"external_id": f"t{i}", "payload": {"i": i}} for i in range(25)]
    client.post(f"/api/v1/projects/{project.id}/tasks", json=rows, headers=headers)
    seen, after = [], 0
    while True:
        response = client.get(f"/api/v1/projects/{project.id}/tasks?limit=10&after={after}", headers=headers)
        page = response.get_json()
        assert response.status_code == 200, page
        seen += [t["external_id"] for t in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [f"t{i}" for i in range(25)]


def test_cli_import_with_progress(runner, db_session, setup, tmp_path) -> None:
    project, _ = setup
    path = tmp_path / "tasks.csv"
    path.write_text("external_id,text\n" + "".join(f"r{i},hello {i}\n" for i in range(3000)))
    result = runner.invoke(args=["import-tasks", str(project.id), str(path)])
    assert result.exit_code == 0, result.output
    assert "3,000 rows: 3,000 created, 0 already present" in result.output
    assert _count(db_session, project.id) == 3000
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"external_id": "z", "payload": {"a": 1}}\n{"external_id": 5.5}\n')
    failed = runner.invoke(args=["import-tasks", str(project.id), str(bad)])
    assert failed.exit_code == 1
    assert "line 2" in failed.output
    assert _count(db_session, project.id) == 3000
