"""Reversing rejections (MTurk's OverrideRejection): a project's managers find rejected labels and accept and pay
them after all, many at once, all or nothing, once each; and the labels list they find them with."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from marketplace.accounts.models import User
from marketplace.billing.services import project_budget
from marketplace.db import unit_of_work, utcnow
from marketplace.events.models import Event
from marketplace.projects.models import Project
from marketplace.quality import appeals
from marketplace.quality.models import Appeal
from marketplace.work.models import Label
from payments import ledger
from tests import factories as f
from tests.marketplace.test_quality_api import Team, fresh, team
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    FEE,
    PRICE,
    fast_password_hashing,
    lease,
    make_project,
    payable,
    submit,
    work,
)


def reject(client: Any, t: Team, label: Label) -> None:
    answer = client.post(
        f"/api/v1/labels/{label.id}/review",
        json={"decision": "reject", "reason": "not a cat"},
        headers=t.reviewer,
    )
    assert answer.status_code == 200, answer.get_json()


def reverse_url(t: Team) -> str:
    return f"/api/v1/projects/{t.project.id}/rejections/reverse"


def test_a_manager_finds_rejections_and_reverses_them_once(client, db_session) -> None:
    t = team(db_session, tasks=4)
    first, second, kept = (work(db_session, t.worker, "cat") for _ in range(3))
    reject(client, t, first)
    reject(client, t, second)
    assert (
        client.post(
            f"/api/v1/labels/{kept.id}/review", json={"decision": "accept"}, headers=t.reviewer
        ).status_code
        == 200
    )
    appeal = client.post(
        f"/api/v1/labels/{second.id}/appeal", json={"comment": "it is"}, headers=t.worker_auth
    )
    assert appeal.status_code == 201, appeal.get_json()
    other = make_project(db_session, tasks=1)
    elsewhere = work(db_session, t.worker, "cat", project_id=other.id)

    listed = client.get(
        f"/api/v1/projects/{t.project.id}/labels?review_state=rejected&reviewed_by_id={t.reviewer_id}",
        headers=t.manager,
    )
    assert listed.status_code == 200, listed.get_json()
    rejected = [item["id"] for item in listed.get_json()["items"]]
    assert rejected == [first.id, second.id]
    assert listed.get_json()["items"][0]["reason"] == "not a cat"
    page = client.get(f"/api/v1/projects/{t.project.id}/labels?limit=2", headers=t.reviewer).get_json()
    assert ([item["id"] for item in page["items"]], page["next_after"]) == ([first.id, second.id], second.id)
    mine = client.get(
        f"/api/v1/projects/{t.project.id}/labels?annotator_id={t.worker.id}&after={second.id}",
        headers=t.finance,
    ).get_json()
    assert [item["id"] for item in mine["items"]] == [kept.id]
    assert payable(db_session, t.worker) == PRICE

    body = {
        "label_ids": [*rejected, kept.id, elsewhere.id, 999_999],
        "reason": "the reviewer misread the guide",
    }
    answer = client.post(reverse_url(t), json=body, headers=t.manager)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {
        "reversed": 2,
        "outcomes": [
            {"label_id": first.id, "outcome": "reversed"},
            {"label_id": second.id, "outcome": "reversed"},
            {"label_id": kept.id, "outcome": "not_rejected"},
            {"label_id": elsewhere.id, "outcome": "not_found"},
            {"label_id": 999_999, "outcome": "not_found"},
        ],
    }
    assert (fresh(db_session, first).review_state, fresh(db_session, first).reason) == (
        "accepted",
        "the reviewer misread the guide",
    )
    assert payable(db_session, t.worker) == 3 * PRICE
    upheld = db_session.scalar(select(Appeal).where(Appeal.label_id == second.id))
    assert (upheld.state, upheld.reason) == ("upheld", "the reviewer misread the guide")
    sources = db_session.scalars(
        select(Event.data["source"].as_string()).where(
            Event.type == "label.accepted", Event.project_id == t.project.id
        )
    ).all()
    assert sorted(sources) == ["reversal", "reversal", "review"]
    budget = project_budget(db_session, project=t.project)
    assert (budget.spent.amount, budget.fees.amount) == (3 * PRICE, 3 * FEE)

    again = client.post(reverse_url(t), json=body, headers=t.manager).get_json()
    assert again["reversed"] == 0
    assert payable(db_session, t.worker) == 3 * PRICE
    assert ledger.check_integrity(db_session) == []


def test_only_managers_reverse_and_bad_requests_change_nothing(client, db_session) -> None:
    t = team(db_session)
    label = work(db_session, t.worker, "dog")
    reject(client, t, label)
    outsider = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    db_session.commit()
    body = {"label_ids": [label.id], "reason": "wrongly rejected"}
    assert client.post(reverse_url(t), json=body, headers=t.reviewer).status_code == 403
    assert client.post(reverse_url(t), json=body, headers=t.finance).status_code == 403
    assert client.post(reverse_url(t), json=body, headers=outsider).status_code == 404
    assert client.post(reverse_url(t), json=body, headers=t.worker_auth).status_code == 404
    assert client.get(f"/api/v1/projects/{t.project.id}/labels", headers=outsider).status_code == 404
    for bad in (
        {"label_ids": [], "reason": "x"},
        {"label_ids": list(range(1, 502)), "reason": "x"},
        {"label_ids": [label.id]},
        {"label_ids": [label.id], "reason": "   "},
        {"label_ids": [label.id], "reason": "\u200b\u200d"},
        {"label_ids": [1.5], "reason": "x"},
        {"label_ids": ["1"], "reason": "x"},
    ):
        assert client.post(reverse_url(t), json=bad, headers=t.manager).status_code == 422, bad
    assert (
        client.get(f"/api/v1/projects/{t.project.id}/labels?review_state=lost", headers=t.manager).status_code
        == 422
    )
    assert fresh(db_session, label).review_state == "rejected"
    assert payable(db_session, t.worker) == 0


def test_a_reversal_the_budget_cannot_pay_reverses_nothing(client, db_session) -> None:
    t = team(db_session, tasks=3, budget_minor=2 * (PRICE + FEE))
    labels = [work(db_session, t.worker, "dog") for _ in range(2)]
    for label in labels:
        reject(client, t, label)
    lease(db_session, t.worker)  # holds one label's worth: one reversal is affordable, not two
    answer = client.post(
        reverse_url(t), json={"label_ids": [lb.id for lb in labels], "reason": "oops"}, headers=t.manager
    )
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["error"]["code"] == "insufficient_funds"
    assert [fresh(db_session, lb).review_state for lb in labels] == ["rejected", "rejected"]
    assert payable(db_session, t.worker) == 0
    assert ledger.check_integrity(db_session) == []


@pytest.mark.postgres
def test_a_reversal_and_an_appeals_decision_at_once_pay_the_label_once(app, client, db_session) -> None:
    t = team(db_session, tasks=6)
    labels = [work(db_session, t.worker, "dog") for _ in range(6)]
    appeals = []
    for label in labels:
        reject(client, t, label)
        filed = client.post(f"/api/v1/labels/{label.id}/appeal", json={"comment": "c"}, headers=t.worker_auth)
        appeals.append(filed.get_json()["id"])
    answers: list[int] = []
    start = threading.Barrier(2 * len(labels))

    def reverse(label_id: int) -> None:
        start.wait()
        got = app.test_client().post(
            reverse_url(t), json={"label_ids": [label_id], "reason": "misread"}, headers=t.manager
        )
        answers.append(got.status_code)

    def uphold(appeal_id: int) -> None:
        start.wait()
        got = app.test_client().post(
            f"/api/v1/appeals/{appeal_id}/decide", json={"decision": "uphold"}, headers=t.second_reviewer
        )
        answers.append(got.status_code)

    threads = [threading.Thread(target=reverse, args=(label.id,)) for label in labels]
    threads += [threading.Thread(target=uphold, args=(appeal_id,)) for appeal_id in appeals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(answers) <= {200, 409}, answers  # 409: the appeal was already upheld by the reversal
    db_session.expire_all()
    assert {fresh(db_session, label).review_state for label in labels} == {"accepted"}
    assert payable(db_session, t.worker) == len(labels) * PRICE
    paid = db_session.scalar(select(func.count()).where(Event.type == "label.accepted"))
    assert paid == len(labels)
    assert ledger.check_integrity(db_session) == []


def _deadlocks(engine: Any) -> int:
    time.sleep(1.2)  # PostgreSQL publishes a backend's statistics when it goes idle, at most once a second
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            conn.scalar(text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
            or 0
        )


@pytest.mark.postgres
def test_a_reversal_waits_for_an_appeal_decision_on_the_same_annotator_without_a_deadlock(
    app, client, db_session, engine, monkeypatch
) -> None:
    """The batch [G1, G2] of one annotator, G2 appealed and being upheld (slowly) at the same moment: the
    reversal must not hold the annotator's rows from G1 while it waits for G2's appeal, which the decision holds
    while it wants those rows."""
    params = {"gold_rate": 0.5, "gold_min_items": 20, "gold_accuracy_floor": 0.1}
    t = team(db_session, tasks=4, gold=4, review_policy="gold", review_params=params)
    gold: list[Label] = []
    ordinary = 0  # accepted and paid at once under the gold policy
    while len(gold) < 2:
        label = work(db_session, t.worker, "dog")  # gold items answer "cat"
        if label.is_gold:
            gold.append(label)
        else:
            ordinary += 1
    g1, g2 = sorted(gold, key=lambda label: label.task_id)
    appeal_id = client.post(
        f"/api/v1/labels/{g2.id}/appeal", json={"comment": "c"}, headers=t.worker_auth
    ).get_json()["id"]
    real = appeals.overturn_rejection

    def slow(*args: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # only the decision, which runs here
            time.sleep(1.5)
        real(*args, **kwargs)

    monkeypatch.setattr(appeals, "overturn_rejection", slow)
    before = _deadlocks(engine)
    answers: dict[str, Any] = {}

    def reverse() -> None:
        time.sleep(0.5)  # after the decision has locked the appeal
        answers["reverse"] = app.test_client().post(
            reverse_url(t), json={"label_ids": [g1.id, g2.id], "reason": "undo"}, headers=t.manager
        )

    thread = threading.Thread(target=reverse)
    thread.start()
    with unit_of_work(app) as session:
        appeals.decide_appeal(
            session,
            appeal_id=appeal_id,
            user=session.get_one(User, t.reviewer_id),
            decision="uphold",
            reason="ok",
            now=utcnow(),
        )
    thread.join(timeout=60)
    assert answers["reverse"].status_code == 200, answers["reverse"].get_json()
    outcomes = {o["label_id"]: o["outcome"] for o in answers["reverse"].get_json()["outcomes"]}
    assert outcomes == {g1.id: "reversed", g2.id: "not_rejected"}
    assert _deadlocks(engine) == before
    assert {fresh(db_session, g1).review_state, fresh(db_session, g2).review_state} == {"accepted"}
    assert payable(db_session, t.worker) == (ordinary + 2) * PRICE
    assert ledger.check_integrity(db_session) == []


@pytest.mark.postgres
def test_a_batch_with_an_annotators_ordinary_and_gold_labels_waits_for_their_gold_submit(
    app, client, db_session, engine, monkeypatch
) -> None:
    """Checking a gold answer takes the annotator's project-worker row, then their skill row; a batch that
    overturned their ordinary label (the skill row) before reaching their gold one (the project-worker row) took
    the two the other way round."""
    params = {"gold_rate": 0.5, "gold_min_items": 20, "gold_accuracy_floor": 0.1}
    t = team(db_session, tasks=4, gold=4, review_params=params)  # manual review, gold mixed in
    first_gold = lease(db_session, t.worker)  # the first item is gold
    ordinary = work(db_session, t.worker, "dog")
    assert (first_gold.is_gold, ordinary.is_gold) == (True, False)
    reject(client, t, ordinary)
    wrong_gold = submit(db_session, t.worker, first_gold, "dog")  # rejected at once: the answer is "cat"
    assert ordinary.id < wrong_gold.id
    pending_gold = lease(db_session, t.worker)
    assert pending_gold.is_gold
    real = appeals.overturn_rejection

    def slow(*args: Any, **kwargs: Any) -> None:
        if kwargs["label"].is_gold:
            time.sleep(2)
        real(*args, **kwargs)

    monkeypatch.setattr(appeals, "overturn_rejection", slow)
    before = _deadlocks(engine)
    answers: dict[str, Any] = {}

    def submit_gold() -> None:
        time.sleep(0.7)  # while the batch is between its two labels
        answers["submit"] = app.test_client().post(
            f"/api/v1/assignments/{pending_gold.id}/submit", json={"value": "dog"}, headers=t.worker_auth
        )

    thread = threading.Thread(target=submit_gold)
    thread.start()
    with unit_of_work(app) as session:
        outcomes = appeals.reverse_rejections(
            session,
            project=session.get_one(Project, t.project.id),
            label_ids=[ordinary.id, wrong_gold.id],
            user=session.get_one(User, t.manager_id),
            reason="undo",
            now=utcnow(),
        )
    thread.join(timeout=60)
    assert outcomes == {ordinary.id: "reversed", wrong_gold.id: "reversed"}
    assert answers["submit"].status_code == 200, answers["submit"].get_json()
    assert _deadlocks(engine) == before
    assert ledger.check_integrity(db_session) == []
