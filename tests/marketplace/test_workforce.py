"""A project's workforce through the API: per-annotator numbers from the work and the ledger, a manager's block
and unblock, and the fast-answer rule."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.billing.services import project_budget
from marketplace.db import utcnow
from marketplace.events.models import Event
from marketplace.projects.models import Project, Task
from marketplace.quality.models import ReviewEntry
from marketplace.work.leases import expire_leases
from marketplace.work.models import Assignment, AssignmentState, Label, ProjectWorker
from payments import ledger
from tests import factories as f
from tests.marketplace.test_concurrent_requests import _waiting_for_a_lock
from tests.marketplace.test_quality_api import Team, fresh, own_user, team
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    FEE,
    PRICE,
    annotators,
    fast_password_hashing,
    lease,
    payable,
    work,
)


def money(amount: int, display: str) -> dict[str, Any]:
    return {"amount_minor": amount, "currency": "EUR", "display": display}


def workers_url(t: Team, *rest: object) -> str:
    return "/".join([f"/api/v1/projects/{t.project.id}/workers", *map(str, rest)])


def review(client: Any, t: Team, label: Label, decision: str) -> None:
    body = {"decision": decision, **({"reason": "not a cat"} if decision == "reject" else {})}
    answer = client.post(f"/api/v1/labels/{label.id}/review", json=body, headers=t.reviewer)
    assert answer.status_code == 200, answer.get_json()


def events(db_session: Any, kind: str) -> list[dict[str, Any]]:
    db_session.expire_all()
    return [e.data for e in db_session.scalars(select(Event).where(Event.type == kind).order_by(Event.id))]


def test_the_report_counts_each_annotators_work_time_and_money(client, db_session) -> None:
    t = team(db_session, tasks=6)
    second = annotators(db_session, 1)[0]
    a, b = t.worker, second
    now = utcnow()
    labels = [work(db_session, a, "cat", now=now - timedelta(minutes=10 - i), seconds=30) for i in range(3)]
    review(client, t, labels[0], "accept")
    review(client, t, labels[1], "accept")
    review(client, t, labels[2], "reject")
    released = lease(db_session, a)
    assert client.post(f"/api/v1/assignments/{released.id}/release", headers=t.worker_auth).status_code == 200
    work(db_session, b, "dog", now=now, seconds=60)  # pending
    stale = lease(db_session, b, now=now - timedelta(hours=2))
    expire_leases(db_session, now=now)
    db_session.commit()
    bonus = client.post(
        f"/api/v1/projects/{t.project.id}/bonuses",
        json={"annotator_id": a.id, "amount_minor": 200, "currency": "EUR", "reason": "careful"},
        headers={**t.manager, "Idempotency-Key": "b1"},
    )
    assert bonus.status_code == 201, bonus.get_json()

    answer = client.get(workers_url(t), headers=t.manager)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["project_id"], body["currency"], body["next_after"]) == (t.project.id, "EUR", None)
    first, other = body["items"]
    assert first == {
        "annotator_id": a.id,
        "name": a.display_name,
        "status": "active",
        "blocked_at": None,
        "blocked_reason": None,
        "blocked_source": None,
        "blocked_by_id": None,
        "fast_answers": 0,
        "leases": {"total": 4, "leased": 0, "submitted": 3, "released": 1, "expired": 0},
        "labels": {"submitted": 3, "pending": 0, "accepted": 2, "rejected": 1},
        "acceptance_rate": 0.6667,
        "gold": {"answered": 0, "correct": 0, "accuracy": None},
        "time_on_task_seconds": 90.0,
        "seconds_per_label": 30.0,
        "labels_per_hour": 120.0,
        "last_label_at": fresh(db_session, labels[2]).created_at.isoformat(),
        "earned": money(2 * PRICE, "€1.00"),
        "bonuses": money(200, "€2.00"),
        # two labels at price + fee, and the bonus with its 20% fee
        "cost": money(2 * (PRICE + FEE) + 240, "€3.60"),
        "cost_per_accepted_label": money(180, "€1.80"),
        # €1.00 earned in 90 s on task
        "hourly_pay": money(4000, "€40.00"),
    }
    assert payable(db_session, a) == 2 * PRICE + 200
    assert other["annotator_id"] == b.id
    assert other["leases"] == {"total": 2, "leased": 0, "submitted": 1, "released": 0, "expired": 1}
    assert other["labels"] == {"submitted": 1, "pending": 1, "accepted": 0, "rejected": 0}
    assert other["acceptance_rate"] is None
    assert (other["earned"], other["cost"], other["cost_per_accepted_label"]) == (
        money(0, "€0.00"),
        money(0, "€0.00"),
        None,
    )
    assert (other["seconds_per_label"], other["hourly_pay"]) == (60.0, money(0, "€0.00"))
    assert stale.id  # the expired lease is counted above

    # keyset pages, and one annotator
    page = client.get(workers_url(t) + "?limit=1", headers=t.manager).get_json()
    assert [w["annotator_id"] for w in page["items"]] == [a.id]
    assert page["next_after"] == a.id
    rest = client.get(workers_url(t) + f"?limit=1&after={a.id}", headers=t.manager).get_json()
    assert [w["annotator_id"] for w in rest["items"]] == [b.id]
    assert client.get(workers_url(t, b.id), headers=t.finance).get_json() == other


def test_only_the_projects_managers_admins_and_finance_read_it(client, db_session) -> None:
    t = team(db_session)
    work(db_session, t.worker, "cat")
    outsider = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    db_session.commit()
    assert client.get(workers_url(t), headers=t.finance).status_code == 200
    assert client.get(workers_url(t), headers=t.reviewer).status_code == 403
    assert client.get(workers_url(t), headers=t.worker_auth).status_code == 404
    assert client.get(workers_url(t), headers=outsider).status_code == 404
    assert client.get(workers_url(t, t.worker.id), headers=outsider).status_code == 404
    assert (
        client.post(workers_url(t, t.worker.id, "block"), json={"reason": "x"}, headers=outsider).status_code
        == 404
    )
    assert (
        client.post(workers_url(t, t.worker.id, "block"), json={"reason": "x"}, headers=t.finance).status_code
        == 403
    )
    assert client.get(workers_url(t) + "?limit=0", headers=t.manager).status_code == 422
    assert client.get(workers_url(t) + "?after=-1", headers=t.manager).status_code == 422


def test_a_manager_blocks_with_a_reason_and_the_live_leases_go_back(client, db_session) -> None:
    t = team(db_session, labels_per_item=1)
    held = [lease(db_session, t.worker), lease(db_session, t.worker)]
    never = annotators(db_session, 1)[0]
    url = workers_url(t, t.worker.id, "block")
    assert client.post(url, json={}, headers=t.manager).status_code == 422
    blank = client.post(url, json={"reason": "   "}, headers=t.manager)
    assert blank.status_code == 422
    invisible = client.post(url, json={"reason": "\u200b\ufeff \u2060"}, headers=t.manager)
    assert invisible.status_code == 422
    assert blank.get_json()["error"]["details"] == {"reason": "blank"}
    unknown = client.post(workers_url(t, never.id, "block"), json={"reason": "spam"}, headers=t.manager)
    assert unknown.status_code == 404  # someone who never worked on the project

    blocked = client.post(url, json={"reason": "  Copied answers from another tool  "}, headers=t.manager)
    assert blocked.status_code == 200, blocked.get_json()
    body = blocked.get_json()
    assert body["changed"] is True
    worker = body["worker"]
    assert (worker["status"], worker["blocked_reason"]) == ("blocked", "Copied answers from another tool")
    assert worker["blocked_source"] == "manager"
    assert (worker["leases"]["released"], worker["leases"]["leased"]) == (2, 0)
    manager_id = db_session.scalar(select(ProjectWorker.blocked_by_id))
    assert worker["blocked_by_id"] == manager_id is not None
    db_session.expire_all()
    assert {db_session.get_one(Assignment, a.id).state for a in held} == {AssignmentState.RELEASED.value}
    assert events(db_session, "worker.blocked") == [
        {
            "annotator_id": t.worker.id,
            "reason": "Copied answers from another tool",
            "source": "manager",
            "blocked_by_id": manager_id,
            "leases_released": 2,
        }
    ]
    budget = client.get(f"/api/v1/projects/{t.project.id}/budget", headers=t.manager).get_json()
    assert budget["held"] == money(0, "€0.00")
    no_work = client.post("/api/v1/work/next", json={"project_id": t.project.id}, headers=t.worker_auth)
    assert no_work.get_json() == {
        "assignment": None,
        "reason": "blocked",
        "message": "You are blocked from this project: Copied answers from another tool",
    }
    anywhere = client.post("/api/v1/work/next", json={}, headers=t.worker_auth).get_json()
    assert (anywhere["assignment"], anywhere["reason"]) == (None, "no_eligible_project")

    again = client.post(url, json={"reason": "something else"}, headers=t.manager).get_json()
    assert again["changed"] is False
    assert again["worker"]["blocked_reason"] == "Copied answers from another tool"
    assert len(events(db_session, "worker.blocked")) == 1

    lifted = client.post(workers_url(t, t.worker.id, "unblock"), headers=t.manager)
    assert lifted.status_code == 200
    assert (lifted.get_json()["changed"], lifted.get_json()["worker"]["status"]) == (True, "active")
    assert events(db_session, "worker.unblocked") == [
        {
            "annotator_id": t.worker.id,
            "source": "manager",
            "unblocked_by_id": manager_id,
            "was_blocked_for": "Copied answers from another tool",
        }
    ]
    assert (
        client.post(workers_url(t, t.worker.id, "unblock"), headers=t.manager).get_json()["changed"] is False
    )
    work_again = client.post("/api/v1/work/next", json={"project_id": t.project.id}, headers=t.worker_auth)
    assert work_again.get_json()["assignment"] is not None
    assert ledger.check_integrity(db_session) == []


def test_fast_answers_wait_for_a_reviewer_and_block_at_the_limit(client, db_session) -> None:
    params = {"min_seconds_per_label": 5.0, "fast_answer_limit": 2}
    # the gold policy accepts a label at once, unless it is a fast answer
    t = team(db_session, tasks=4, review_policy="gold", review_params=params)
    slow = work(db_session, t.worker, "cat", seconds=30)
    assert fresh(db_session, slow).review_state == "accepted"
    quick = work(db_session, t.worker, "cat", seconds=1.2)
    assert fresh(db_session, quick).review_state == "pending"
    entry = db_session.get_one(ReviewEntry, quick.id)
    assert entry.reason == "answered in 1.2 s, under the project's minimum of 5 s"
    assert payable(db_session, t.worker) == PRICE
    standing = client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()
    assert (standing["fast_answers"], standing["status"]) == (1, "active")

    spare = lease(db_session, t.worker)  # a live lease the block gives back
    # the second fast answer, through the API: labelled at once, with "submit and next"
    leased = client.post("/api/v1/work/next", json={"project_id": t.project.id}, headers=t.worker_auth)
    assignment_id = leased.get_json()["assignment"]["id"]
    done = client.post(
        f"/api/v1/assignments/{assignment_id}/submit",
        json={"value": "dog", "next": True},
        headers=t.worker_auth,
    ).get_json()
    assert done["label"]["review_state"] == "pending"
    assert done["next"] == {
        "assignment": None,
        "reason": "blocked",
        "message": "You are blocked from this project: Too fast: 2 labels submitted in under 5 s each, "
        "the project's minimum time per label.",
    }
    standing = client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()
    assert standing["status"] == "blocked"
    assert standing["fast_answers"] == 2

    assert standing["blocked_reason"] == (
        "Too fast: 2 labels submitted in under 5 s each, the project's minimum time per label."
    )
    assert standing["blocked_by_id"] is None
    db_session.expire_all()
    assert db_session.get_one(Assignment, spare.id).state == AssignmentState.RELEASED.value
    (blocked,) = events(db_session, "worker.blocked")
    assert (blocked["source"], blocked["leases_released"]) == ("fast_answers", 1)

    # a reviewer still decides the fast labels; unblocking starts the count again
    review(client, t, quick, "accept")
    assert client.post(workers_url(t, t.worker.id, "unblock"), headers=t.manager).status_code == 200
    standing = client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()
    assert (standing["fast_answers"], standing["status"]) == (0, "active")
    assert ledger.check_integrity(db_session) == []


def test_without_the_rule_a_fast_label_is_accepted_as_before(client, db_session) -> None:
    t = team(db_session, review_policy="gold")
    quick = work(db_session, t.worker, "cat", seconds=0.1)
    assert fresh(db_session, quick).review_state == "accepted"
    assert db_session.get_one(ProjectWorker, (t.project.id, t.worker.id)).fast_answers == 0


def test_fast_answer_settings_are_checked(client, db_session) -> None:
    t = team(db_session)
    url = f"/api/v1/projects/{t.project.id}"
    for params in ({"min_seconds_per_label": -1}, {"min_seconds_per_label": 3601}, {"fast_answer_limit": 0}):
        assert client.patch(url, json={"review_params": params}, headers=t.manager).status_code == 422
    ok = client.patch(
        url, json={"review_params": {"min_seconds_per_label": 2.5, "fast_answer_limit": 4}}, headers=t.manager
    )
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["review_params"]["min_seconds_per_label"] == 2.5


def test_unblocking_a_gold_block_is_a_fresh_start(client, db_session) -> None:
    params = {"gold_rate": 0.5, "gold_min_items": 1, "gold_accuracy_floor": 0.6}
    t = team(db_session, gold=2, review_params=params)
    wrong = work(db_session, t.worker, "dog")  # the first item is gold; its answer is "cat"
    assert fresh(db_session, wrong).review_state == "rejected"
    standing = client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()
    assert standing["status"] == "blocked"
    assert standing["blocked_reason"].startswith("Gold accuracy 0%")
    assert standing["gold"] == {"answered": 1, "correct": 0, "accuracy": 0.0}
    lifted = client.post(workers_url(t, t.worker.id, "unblock"), headers=t.manager).get_json()
    assert lifted["worker"]["status"] == "active"
    # the report still shows the answer; the counter behind the block starts again
    assert lifted["worker"]["gold"] == {"answered": 1, "correct": 0, "accuracy": 0.0}
    db_session.expire_all()
    row = db_session.get_one(ProjectWorker, (t.project.id, t.worker.id))
    assert (row.gold_correct, row.gold_wrong, row.blocked_at) == (0, 0, None)
    assert work(db_session, t.worker, "cat").id  # works again
    assert own_user(db_session, t.worker).id


@pytest.mark.postgres
def test_a_block_during_the_annotators_own_requests_leaves_no_lease_behind(app, db_session) -> None:
    """The block takes the annotator's profile row first, as their leases and submits do: a lease in flight
    either commits before the block (which then releases it) or sees the block and gets nothing."""
    t = team(db_session, tasks=400)
    project_id, worker_id = t.project.id, t.worker.id
    answers: list[int] = []
    stop = threading.Event()

    def label_continuously() -> None:
        client = app.test_client()
        while not stop.is_set():
            got = client.post("/api/v1/work/next", json={"project_id": project_id}, headers=t.worker_auth)
            answers.append(got.status_code)
            assignment = got.get_json().get("assignment")
            while assignment is not None and not stop.is_set():
                done = client.post(
                    f"/api/v1/assignments/{assignment['id']}/submit",
                    json={"value": "cat", "next": True},
                    headers=t.worker_auth,
                )
                answers.append(done.status_code)
                assignment = (done.get_json().get("next") or {}).get("assignment")
            if assignment is None and answers[-1] == 200:
                time.sleep(0.01)

    threads = [threading.Thread(target=label_continuously) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    blocked = app.test_client().post(
        f"/api/v1/projects/{project_id}/workers/{worker_id}/block", json={"reason": "spam"}, headers=t.manager
    )
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert blocked.status_code == 200, blocked.get_json()
    assert set(answers) <= {200, 409}, answers  # 409: a lease the block released before its submit
    db_session.expire_all()
    live = db_session.scalar(
        select(func.count()).where(
            Assignment.project_id == project_id,
            Assignment.annotator_id == worker_id,
            Assignment.state == AssignmentState.LEASED.value,
        )
    )
    assert live == 0
    pending = db_session.scalar(
        select(func.count()).where(Label.project_id == project_id, Label.review_state == "pending")
    )
    assert pending > 0
    budget = project_budget(db_session, project=db_session.get_one(Project, project_id))
    assert budget.held.amount == pending * (PRICE + FEE)  # labels awaiting review, and no lease
    assert ledger.check_integrity(db_session) == []


@pytest.mark.postgres
def test_a_block_that_waits_for_an_expiry_leaves_the_expired_lease_alone(app, db_session, engine) -> None:
    """The expiry ends the lease first; the block, which waited for the lease's row, must not free its slot a
    second time (that failed the block on the item's counter, or on a consensus item went unnoticed)."""
    t = team(db_session, tasks=2)
    held = lease(db_session, t.worker, now=utcnow() - timedelta(hours=2))
    task_id = held.task_id
    answers: list[Any] = []
    with Session(engine) as other:
        assert expire_leases(other, now=utcnow()) == 1  # not committed yet: the lease's row stays locked
        thread = threading.Thread(
            target=lambda: answers.append(
                app.test_client().post(
                    workers_url(t, t.worker.id, "block"), json={"reason": "spam"}, headers=t.manager
                )
            )
        )
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _waiting_for_a_lock(engine):
            time.sleep(0.05)
        assert _waiting_for_a_lock(engine), "the block never waited for the expiry"
        other.commit()
    thread.join(timeout=30)
    (blocked,) = answers
    assert blocked.status_code == 200, blocked.get_json()
    assert blocked.get_json()["worker"]["leases"]["expired"] == 1
    db_session.expire_all()
    assert db_session.get_one(Assignment, held.id).state == AssignmentState.EXPIRED.value
    task = db_session.get_one(Task, task_id)
    assert (task.labels_in_progress, task.status) == (0, "open")
    assert [e["leases_released"] for e in events(db_session, "worker.blocked")] == [0]
    assert events(db_session, "assignment.released") == []
    assert ledger.check_integrity(db_session) == []


def test_an_upheld_gold_appeal_lifts_only_a_gold_block_and_says_so(client, db_session) -> None:
    params = {"gold_rate": 0.5, "gold_min_items": 1, "gold_accuracy_floor": 0.5}
    t = team(db_session, gold=2, review_params=params)
    wrong = work(db_session, t.worker, "dog")  # the first item is gold: blocked by the gold floor
    assert client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()["blocked_source"] == "gold"
    appeal = client.post(f"/api/v1/labels/{wrong.id}/appeal", json={"comment": "key"}, headers=t.worker_auth)
    upheld = client.post(
        f"/api/v1/appeals/{appeal.get_json()['id']}/decide", json={"decision": "uphold"}, headers=t.reviewer
    )
    assert upheld.status_code == 200, upheld.get_json()
    assert client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()["status"] == "active"
    (lifted,) = events(db_session, "worker.unblocked")
    assert (lifted["source"], lifted["unblocked_by_id"]) == ("appeal", None)
    assert lifted["was_blocked_for"].startswith("Gold accuracy 0%")
    assert client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()["status"] == "active"

    # a manager's block, whatever its words, stays when another gold miss is overturned
    work(db_session, t.worker, "cat")  # an ordinary item
    second = work(db_session, t.worker, "dog")  # the second gold item: 1 of 2 right meets the floor
    assert fresh(db_session, second).review_state == "rejected"
    blocked = client.post(
        workers_url(t, t.worker.id, "block"),
        json={"reason": "Gold accuracy is not the issue"},
        headers=t.manager,
    )
    assert blocked.get_json()["changed"] is True
    appeal = client.post(f"/api/v1/labels/{second.id}/appeal", json={"comment": "key"}, headers=t.worker_auth)
    client.post(
        f"/api/v1/appeals/{appeal.get_json()['id']}/decide", json={"decision": "uphold"}, headers=t.reviewer
    )
    standing = client.get(workers_url(t, t.worker.id), headers=t.manager).get_json()
    assert (standing["status"], standing["blocked_source"]) == ("blocked", "manager")
    assert len(events(db_session, "worker.unblocked")) == 1
