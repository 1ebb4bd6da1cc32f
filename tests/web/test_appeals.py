"""Appeals: an annotator contests a rejection with a comment; another reviewer upholds or denies it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.quality.models import Appeal
from marketplace.work.models import Label
from tests import factories as f
from tests.web.conftest import World
from tests.web.test_review import _submitted_label


def _rejected(db_session, world: World, as_user) -> tuple[int, int]:
    """A label rejected by the world's reviewer: (label id, assignment id)."""
    label_id = _submitted_label(db_session, world)
    as_user(world.reviewer).post(
        f"/review/labels/{label_id}", data={"decision": "reject", "reason": "It is neutral, not positive."}
    )
    return label_id, db_session.get_one(Label, label_id).assignment_id


def test_annotator_appeals_and_another_reviewer_upholds(world: World, as_user, db_session, engine) -> None:
    label_id, assignment_id = _rejected(db_session, world, as_user)
    annotator = as_user(world.annotator_user)
    page = annotator.get(f"/work/assignments/{assignment_id}").get_data(as_text=True)
    assert "It is neutral, not positive." in page
    assert "Appeal this rejection" in page

    empty = annotator.post(f"/work/labels/{label_id}/appeal", data={"comment": ""})
    assert empty.status_code == 422
    assert "This field is required." in empty.get_data(as_text=True)
    sent = annotator.post(
        f"/work/labels/{label_id}/appeal",
        data={"comment": "The text says it works, which is positive."},
        follow_redirects=True,
    )
    body = sent.get_data(as_text=True)
    assert "Appeal sent: a different reviewer will look at it." in body
    assert "You appealed" in body
    assert "Appeal this rejection" not in body
    assert "appeal open" in annotator.get("/work/history").get_data(as_text=True)

    # the reviewer who rejected it may not decide its appeal; the manager may
    assert "No open appeals for you to decide." in as_user(world.reviewer).get("/review/appeals").get_data(
        as_text=True
    )
    manager = as_user(world.manager)
    queue = manager.get("/review/appeals").get_data(as_text=True)
    assert "The text says it works, which is positive." in queue
    assert "It is neutral, not positive." in queue
    with Session(engine) as check:
        appeal_id = check.scalar(select(Appeal.id).where(Appeal.label_id == label_id))
    refused = manager.post(f"/review/appeals/{appeal_id}", data={"decision": "deny", "reason": ""})
    assert refused.status_code == 422
    assert "Say why the appeal is denied" in refused.get_data(as_text=True)
    upheld = manager.post(f"/review/appeals/{appeal_id}", data={"decision": "uphold"}, follow_redirects=True)
    assert f"Appeal {appeal_id} upheld: the label is accepted and paid." in upheld.get_data(as_text=True)
    with Session(engine) as check:
        assert check.get_one(Label, label_id).review_state == "accepted"
    assert "Label accepted" in annotator.get(f"/work/assignments/{assignment_id}").get_data(as_text=True)


def test_nobody_else_can_appeal_or_decide(world: World, as_user, db_session) -> None:
    label_id, _ = _rejected(db_session, world, as_user)
    stranger = f.annotator(db_session)
    outsider = f.member(db_session, world.other_org, "manager")
    db_session.commit()
    other = as_user(db_session.get_one(User, stranger.user_id))
    assert other.post(f"/work/labels/{label_id}/appeal", data={"comment": "mine!"}).status_code == 404
    as_user(world.annotator_user).post(
        f"/work/labels/{label_id}/appeal", data={"comment": "please look again"}
    )
    appeal_id = db_session.scalar(select(Appeal.id).where(Appeal.label_id == label_id))
    assert (
        as_user(outsider).post(f"/review/appeals/{appeal_id}", data={"decision": "uphold"}).status_code == 404
    )
    assert "No open appeals" in as_user(outsider).get("/review/appeals").get_data(as_text=True)
