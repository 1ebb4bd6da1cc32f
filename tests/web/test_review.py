"""The reviewer's queue: the next label in manual review, accepted or rejected with a reason."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db import utcnow
from marketplace.quality.policy import review_submitted_label
from marketplace.work import decisions, leasing
from marketplace.work.models import Label
from tests import factories as f
from tests.web.conftest import World


def _submitted_label(db_session, world: World, value: str = "positive") -> int:
    outcome = leasing.lease_next_assignment(db_session, annotator=world.annotator, now=utcnow(), fee_bps=2000)
    assert outcome.assignment is not None
    label, _ = decisions.submit_label(
        db_session,
        annotator=world.annotator,
        assignment_id=outcome.assignment.id,
        value=value,
        idempotency_key=None,
        now=utcnow(),
    )
    review_submitted_label(db_session, label=label, now=utcnow())
    db_session.commit()
    return label.id


def test_reviewer_sees_the_next_label_and_accepts_it(world: World, as_user, db_session, engine) -> None:
    label_id = _submitted_label(db_session, world)
    client = as_user(world.reviewer)
    page = client.get("/review").get_data(as_text=True)
    assert "1 label waiting" in page
    assert "Review number 0: it works." in page
    assert "positive" in page
    assert "accepting pays €0.50" in page
    response = client.post(f"/review/labels/{label_id}", data={"decision": "accept"}, follow_redirects=True)
    assert f"Label {label_id} accepted." in response.get_data(as_text=True)
    assert "Nothing is waiting for review." in response.get_data(as_text=True)
    with Session(engine) as check:
        assert check.get_one(Label, label_id).review_state == "accepted"
    # the annotator sees it accepted, and the money in their earnings
    annotator = as_user(world.annotator_user)
    assert "accepted" in annotator.get("/work/history").get_data(as_text=True)
    assert "€0.50" in annotator.get("/work/earnings").get_data(as_text=True)


def test_rejecting_needs_a_reason_that_the_annotator_then_sees(
    world: World, as_user, db_session, engine
) -> None:
    label_id = _submitted_label(db_session, world)
    client = as_user(world.reviewer)
    refused = client.post(f"/review/labels/{label_id}", data={"decision": "reject", "reason": "  "})
    assert refused.status_code == 422
    assert "Say why the label is rejected" in refused.get_data(as_text=True)
    with Session(engine) as check:
        assert check.get_one(Label, label_id).review_state == "pending"
    done = client.post(
        f"/review/labels/{label_id}",
        data={"decision": "reject", "reason": "The review is clearly negative."},
        follow_redirects=True,
    )
    assert f"Label {label_id} rejected." in done.get_data(as_text=True)
    history = as_user(world.annotator_user).get("/work/history").get_data(as_text=True)
    assert "rejected" in history
    assert "The review is clearly negative." in history


def test_a_label_decided_meanwhile_is_reported_not_changed(world: World, as_user, db_session) -> None:
    label_id = _submitted_label(db_session, world)
    client = as_user(world.reviewer)
    client.post(f"/review/labels/{label_id}", data={"decision": "accept"})
    again = client.post(
        f"/review/labels/{label_id}", data={"decision": "reject", "reason": "late"}, follow_redirects=True
    )
    assert f"Label {label_id} is not waiting for review (it is accepted)." in again.get_data(as_text=True)


def test_another_tenants_reviewer_cannot_see_or_decide_the_label(world: World, as_user, db_session) -> None:
    label_id = _submitted_label(db_session, world)
    outsider = f.member(db_session, world.other_org, "reviewer")
    db_session.commit()
    client = as_user(outsider)
    assert "Nothing is waiting for review." in client.get("/review").get_data(as_text=True)
    assert client.post(f"/review/labels/{label_id}", data={"decision": "accept"}).status_code == 404
    assert client.post("/review/labels/999999", data={"decision": "accept"}).status_code == 404
    assert db_session.scalar(select(Label.review_state).where(Label.id == label_id)) == "pending"
