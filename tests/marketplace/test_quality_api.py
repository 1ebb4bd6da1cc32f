"""Manual review and appeals through the API: who may decide what, and the ledger state each decision leaves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from marketplace.accounts.models import Membership, User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill
from marketplace.billing.services import project_budget
from marketplace.events.models import Event
from marketplace.projects.models import Project
from marketplace.quality.models import Appeal
from marketplace.work.models import Label, ProjectWorker
from payments import ledger
from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    FEE,
    PRICE,
    annotators,
    fast_password_hashing,
    make_project,
    payable,
    work,
)


@dataclass
class Team:
    project: Project
    manager: dict[str, str]
    reviewer: dict[str, str]
    reviewer_id: int
    manager_id: int
    second_reviewer: dict[str, str]
    finance: dict[str, str]
    worker: AnnotatorProfile
    worker_auth: dict[str, str]


def team(db_session, tasks: int = 3, **overrides: Any) -> Team:
    org = f.organisation(db_session)
    project = make_project(db_session, org=org, tasks=tasks, **overrides)
    people = {role: f.member(db_session, org, role) for role in ("manager", "finance")}
    reviewer, second = f.member(db_session, org, "reviewer"), f.member(db_session, org, "reviewer")
    (worker,) = annotators(db_session, 1)
    headers = {name: f.auth(f.token(db_session, user)) for name, user in people.items()}
    team = Team(
        project=project,
        manager=headers["manager"],
        reviewer=f.auth(f.token(db_session, reviewer)),
        reviewer_id=reviewer.id,
        manager_id=people["manager"].id,
        second_reviewer=f.auth(f.token(db_session, second)),
        finance=headers["finance"],
        worker=worker,
        worker_auth=f.auth(f.token(db_session, own_user(db_session, worker))),
    )
    db_session.commit()
    return team


def own_user(db_session, annotator: AnnotatorProfile) -> User:
    return db_session.get_one(User, annotator.user_id)


def fresh(db_session, label: Label) -> Label:
    db_session.expire_all()
    return db_session.get_one(Label, label.id)


def test_reviewer_gets_the_oldest_waiting_label_and_accepts_it(client, db_session) -> None:
    t = team(db_session)
    first, second = work(db_session, t.worker, "cat"), work(db_session, t.worker, "dog")
    got = client.get("/api/v1/review/next", headers=t.reviewer)
    assert got.status_code == 200, got.get_json()
    body = got.get_json()
    assert body["label"]["id"] == first.id
    assert body["label"]["value"] == "cat"
    assert body["task"]["payload"] == {"i": 0}
    assert body["project"]["label_schema"]["type"] == "single_choice"
    assert body["queue"]["reason"] == "review policy"
    # the first label is claimed: a second reviewer is handed the next one
    assert client.get("/api/v1/review/next", headers=t.second_reviewer).get_json()["label"]["id"] == second.id
    decided = client.post(
        f"/api/v1/labels/{first.id}/review", json={"decision": "accept"}, headers=t.reviewer
    )
    assert decided.status_code == 200, decided.get_json()
    assert decided.get_json()["review_state"] == "accepted"
    assert fresh(db_session, first).reviewed_by_id == t.reviewer_id
    assert payable(db_session, t.worker) == PRICE
    budget = project_budget(db_session, project=t.project)
    assert (budget.spent.amount, budget.fees.amount, budget.held.amount) == (PRICE, FEE, PRICE + FEE)
    skill = db_session.scalar(select(AnnotatorSkill).where(AnnotatorSkill.annotator_id == t.worker.id))
    assert skill.accuracy_alpha == 3.0  # a person checked it: full evidence
    again = client.post(f"/api/v1/labels/{first.id}/review", json={"decision": "accept"}, headers=t.reviewer)
    assert again.status_code == 409
    assert ledger.check_integrity(db_session) == []


def test_rejecting_needs_a_reason_and_voids_the_hold(client, db_session) -> None:
    t = team(db_session)
    label = work(db_session, t.worker, "dog")
    url = f"/api/v1/labels/{label.id}/review"
    missing = client.post(url, json={"decision": "reject"}, headers=t.reviewer)
    assert missing.status_code == 422
    assert missing.get_json()["error"]["details"] == {"reason": "required to reject"}
    blank = client.post(url, json={"decision": "reject", "reason": "   "}, headers=t.reviewer)
    assert blank.status_code == 422
    rejected = client.post(url, json={"decision": "reject", "reason": "it is a cat"}, headers=t.reviewer)
    assert rejected.status_code == 200
    assert rejected.get_json()["reason"] == "it is a cat"
    assert payable(db_session, t.worker) == 0
    budget = project_budget(db_session, project=t.project)
    assert (budget.spent.amount, budget.held.amount, budget.available.amount) == (0, 0, 100_00)
    assert ledger.check_integrity(db_session) == []


def test_review_is_refused_to_outsiders_other_roles_and_the_labels_author(client, db_session) -> None:
    t = team(db_session)
    other = team(db_session)
    label = work(db_session, t.worker, "cat")
    url = f"/api/v1/labels/{label.id}/review"
    accept = {"decision": "accept"}
    assert client.post(url, json=accept, headers=other.reviewer).status_code == 404  # another tenant's label
    assert client.post(url, json=accept, headers=t.finance).status_code == 403
    assert client.get("/api/v1/review/next", headers=other.reviewer).get_json()["label"] is None
    assert (
        client.get(f"/api/v1/review/next?project_id={t.project.id}", headers=other.reviewer).status_code
        == 404
    )
    # a reviewer who also labels may not decide their own label, and is not handed it
    (own,) = annotators(db_session, 1)
    db_session.add(
        Membership(user_id=own.user_id, organisation_id=t.project.organisation_id, role="reviewer")
    )
    own_auth = f.auth(f.token(db_session, own_user(db_session, own)))
    db_session.commit()
    own_label = work(db_session, own, "dog")
    refused = client.post(f"/api/v1/labels/{own_label.id}/review", json=accept, headers=own_auth)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "own_label"
    assert client.get("/api/v1/review/next", headers=own_auth).get_json()["label"]["id"] == label.id
    assert fresh(db_session, own_label).review_state == "pending"


def test_appeal_once_decided_by_another_reviewer_and_paid_when_upheld(client, db_session) -> None:
    t = team(db_session)
    label = work(db_session, t.worker, "dog")
    reject = {"decision": "reject", "reason": "looks like a cat"}
    assert (
        client.post(f"/api/v1/labels/{label.id}/review", json=reject, headers=t.reviewer).status_code == 200
    )
    url = f"/api/v1/labels/{label.id}/appeal"
    assert (
        client.post(url, json={"comment": "it is a dog"}, headers=t.reviewer).status_code == 403
    )  # not an annotator
    filed = client.post(url, json={"comment": "it is a dog, look at the ears"}, headers=t.worker_auth)
    assert filed.status_code == 201, filed.get_json()
    appeal = filed.get_json()
    assert (appeal["state"], appeal["rejected_by_id"]) == ("open", t.reviewer_id)
    twice = client.post(url, json={"comment": "again"}, headers=t.worker_auth)
    assert (twice.status_code, twice.get_json()["error"]["code"]) == (409, "already_appealed")
    assert client.get(url, headers=t.worker_auth).get_json()["state"] == "open"
    # the reviewer who rejected it neither sees nor decides the appeal
    assert client.get("/api/v1/appeals/next", headers=t.reviewer).get_json()["appeal"] is None
    decide = f"/api/v1/appeals/{appeal['id']}/decide"
    same = client.post(decide, json={"decision": "uphold"}, headers=t.reviewer)
    assert (same.status_code, same.get_json()["error"]["code"]) == (403, "same_reviewer")
    queued = client.get("/api/v1/appeals/next", headers=t.second_reviewer).get_json()
    assert queued["appeal"]["id"] == appeal["id"]
    assert queued["label"]["reason"] == "looks like a cat"
    upheld = client.post(decide, json={"decision": "uphold", "reason": "ears"}, headers=t.second_reviewer)
    assert upheld.status_code == 200, upheld.get_json()
    assert upheld.get_json()["appeal"]["state"] == "upheld"
    assert upheld.get_json()["label"]["review_state"] == "accepted"
    assert client.post(decide, json={"decision": "deny", "reason": "x"}, headers=t.manager).status_code == 409
    assert payable(db_session, t.worker) == PRICE
    budget = project_budget(db_session, project=t.project)
    assert (budget.spent.amount, budget.fees.amount, budget.held.amount) == (PRICE, FEE, 0)
    db_session.expire_all()
    skill = db_session.scalar(select(AnnotatorSkill).where(AnnotatorSkill.annotator_id == t.worker.id))
    assert (skill.accuracy_alpha, skill.accuracy_beta) == (3.0, 1.0)  # the rejection's evidence moved back
    types = [e.type for e in db_session.scalars(select(Event).where(Event.project_id == t.project.id))]
    assert types.count("label.accepted") == 1
    assert "label.appealed" in types
    assert ledger.check_integrity(db_session) == []


def test_appeal_rules(client, db_session) -> None:
    t = team(db_session)
    pending = work(db_session, t.worker, "cat")
    url = f"/api/v1/labels/{pending.id}/appeal"
    not_rejected = client.post(url, json={"comment": "why"}, headers=t.worker_auth)
    assert (not_rejected.status_code, not_rejected.get_json()["error"]["code"]) == (409, "not_rejected")
    (stranger,) = annotators(db_session, 1)
    stranger_auth = f.auth(f.token(db_session, own_user(db_session, stranger)))
    db_session.commit()
    assert client.post(url, json={"comment": "mine?"}, headers=stranger_auth).status_code == 404
    reject = {"decision": "reject", "reason": "no"}
    assert (
        client.post(f"/api/v1/labels/{pending.id}/review", json=reject, headers=t.reviewer).status_code == 200
    )
    appeal_id = client.post(url, json={"comment": "please"}, headers=t.worker_auth).get_json()["id"]
    decide = f"/api/v1/appeals/{appeal_id}/decide"
    no_reason = client.post(decide, json={"decision": "deny"}, headers=t.second_reviewer)
    assert no_reason.status_code == 422
    denied = client.post(
        decide, json={"decision": "deny", "reason": "it is a dog"}, headers=t.second_reviewer
    )
    assert denied.get_json()["appeal"]["state"] == "denied"
    assert fresh(db_session, pending).review_state == "rejected"
    assert db_session.scalar(select(Appeal.reason)) == "it is a dog"
    assert payable(db_session, t.worker) == 0
    assert ledger.check_integrity(db_session) == []


def test_upheld_gold_appeal_counts_the_answer_right_and_lifts_the_block(client, db_session) -> None:
    params = {"gold_rate": 0.5, "gold_min_items": 1, "gold_accuracy_floor": 0.6}
    t = team(db_session, gold=1, review_params=params)
    label = work(db_session, t.worker, "dog")
    standing = db_session.get_one(ProjectWorker, (t.project.id, t.worker.id))
    assert standing.blocked_at is not None
    appeal_id = client.post(
        f"/api/v1/labels/{label.id}/appeal",
        json={"comment": "the answer key is wrong"},
        headers=t.worker_auth,
    ).get_json()["id"]
    upheld = client.post(
        f"/api/v1/appeals/{appeal_id}/decide", json={"decision": "uphold"}, headers=t.reviewer
    )
    assert upheld.status_code == 200, upheld.get_json()
    db_session.expire_all()
    standing = db_session.get_one(ProjectWorker, (t.project.id, t.worker.id))
    assert (standing.gold_correct, standing.gold_wrong, standing.blocked_at) == (1, 0, None)
    skill = db_session.scalar(select(AnnotatorSkill).where(AnnotatorSkill.annotator_id == t.worker.id))
    assert (skill.accuracy_alpha, skill.accuracy_beta, skill.gold_correct) == (3.0, 1.0, 1)
    assert payable(db_session, t.worker) == PRICE
    assert ledger.check_integrity(db_session) == []
