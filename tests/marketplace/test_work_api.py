"""The work loop through the HTTP API: next, submit (idempotent), release, heartbeat, my assignments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from marketplace.accounts.models import Organisation, User
from marketplace.billing.services import LOCAL_FUNDING_ACCOUNT, budget_account_code, fund_project
from marketplace.db import RequestSession, utcnow
from marketplace.projects.imports import import_tasks
from marketplace.work.leasing import NO_WORK_MESSAGES
from payments import ledger
from payments.money import Money
from tests import factories as f


@pytest.fixture
def world(db_session):
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    project = f.project(db_session, org, creator=manager, labels_per_item=1, pay_per_label_minor=100)
    import_tasks(
        db_session,
        project=project,
        rows=[(i, {"external_id": f"t{i}", "payload": {"i": i}}) for i in range(3)],
    )
    fund_project(db_session, project=project, amount=Money(10_00, "EUR"), idempotency_key="fund")
    worker = f.annotator(db_session, price_minor=60)
    headers = f.auth(f.token(db_session, db_session.get(User, worker.user_id)))
    db_session.commit()
    return {"project": project, "worker": worker, "headers": headers, "manager": manager}


def test_next_returns_the_task_schema_price_and_lease(client, world) -> None:
    response = client.post("/api/v1/work/next", headers=world["headers"])
    assert response.status_code == 200
    body = response.get_json()
    assignment = body["assignment"]
    assert body["reason"] is None
    assert assignment["task"]["external_id"] == "t0"
    assert assignment["task"]["payload"] == {"i": 0}
    assert assignment["project"]["label_schema"]["choices"] == ["cat", "dog", "other"]
    assert assignment["price"] == {"amount_minor": 60, "currency": "EUR", "display": "€0.60"}
    assert assignment["state"] == "leased"
    assert assignment["lease_expires_at"] > assignment["leased_at"]


def test_submit_is_validated_and_idempotent(client, world) -> None:
    headers = world["headers"]
    assignment = client.post("/api/v1/work/next", headers=headers).get_json()["assignment"]
    url = f"/api/v1/assignments/{assignment['id']}/submit"
    bad = client.post(url, json={"value": "zebra"}, headers={**headers, "Idempotency-Key": "s1"})
    assert bad.status_code == 422
    first = client.post(url, json={"value": "dog"}, headers={**headers, "Idempotency-Key": "s1"})
    assert first.status_code == 200, first.get_json()
    replay = client.post(url, json={"value": "dog"}, headers={**headers, "Idempotency-Key": "s1"})
    assert replay.status_code == 200
    assert replay.get_json()["label"]["id"] == first.get_json()["label"]["id"]
    other = client.post(url, json={"value": "cat"}, headers={**headers, "Idempotency-Key": "s2"})
    assert other.status_code == 409
    assert other.get_json()["error"]["code"] == "already_submitted"
    # the same key with another value is not a retry: refused, like a funding's key reused for another amount
    changed = client.post(url, json={"value": "cat"}, headers={**headers, "Idempotency-Key": "s1"})
    assert changed.status_code == 409
    assert changed.get_json()["error"]["code"] == "idempotency_conflict"
    assert changed.get_json()["error"]["details"] == {"submitted": "dog"}


def test_release_and_heartbeat_and_my_assignments(client, world) -> None:
    headers = world["headers"]
    first = client.post("/api/v1/work/next", headers=headers).get_json()["assignment"]
    beat = client.post(f"/api/v1/assignments/{first['id']}/heartbeat", headers=headers)
    assert beat.status_code == 200
    assert beat.get_json()["lease_expires_at"] >= first["lease_expires_at"]
    released = client.post(f"/api/v1/assignments/{first['id']}/release", headers=headers)
    assert released.get_json()["state"] == "released"
    assert client.post(f"/api/v1/assignments/{first['id']}/heartbeat", headers=headers).status_code == 409
    second = client.post("/api/v1/work/next", headers=headers).get_json()["assignment"]
    assert second["task_id"] != first["task_id"]
    mine = client.get("/api/v1/work/assignments", headers=headers).get_json()
    assert [a["id"] for a in mine["items"]] == [second["id"], first["id"]]
    assert [a["state"] for a in mine["items"]] == ["leased", "released"]
    leased = client.get("/api/v1/work/assignments?state=released", headers=headers).get_json()["items"]
    assert [a["id"] for a in leased] == [first["id"]]


def test_no_work_is_200_with_a_reason(client, world, db_session) -> None:
    headers = world["headers"]
    for _ in range(3):
        assert client.post("/api/v1/work/next", headers=headers).get_json()["assignment"] is not None
    body = client.post("/api/v1/work/next", headers=headers).get_json()
    assert body["assignment"] is None
    assert body["reason"] == "all_slots_leased"
    assert body["message"]


def test_only_annotators_get_work_and_only_their_own(client, world, db_session) -> None:
    manager_headers = f.auth(f.token(db_session, world["manager"]))
    stranger = f.annotator(db_session)
    stranger_headers = f.auth(f.token(db_session, db_session.get(User, stranger.user_id)))
    db_session.commit()
    refused = client.post("/api/v1/work/next", headers=manager_headers)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "not_an_annotator"
    assignment = client.post("/api/v1/work/next", headers=world["headers"]).get_json()["assignment"]
    for action in ("submit", "release", "heartbeat"):
        response = client.post(
            f"/api/v1/assignments/{assignment['id']}/{action}",
            json={"value": "cat"},
            headers=stranger_headers,
        )
        assert response.status_code == 404, action


def test_project_filter_and_unknown_fields(client, world) -> None:
    headers = world["headers"]
    assert (
        client.post("/api/v1/work/next", json={"project_id": 999}, headers=headers).get_json()["reason"]
        == "no_eligible_project"
    )
    assert client.post("/api/v1/work/next", json={"project_id": True}, headers=headers).status_code == 422
    body = client.post(
        "/api/v1/work/next", json={"project_id": world["project"].id}, headers=headers
    ).get_json()
    assert body["assignment"]["project_id"] == world["project"].id


def test_submit_and_next_leases_once_even_when_retried(client, world, db_session) -> None:
    headers = world["headers"]
    # another project the worker qualifies for, due earlier: "submit and next" stays in the submitted one
    org = db_session.get(Organisation, world["project"].organisation_id)
    other = f.project(db_session, org, deadline=utcnow() + timedelta(hours=20))
    import_tasks(db_session, project=other, rows=[(1, {"external_id": "o1", "payload": {"i": 9}})])
    fund_project(db_session, project=other, amount=Money(10_00, "EUR"), idempotency_key="fund-other")
    db_session.commit()
    first = client.post(
        "/api/v1/work/next", json={"project_id": world["project"].id}, headers=headers
    ).get_json()["assignment"]
    url = f"/api/v1/assignments/{first['id']}/submit"
    keyed = {**headers, "Idempotency-Key": "k1"}
    answer = client.post(url, json={"value": "cat", "next": True}, headers=keyed)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["state"] == "submitted"
    assert body["label"]["value"] == "cat"
    following = body["next"]["assignment"]
    assert following["project_id"] == world["project"].id
    assert following["task"]["external_id"] == "t1"
    assert following["project"]["label_schema"]["choices"] == ["cat", "dog", "other"]

    retried = client.post(url, json={"value": "cat", "next": True}, headers=keyed).get_json()
    assert retried["label"]["id"] == body["label"]["id"]
    assert retried["next"]["assignment"]["id"] == following["id"]
    live = client.get("/api/v1/work/assignments?state=leased", headers=headers).get_json()["items"]
    assert [a["id"] for a in live] == [following["id"]]  # one lease, not two

    plain = client.post(
        f"/api/v1/assignments/{following['id']}/submit", json={"value": "dog"}, headers=headers
    ).get_json()
    assert "next" not in plain


def test_submit_and_next_says_why_there_is_no_next(client, world) -> None:
    headers = world["headers"]
    assignment = client.post("/api/v1/work/next", headers=headers).get_json()["assignment"]
    seen = []
    for i in range(3):  # the worker labels the project's three items by chaining "submit and next"
        seen.append(assignment["task"]["external_id"])
        body = client.post(
            f"/api/v1/assignments/{assignment['id']}/submit",
            json={"value": "cat", "next": True},
            headers={**headers, "Idempotency-Key": f"chain-{i}"},
        ).get_json()
        assignment = body["next"]["assignment"]
    assert seen == ["t0", "t1", "t2"]
    assert body["next"] == {
        "assignment": None,
        "reason": "all_slots_leased",
        "message": NO_WORK_MESSAGES["all_slots_leased"],
    }


@pytest.mark.postgres
def test_a_lease_that_loses_the_last_funds_at_commit_is_run_again_and_says_so(client, world, engine) -> None:
    """The hold checks the budget when the lease is opened but locks its row only at the commit. Money taken in
    between (here: by another transaction, just before this one's commit) makes the commit refuse; the request runs
    again and answers as it would have had it come second: no work, budget exhausted — and nothing half-written."""
    project = world["project"]
    commits: list[int] = []  # per commit: the assignments its transaction sees

    def take_the_money_first(session: Session) -> None:
        if session.in_nested_transaction():
            return
        commits.append(int(session.scalar(text("SELECT count(*) FROM assignments")) or 0))
        if len(commits) == 1:
            with Session(
                engine
            ) as other:  # leaves €0.10 of €10.00: not enough for a label (€0.72 with the fee)
                ledger.post_transaction(
                    other,
                    idempotency_key="refund",
                    kind="refund",
                    reference=f"project:{project.id}",
                    legs=[
                        ledger.debit(budget_account_code(project.id), Money(9_90, "EUR")),
                        ledger.credit(LOCAL_FUNDING_ACCOUNT, Money(9_90, "EUR")),
                    ],
                )
                other.commit()

    event.listen(RequestSession, "before_commit", take_the_money_first, insert=True)
    try:
        response = client.post("/api/v1/work/next", headers=world["headers"])
    finally:
        event.remove(RequestSession, "before_commit", take_the_money_first)
    assert response.status_code == 200
    body = response.get_json()
    assert body["assignment"] is None
    assert body["reason"] == "budget_exhausted"
    assert commits[:2] == [1, 0]  # the first run had leased and placed its hold; the second found no money
    with Session(engine) as check:
        assert check.scalar(text("SELECT count(*) FROM assignments")) == 0
        assert check.scalar(text("SELECT sum(labels_in_progress) FROM tasks")) == 0
        assert check.scalar(text("SELECT count(*) FROM events WHERE type = 'assignment.leased'")) == 0
        budget = ledger.balance(check, account_code=budget_account_code(project.id), currency="EUR")
        assert (budget.posted.amount, budget.available.amount) == (10, 10)
        assert ledger.check_integrity(check) == []
