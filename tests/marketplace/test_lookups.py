"""Lookups of things that do not exist (or belong to someone else) answer a 404 problem, never a 500 or a leak."""

from __future__ import annotations

from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    fast_password_hashing,
    make_project,
)


def _not_found(response) -> dict:
    assert response.status_code == 404, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "not_found"
    return error


def test_unknown_payout_run_and_payout(client, db_session) -> None:
    finance = f.auth(f.token(db_session, f.user(db_session, platform_role="finance")))
    db_session.commit()
    assert (
        "Payout run 4242" in _not_found(client.get("/api/v1/payouts/runs/4242", headers=finance))["message"]
    )
    assert "Payout 4242" in _not_found(client.get("/api/v1/payouts/4242", headers=finance))["message"]
    assert client.get("/api/v1/payouts", headers=finance).get_json() == {"items": []}


def test_unknown_skill_throughput(client, db_session) -> None:
    skill = f.skill(db_session, "audio")
    manager = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    db_session.commit()
    _not_found(client.get(f"/api/v1/skills/{skill.id + 100}/throughput", headers=manager))
    known = client.get(f"/api/v1/skills/{skill.id}/throughput", headers=manager)
    assert known.status_code == 200
    assert known.get_json()["skill"] == "audio"


def test_the_review_queue_of_another_tenants_project_is_not_found(client, db_session) -> None:
    org = f.organisation(db_session)
    own = make_project(db_session, org=org, tasks=1)
    foreign = make_project(db_session, tasks=1)
    reviewer = f.auth(f.token(db_session, f.member(db_session, org, "reviewer")))
    db_session.commit()
    _not_found(client.get(f"/api/v1/review/next?project_id={foreign.id}", headers=reviewer))
    _not_found(client.get("/api/v1/review/next?project_id=99999", headers=reviewer))
    empty = client.get(f"/api/v1/review/next?project_id={own.id}", headers=reviewer)
    assert empty.get_json() == {"label": None, "task": None, "project": None, "queue": None}
