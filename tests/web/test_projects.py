"""The manager's pages: the projects list, a project's dashboard and task import."""

from __future__ import annotations

import io
import re
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.db import utcnow
from marketplace.planning.models import PlanRun
from marketplace.projects.models import Project, Task
from marketplace.throughput.models import ProjectHealth
from tests.web.conftest import World, add_tasks


def _task_count(engine, project_id: int) -> int:
    with Session(engine) as check:
        return check.scalar(select(func.count()).select_from(Task).where(Task.project_id == project_id)) or 0


def test_dashboard_shows_budget_progress_and_chart_formatted_for_people(
    world: World, as_user, db_session
) -> None:
    add_tasks(db_session, world.project, 1_995)  # the first 5 exist already: 1,995 tasks in all
    db_session.commit()
    annotator = as_user(world.annotator_user)
    leased = annotator.post("/work/next").headers["Location"]
    annotator.post(leased + "/submit", data={"choice": "positive", "submit_key": "x"})

    page = as_user(world.manager).get(f"/projects/{world.project.id}").get_data(as_text=True)
    assert "0 of 1,995" in page  # items complete (thousands separator)
    assert "Funded" in page
    assert "€1,000.00" in page  # funded, through Money.format()
    assert "€0.60" in page  # held: the annotator's €0.50 plus the 20% platform fee
    assert "€999.40" in page  # available
    assert "€1.00 per accepted label" in page
    assert "1 awaiting review" in page
    assert re.search(r"in \d+ days|in 1 day|2 days", page)  # the deadline, relative
    # labels per hour: 24 bars, the current hour has the one label
    assert page.count('class="bar') == 24
    assert "UTC: 1 label</title>" in page
    assert 'role="img"' in page
    assert "<h2>Routing plan</h2>" in page


def test_dashboard_shows_the_latest_plan(world: World, as_user, db_session) -> None:
    db_session.add(
        PlanRun(
            started_at=utcnow(),
            duration_ms=1_234,
            method="flow",
            status="optimal",
            tasks=12_000,
            annotators=20,
            slots_open=36_000,
            slots_filled=1_500,
            cost={"EUR": 123_456},
        )
    )
    db_session.commit()
    page = as_user(world.manager).get(f"/projects/{world.project.id}").get_data(as_text=True)
    assert re.search(r"The latest plan ran <time[^>]*>just now</time>", page)
    assert "1,500 / 36,000" in page
    assert "€1,234.56" in page
    assert "1.23 s" in page


def test_projects_list_shows_progress_of_each_project(world: World, as_user, db_session) -> None:
    page = as_user(world.manager).get("/projects").get_data(as_text=True)
    assert "Product reviews" in page
    assert "0 / 5" in page
    assert "€1.00" in page
    assert "at risk" not in page
    db_session.add(
        ProjectHealth(project_id=world.project.id, at_risk=True, reasons=["behind_pace"], checked_at=utcnow())
    )
    db_session.commit()
    assert "at risk" in as_user(world.manager).get("/projects").get_data(as_text=True)


def test_dashboard_names_the_risks(world: World, as_user, db_session) -> None:
    project = db_session.get_one(Project, world.project.id)
    project.deadline_at = utcnow() - timedelta(hours=1)
    db_session.commit()
    page = as_user(world.manager).get(f"/projects/{world.project.id}").get_data(as_text=True)
    assert "At risk" in page
    assert "The deadline has passed with labels still missing." in page


def test_import_jsonl_creates_tasks_and_a_second_import_creates_none(world: World, as_user, engine) -> None:
    client = as_user(world.manager)
    body = b"".join(
        b'{"external_id": "new-%d", "payload": {"text": "hello %d"}}\n' % (i, i) for i in range(3)
    )
    for expected in ("3 new tasks, 0 already there", "0 new tasks, 3 already there"):
        response = client.post(
            f"/projects/{world.project.id}/import",
            data={"file": (io.BytesIO(body), "tasks.jsonl"), "format": "auto"},
            content_type="multipart/form-data",
            follow_redirects=True,
        )
        assert response.status_code == 200
        assert f"Imported 3 rows: {expected}." in response.get_data(as_text=True)
    assert _task_count(engine, world.project.id) == 8


def test_a_bad_csv_imports_nothing_and_lists_the_lines(world: World, as_user, engine) -> None:
    client = as_user(world.manager)
    csv_body = b"external_id,text,priority\nok-1,fine,0\n,missing id,0\nok-3,bad priority,high\n"
    response = client.post(
        f"/projects/{world.project.id}/import",
        data={"file": (io.BytesIO(csv_body), "tasks.csv"), "format": "auto"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Nothing was imported" in page
    assert "2 of 3 rows are invalid" in page
    assert re.search(r'<td class="num">3</td><td>external_id must be', page)
    assert re.search(r'<td class="num">4</td><td>priority must be an integer', page)
    assert _task_count(engine, world.project.id) == 5


def test_import_needs_a_known_format_and_a_file(world: World, as_user) -> None:
    client = as_user(world.manager)
    url = f"/projects/{world.project.id}/import"
    unknown = client.post(
        url,
        data={"file": (io.BytesIO(b"x"), "tasks.txt"), "format": "auto"},
        content_type="multipart/form-data",
    )
    assert unknown.status_code == 422
    assert "Choose the format" in unknown.get_data(as_text=True)
    missing = client.post(url, data={"format": "csv"}, content_type="multipart/form-data")
    assert missing.status_code == 422
    assert "Choose a file to import." in missing.get_data(as_text=True)
    broken = client.post(
        url,
        data={"file": (io.BytesIO(b"[{"), "tasks.json"), "format": "json"},
        content_type="multipart/form-data",
    )
    assert broken.status_code == 422
    assert "not valid JSON" in broken.get_data(as_text=True)
