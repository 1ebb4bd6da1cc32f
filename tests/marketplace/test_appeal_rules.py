"""Appeal rules the appeal tests leave out: a blank comment, a second appeal, the appeal window, reading an appeal,
unknown appeals, a reviewer's own label, and the appeal queue's project filter."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from marketplace.accounts.models import Organisation
from marketplace.annotators import services as annotator_services
from marketplace.db import utcnow
from marketplace.quality.appeals import APPEAL_WINDOW
from marketplace.quality.models import Appeal
from marketplace.work.models import Label
from tests import factories as f
from tests.marketplace import test_quality_api as qa
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    annotators,
    fast_password_hashing,
    make_project,
    payable,
    work,
)

REJECT = {"decision": "reject", "reason": "it is a dog"}


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert set(response.get_json()["error"]) == {"code", "message", "details"}
    return response.get_json()["error"]


def _rejected(client, db_session, t: qa.Team, value: str = "cat") -> Label:
    label = work(db_session, t.worker, value)
    assert (
        client.post(f"/api/v1/labels/{label.id}/review", json=REJECT, headers=t.reviewer).status_code == 200
    )
    return label


def _appeals(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(Appeal))


def test_an_appeal_needs_a_real_comment_and_is_made_once(client, db_session) -> None:
    t = qa.team(db_session)
    label = _rejected(client, db_session, t)
    url = f"/api/v1/labels/{label.id}/appeal"
    blank = _problem(client.post(url, json={"comment": "   "}, headers=t.worker_auth), 422)
    assert blank["details"] == {"comment": "required"}
    assert _appeals(db_session) == 0
    none_yet = _problem(client.get(url, headers=t.worker_auth), 404)
    assert none_yet["code"] == "not_found"
    first = client.post(url, json={"comment": "  it is a cat  "}, headers=t.worker_auth)
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["comment"] == "it is a cat"
    second = _problem(client.post(url, json={"comment": "again"}, headers=t.worker_auth), 409)
    assert second["code"] == "already_appealed"
    assert _appeals(db_session) == 1
    shown = client.get(url, headers=t.worker_auth)
    assert shown.status_code == 200
    assert (shown.get_json()["id"], shown.get_json()["state"]) == (first.get_json()["id"], "open")


def test_a_rejection_older_than_the_window_cannot_be_appealed(client, db_session) -> None:
    t = qa.team(db_session)
    old, recent = _rejected(client, db_session, t), _rejected(client, db_session, t)
    db_session.expire_all()
    stored = db_session.get_one(Label, old.id)
    stored.reviewed_at = utcnow() - APPEAL_WINDOW - timedelta(minutes=1)
    near = db_session.get_one(Label, recent.id)
    near.reviewed_at = utcnow() - APPEAL_WINDOW + timedelta(minutes=5)
    db_session.commit()
    late = client.post(f"/api/v1/labels/{old.id}/appeal", json={"comment": "late"}, headers=t.worker_auth)
    assert _problem(late, 409)["code"] == "appeal_window_closed"
    in_time = client.post(f"/api/v1/labels/{recent.id}/appeal", json={"comment": "ok"}, headers=t.worker_auth)
    assert in_time.status_code == 201
    assert _appeals(db_session) == 1


def test_deciding_an_unknown_appeal_is_404(client, db_session) -> None:
    t = qa.team(db_session)
    response = client.post(
        "/api/v1/appeals/999/decide", json={"decision": "uphold"}, headers=t.second_reviewer
    )
    assert _problem(response, 404)["code"] == "not_found"


def test_a_reviewer_never_decides_an_appeal_on_their_own_label(client, db_session) -> None:
    t = qa.team(db_session)
    # a reviewer of the organisation who also labels as an annotator
    dual = f.member(db_session, db_session.get_one(Organisation, t.project.organisation_id), "reviewer")
    f.skill(db_session)
    profile = annotator_services.create_profile(
        db_session,
        user=dual,
        display_name=dual.name,
        price_minor=50,
        currency="EUR",
        capacity=5,
        labels_per_hour=60.0,
        skills={"image-classification": 3},
    )
    dual_auth = f.auth(f.token(db_session, dual))
    db_session.commit()
    label = work(db_session, profile, "cat")
    rejected = client.post(f"/api/v1/labels/{label.id}/review", json=REJECT, headers=t.reviewer)
    assert rejected.status_code == 200
    appealed = client.post(f"/api/v1/labels/{label.id}/appeal", json={"comment": "cat"}, headers=dual_auth)
    assert appealed.status_code == 201
    appeal_id = appealed.get_json()["id"]
    # the queue does not offer it to them, nor to the reviewer who rejected it
    assert client.get("/api/v1/appeals/next", headers=dual_auth).get_json()["appeal"] is None
    assert client.get("/api/v1/appeals/next", headers=t.reviewer).get_json()["appeal"] is None
    own = client.post(f"/api/v1/appeals/{appeal_id}/decide", json={"decision": "uphold"}, headers=dual_auth)
    assert _problem(own, 403)["code"] == "own_label"
    assert db_session.scalar(select(Appeal.state)) == "open"
    assert payable(db_session, profile) == 0
    # the other reviewer gets it
    offered = client.get("/api/v1/appeals/next", headers=t.second_reviewer).get_json()["appeal"]
    assert offered["id"] == appeal_id


def test_the_appeal_queue_filters_by_project_and_hides_other_tenants(client, db_session) -> None:
    t = qa.team(db_session)
    org = db_session.get_one(Organisation, t.project.organisation_id)
    second_project = make_project(db_session, org=org, tasks=2)
    label = _rejected(client, db_session, t)
    other_id = ({t.project.id, second_project.id} - {label.project_id}).pop()
    appeal_id = client.post(
        f"/api/v1/labels/{label.id}/appeal", json={"comment": "cat"}, headers=t.worker_auth
    ).get_json()["id"]
    queue = "/api/v1/appeals/next"
    mine = client.get(f"{queue}?project_id={label.project_id}", headers=t.second_reviewer).get_json()
    assert mine["appeal"]["id"] == appeal_id
    other = client.get(f"{queue}?project_id={other_id}", headers=t.second_reviewer).get_json()
    assert other["appeal"] is None
    foreign = make_project(db_session, tasks=1)
    hidden = client.get(f"{queue}?project_id={foreign.id}", headers=t.second_reviewer)
    assert _problem(hidden, 404)["code"] == "not_found"
    missing = client.get(f"{queue}?project_id=99999", headers=t.second_reviewer)
    assert _problem(missing, 404)["code"] == "not_found"
