"""The annotator's pages: next task, the task page, submit, release, more time, my work and earnings."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db import utcnow
from marketplace.projects.models import Project
from marketplace.work.leasing import NO_WORK_MESSAGES
from marketplace.work.models import Assignment, AssignmentState, Label
from tests import factories as f
from tests.web.conftest import World, add_tasks


def _lease(client) -> int:
    response = client.post("/work/next")
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.search(r"/work/assignments/(\d+)$", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def test_annotator_gets_a_task_submits_it_and_sees_it_in_my_work(world: World, as_user, engine) -> None:
    client = as_user(world.annotator_user)
    workspace = client.get("/work").get_data(as_text=True)
    assert "Get next task" in workspace
    assert "€0.50" in workspace  # the price is shown before any work
    assert "Product reviews" in workspace

    assignment_id = _lease(client)
    page = client.get(f"/work/assignments/{assignment_id}").get_data(as_text=True)
    assert "You earn €0.50 if accepted" in page
    assert "Review number 0: it works." in page  # the item's text
    assert "Is the review positive, negative or neutral?" in page  # the instructions
    for choice in ("positive", "neutral", "negative"):
        assert f'value="{choice}"' in page
    assert "data-lease" in page
    assert "Time left" in page

    done = client.post(
        f"/work/assignments/{assignment_id}/submit", data={"choice": "positive", "submit_key": "k1"}
    )
    assert done.status_code == 302
    result = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Submitted. You earn €0.50 if it is accepted." in result
    assert "Label submitted" in result
    assert "positive" in result

    with Session(engine) as check:
        label = check.scalars(select(Label)).one()
        assert label.value == "positive"
        assert check.get_one(Assignment, assignment_id).state == AssignmentState.SUBMITTED

    history = client.get("/work/history").get_data(as_text=True)
    assert "item-000" in history
    assert "pending" in history
    assert "€0.50" in history


def test_a_double_submit_returns_the_first_result(world: World, as_user, engine) -> None:
    client = as_user(world.annotator_user)
    assignment_id = _lease(client)
    for _ in range(2):
        response = client.post(
            f"/work/assignments/{assignment_id}/submit", data={"choice": "neutral", "submit_key": "same"}
        )
        assert response.status_code == 302
    with Session(engine) as check:
        assert len(check.scalars(select(Label)).all()) == 1


def test_submit_and_next_opens_the_next_item_once(world: World, as_user, engine) -> None:
    client = as_user(world.annotator_user)
    first = _lease(client)
    data = {"choice": "neutral", "submit_key": "sn", "and_next": "1"}
    answers = [
        client.post(f"/work/assignments/{first}/submit", data=data) for _ in range(2)
    ]  # a double click
    assert {a.headers["Location"] for a in answers} == {answers[0].headers["Location"]}
    following = int(answers[0].headers["Location"].rsplit("/", 1)[1])
    assert following != first
    page = client.get(answers[0].headers["Location"]).get_data(as_text=True)
    assert "Submitted. You earn €0.50 if it is accepted." in page
    assert "Submit and next" in page
    with Session(engine) as check:
        assert check.get_one(Assignment, following).follows_assignment_id == first
        live = check.scalars(select(Assignment).where(Assignment.state == AssignmentState.LEASED)).all()
        assert [a.id for a in live] == [following]

    visited = [first, following]
    while True:  # the world's five items, one "submit and next" after another
        answer = client.post(
            f"/work/assignments/{visited[-1]}/submit",
            data={"choice": "neutral", "submit_key": f"chain-{len(visited)}", "and_next": "1"},
        )
        landed = int(answer.headers["Location"].rsplit("/", 1)[1])
        if landed == visited[-1]:
            break
        visited.append(landed)
    assert len(visited) == 5
    assert NO_WORK_MESSAGES["all_slots_leased"] in client.get(answer.headers["Location"]).get_data(
        as_text=True
    )


def test_an_invalid_answer_is_shown_back_with_a_hint(world: World, as_user) -> None:
    client = as_user(world.annotator_user)
    assignment_id = _lease(client)
    response = client.post(f"/work/assignments/{assignment_id}/submit", data={"submit_key": "k"})
    assert response.status_code == 422
    assert "Pick one of the choices." in response.get_data(as_text=True)


def test_multi_choice_and_text_schemas_render_their_inputs(world: World, as_user, db_session) -> None:
    project = db_session.get_one(Project, world.project.id)
    project.label_schema = {"type": "multi_choice", "choices": ["a", "b", "c"], "min": 1, "max": 2}
    db_session.commit()
    client = as_user(world.annotator_user)
    assignment_id = _lease(client)
    page = client.get(f"/work/assignments/{assignment_id}").get_data(as_text=True)
    assert page.count('type="checkbox" name="choice"') == 3
    assert "Pick 1 to 2" in page
    too_many = client.post(
        f"/work/assignments/{assignment_id}/submit", data={"choice": ["a", "b", "c"], "submit_key": "m"}
    )
    assert too_many.status_code == 422
    assert "Pick 1 to 2 choices." in too_many.get_data(as_text=True)
    assert (
        client.post(
            f"/work/assignments/{assignment_id}/submit", data={"choice": ["c", "a"], "submit_key": "m"}
        ).status_code
        == 302
    )

    project.label_schema = {"type": "text", "max_length": 300}
    db_session.commit()
    second = _lease(client)
    page = client.get(f"/work/assignments/{second}").get_data(as_text=True)
    assert '<textarea name="text"' in page
    assert 'maxlength="300"' in page


def test_image_payloads_render_as_images_and_other_payloads_as_json(
    world: World, as_user, db_session
) -> None:
    project = db_session.get_one(Project, world.project.id)
    db_session.execute(Project.__table__.update().where(Project.id == project.id).values(status="paused"))
    images = f.project(db_session, world.org, world.manager, name="Images")
    add_tasks(db_session, images, 1, image_url="https://img.example/cat.jpg", source="camera 2")
    json_only = f.project(db_session, world.org, world.manager, name="JSON")
    add_tasks(db_session, json_only, 1, sensor={"t": 21.5})
    from marketplace.billing.services import fund_project
    from payments.money import Money

    for p in (images, json_only):
        fund_project(db_session, project=p, amount=Money(10_00, "EUR"), idempotency_key=f"p{p.id}")
    db_session.commit()
    client = as_user(world.annotator_user)
    pages = []
    for p in (images, json_only):
        response = client.post("/work/next", data={"project_id": str(p.id)})
        pages.append(client.get(response.headers["Location"]).get_data(as_text=True))
    assert '<img src="https://img.example/cat.jpg"' in pages[0]
    assert "camera 2" in pages[0]  # the other fields, under "More about this item"
    assert "&#34;sensor&#34;" in pages[1] or "&quot;sensor&quot;" in pages[1]


def test_no_work_shows_the_reason(world: World, as_user, db_session) -> None:
    for project in (world.project, world.other_project):
        db_session.execute(Project.__table__.update().where(Project.id == project.id).values(status="paused"))
    db_session.commit()
    client = as_user(world.annotator_user)
    response = client.post("/work/next", follow_redirects=True)
    assert response.status_code == 200
    assert "No active project matches your skills, levels and price right now." in response.get_data(
        as_text=True
    )


def test_release_and_more_time(world: World, as_user, engine) -> None:
    client = as_user(world.annotator_user)
    assignment_id = _lease(client)
    more = client.post(f"/work/assignments/{assignment_id}/heartbeat", headers={"Accept": "application/json"})
    assert more.status_code == 200
    assert more.get_json()["seconds_left"] > 0
    released = client.post(f"/work/assignments/{assignment_id}/release", follow_redirects=True)
    assert "Released: the item went back to the pool." in released.get_data(as_text=True)
    with Session(engine) as check:
        assert check.get_one(Assignment, assignment_id).state == AssignmentState.RELEASED
    page = client.get(f"/work/assignments/{assignment_id}").get_data(as_text=True)
    assert "Released" in page
    assert "Get next task" in page
    late = client.post(f"/work/assignments/{assignment_id}/heartbeat", headers={"Accept": "application/json"})
    assert late.status_code == 409
    assert late.get_json()["error"]["code"] == "lease_expired"


def test_an_expired_lease_cannot_be_submitted(world: World, as_user, db_session) -> None:
    client = as_user(world.annotator_user)
    assignment_id = _lease(client)
    assignment = db_session.get_one(Assignment, assignment_id)
    assignment.lease_expires_at = utcnow() - timedelta(seconds=1)
    db_session.commit()
    page = client.get(f"/work/assignments/{assignment_id}").get_data(as_text=True)
    assert "The lease has ended" in page
    response = client.post(
        f"/work/assignments/{assignment_id}/submit", data={"choice": "positive"}, follow_redirects=True
    )
    assert "The lease has expired" in response.get_data(as_text=True)


def test_someone_elses_assignment_is_not_found(world: World, as_user, db_session) -> None:
    assignment_id = _lease(as_user(world.annotator_user))
    other = f.annotator(db_session, price_minor=40)
    db_session.commit()
    from marketplace.accounts.models import User

    intruder = as_user(db_session.get_one(User, other.user_id))
    assert intruder.get(f"/work/assignments/{assignment_id}").status_code == 404
    assert (
        intruder.post(f"/work/assignments/{assignment_id}/submit", data={"choice": "positive"}).status_code
        == 404
    )
    assert intruder.post(f"/work/assignments/{assignment_id}/release").status_code == 404


def test_earnings_show_pending_money_per_day(world: World, as_user) -> None:
    client = as_user(world.annotator_user)
    assignment_id = _lease(client)
    client.post(f"/work/assignments/{assignment_id}/submit", data={"choice": "negative", "submit_key": "e"})
    page = client.get("/work/earnings?days=7").get_data(as_text=True)
    assert "Waiting for review" in page
    assert "€0.50" in page
    assert utcnow().strftime("%d %b %Y") in page


def test_a_deadlocked_attempt_is_retried_with_the_user_loaded_again(
    world: World, as_user, monkeypatch
) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from marketplace.web import work_views

    real = work_views.leasing.lease_next_assignment
    calls: list[int] = []

    def busy_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE tasks ...", {}, sqlite3.OperationalError("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(work_views.leasing, "lease_next_assignment", busy_once)
    response = as_user(world.annotator_user).post("/work/next")
    assert response.status_code == 302
    assert "/work/assignments/" in response.headers["Location"]
    assert len(calls) == 2
