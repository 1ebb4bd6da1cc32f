"""A project's annotators page: the numbers of `project_workforce` as people read them, and the block and unblock
buttons, for the project's managers only."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db import utcnow
from marketplace.events.models import Event
from marketplace.quality.review import review_label
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker
from tests.web.conftest import World
from tests.web.test_bonuses import NAME, _label


def _url(world: World, *rest: object) -> str:
    return "/".join([f"/projects/{world.project.id}/workers", *map(str, rest)])


def _standing(engine: Any, world: World) -> ProjectWorker:
    with Session(engine) as check:
        worker = check.get_one(ProjectWorker, (world.project.id, world.annotator.id))
        check.expunge(worker)
        return worker


def _worked(world: World, as_user, db_session: Session) -> Any:
    world.annotator.display_name = NAME
    db_session.commit()
    annotator = as_user(world.annotator_user)
    _label(annotator)
    return annotator


def test_managers_see_each_annotators_numbers_and_block_them_with_a_reason(
    world: World, as_user, db_session: Session, engine: Any
) -> None:
    annotator = _worked(world, as_user, db_session)
    assert annotator.post("/work/next").status_code == 302  # a live lease the block gives back
    manager = as_user(world.manager)
    dashboard = manager.get(f"/projects/{world.project.id}").get_data(as_text=True)
    assert f'href="{_url(world)}"' in dashboard

    page = manager.get(_url(world))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert NAME in html
    assert f"#{world.annotator.id}" in html
    assert "state-blocked" not in html
    assert "€0.00" in html  # nothing earned yet: the label waits for review
    assert "Block…" in html

    blank = manager.post(_url(world, world.annotator.id, "block"), data={"reason": "  "})
    assert blank.status_code == 302
    assert "Nobody was blocked" in manager.get(_url(world)).get_data(as_text=True)
    assert _standing(engine, world).blocked_at is None

    blocked = manager.post(_url(world, world.annotator.id, "block"), data={"reason": "Copied answers"})
    assert blocked.status_code == 302
    assert blocked.headers["Location"] == _url(world)
    html = manager.get(_url(world)).get_data(as_text=True)
    assert f"Blocked {NAME} from this project" in html
    assert '<span class="state state-blocked">blocked</span>' in html
    assert "Copied answers" in html
    standing = _standing(engine, world)
    assert (standing.blocked_reason, standing.blocked_by_id) == ("Copied answers", world.manager.id)
    with Session(engine) as check:
        live = check.scalars(select(Assignment).where(Assignment.state == AssignmentState.LEASED.value)).all()
        assert live == []
        assert check.scalar(select(Event.data).where(Event.type == "worker.blocked"))["source"] == "manager"
    no_work = annotator.post("/work/next", data={"project_id": str(world.project.id)})
    assert "/work/assignments/" not in no_work.headers.get("Location", "")

    again = manager.post(_url(world, world.annotator.id, "unblock"))
    assert again.status_code == 302
    assert "can work on this project again" in manager.get(_url(world)).get_data(as_text=True)
    assert _standing(engine, world).blocked_at is None


def test_finance_reads_the_page_without_buttons_and_others_are_refused(
    world: World, as_user, db_session: Session, engine: Any
) -> None:
    _worked(world, as_user, db_session)
    finance = as_user(world.org_finance)
    html = finance.get(_url(world)).get_data(as_text=True)
    assert NAME in html
    assert "Block…" not in html
    assert finance.post(_url(world, world.annotator.id, "block"), data={"reason": "x"}).status_code == 403
    assert as_user(world.reviewer).get(_url(world)).status_code == 403
    outsider = as_user(world.other_manager)
    assert outsider.get(_url(world)).status_code == 404
    assert outsider.post(_url(world, world.annotator.id, "block"), data={"reason": "x"}).status_code == 404
    assert _standing(engine, world).blocked_at is None
    # someone who never worked on the project is not found
    manager = as_user(world.manager)
    assert manager.post(_url(world, 999_999, "block"), data={"reason": "x"}).status_code == 404


def test_an_empty_project_says_so(world: World, as_user) -> None:
    html = as_user(world.manager).get(_url(world)).get_data(as_text=True)
    assert "Nobody has taken a task in this project yet." in html
    assert re.search(r"<table", html) is None


def test_a_manager_reverses_an_annotators_wrong_rejections_from_the_page(
    world: World, as_user, db_session: Session, engine: Any
) -> None:
    annotator = _worked(world, as_user, db_session)
    _label(annotator, key="second")
    labels = db_session.scalars(select(Label).order_by(Label.id)).all()
    for label in labels:
        review_label(
            db_session,
            label_id=label.id,
            user=world.reviewer,
            decision="reject",
            reason="Too vague",
            now=utcnow(),
        )
    db_session.commit()
    manager = as_user(world.manager)
    listing = manager.get(_url(world)).get_data(as_text=True)
    page_url = _url(world, world.annotator.id, "rejections")
    assert f'href="{page_url}"' in listing
    page = manager.get(page_url)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Too vague" in html
    assert html.count('name="label_ids"') == 2

    assert manager.post(page_url, data={"reason": "The guide allowed it"}).status_code == 422
    assert manager.post(page_url, data={"label_ids": [str(labels[0].id)], "reason": " "}).status_code == 422
    invisible = manager.post(page_url, data={"label_ids": [str(labels[0].id)], "reason": "\u200b"})
    assert invisible.status_code == 422
    assert "Say why the rejections are reversed." in invisible.get_data(as_text=True)
    done = manager.post(page_url, data={"label_ids": [str(labels[0].id)], "reason": "The guide allowed it"})
    assert done.status_code == 302
    assert "Reversed 1 rejection: accepted and paid." in manager.get(page_url).get_data(as_text=True)
    with Session(engine) as check:
        states = [check.get_one(Label, label.id).review_state for label in labels]
        assert states == ["accepted", "rejected"]
        assert check.get_one(Label, labels[0].id).reason == "The guide allowed it"
    assert as_user(world.org_finance).get(page_url).status_code == 403
    assert as_user(world.other_manager).get(page_url).status_code == 404


def test_the_annotators_csv_has_everyone_with_numbers_and_money(
    world: World, as_user, db_session: Session
) -> None:
    _worked(world, as_user, db_session)
    answer = as_user(world.org_finance).get(_url(world) + ".csv")
    assert answer.status_code == 200
    assert (
        answer.headers["Content-Disposition"]
        == f'attachment; filename="project-{world.project.id}-annotators.csv"'
    )
    header, row = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))
    record = dict(zip(header, row, strict=True))
    assert record["annotator_id"] == str(world.annotator.id)
    assert record["name"] == NAME
    assert (record["status"], record["labels_submitted"], record["labels_pending"]) == ("active", "1", "1")
    assert (record["earned_minor"], record["earned"], record["currency"]) == ("0", "€0.00", "EUR")
    assert record["acceptance_rate"] == ""
    assert as_user(world.reviewer).get(_url(world) + ".csv").status_code == 403
    assert as_user(world.other_manager).get(_url(world) + ".csv").status_code == 404


def test_a_blocked_annotator_sees_which_project_blocked_them_and_why(
    world: World, as_user, db_session: Session
) -> None:
    annotator = _worked(world, as_user, db_session)
    assert "Projects that blocked you" not in annotator.get("/work").get_data(as_text=True)
    as_user(world.manager).post(_url(world, world.annotator.id, "block"), data={"reason": "Copied answers"})
    html = annotator.get("/work").get_data(as_text=True)
    assert "Projects that blocked you" in html
    assert "Copied answers" in html
    assert "Product reviews</strong>" in html
