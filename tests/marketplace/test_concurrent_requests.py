"""A request that loses to a concurrent transaction, on PostgreSQL: retried where the view can be, otherwise a 503
that says nothing was saved and the same request may be sent again; never a bare 500.

Each deadlock here is real and arranged step by step: another transaction (`other`) locks a row the request will
need, the request locks its token's row (the first use of a token records it) and waits, then `other` asks for
the token's row. PostgreSQL undoes the transaction that has waited longest, the request's."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from marketplace.accounts.models import ApiToken, User
from marketplace.accounts.services import issue_token
from marketplace.annotators.models import Skill
from marketplace.db import utcnow
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Project, Task
from marketplace.quality.review import review_label
from marketplace.work.models import Assignment, Label
from payments import ledger
from tests import factories as f
from tests.marketplace import test_quality_api as qa
from tests.marketplace.test_quality_support import work

pytestmark = pytest.mark.postgres


def _waiting_for_a_lock(engine: Any) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )
        )


def _deadlock_the_request(engine: Any, send: Any, *, lock_first: str, token_id: int, **params: Any) -> Any:
    """Run `send()` in a thread while another transaction holds `lock_first` and then asks for the token's row."""
    answers: list[Any] = []
    with Session(engine) as other:
        other.execute(text(lock_first), params)
        thread = threading.Thread(target=lambda: answers.append(send()))
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_for_a_lock(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_for_a_lock(engine), "the request never waited for the other transaction"
        # PostgreSQL looks for a deadlock after deadlock_timeout (1 s) of waiting: the request, waiting since
        # before this statement, is the one it finds and undoes.
        other.execute(text("UPDATE api_tokens SET name = name WHERE id = :id"), {"id": token_id})
        other.rollback()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return answers[0]


def test_a_request_undone_for_a_concurrent_one_is_a_503_that_says_to_send_it_again(
    app, client, db_session, engine
) -> None:
    admin = f.user(db_session, platform_role="admin")
    token, secret = issue_token(db_session, user=admin, name="fresh")  # unused: its first use records it
    db_session.commit()
    headers = f.auth(secret)

    def send() -> Any:
        return app.test_client().post(
            "/api/v1/skills", json={"name": "audio", "description": ""}, headers=headers
        )

    # `other` inserts the same skill name first: the request's insert waits on the unique key
    response = _deadlock_the_request(
        engine,
        send,
        lock_first="INSERT INTO skills (name, description, created_at) VALUES ('audio', '', now())",
        token_id=token.id,
    )
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "concurrent_update"
    assert response.headers["Retry-After"] == "1"
    assert db_session.scalar(select(func.count()).select_from(Skill).where(Skill.name == "audio")) == 0
    again = client.post("/api/v1/skills", json={"name": "audio", "description": ""}, headers=headers)
    assert again.status_code == 201


def test_revoking_a_token_is_retried_when_a_concurrent_transaction_undoes_it(app, db_session, engine) -> None:
    user = f.user(db_session)
    caller, secret = issue_token(db_session, user=user, name="caller")
    victim, _ = issue_token(db_session, user=user, name="victim")
    db_session.commit()

    def send() -> Any:
        return app.test_client().delete(f"/api/v1/tokens/{victim.id}", headers=f.auth(secret))

    response = _deadlock_the_request(
        engine,
        send,
        lock_first="UPDATE api_tokens SET name = name WHERE id = :victim",
        token_id=caller.id,
        victim=victim.id,
    )
    assert response.status_code == 204
    db_session.expire_all()
    assert db_session.get_one(ApiToken, victim.id).revoked_at is not None
    assert db_session.get_one(User, user.id).id == user.id


def test_two_imports_into_one_project_take_turns(engine, db_session) -> None:
    """Overlapping external ids in opposite orders, in several chunks each: without turns, each import locks
    index entries the other needs next."""
    project = f.project(db_session, f.organisation(db_session))
    db_session.commit()
    ids = [f"item-{n:03d}" for n in range(40)]
    first_holding = threading.Event()
    release = threading.Event()
    results: dict[str, Any] = {}

    def run(name: str, order: list[str], hold: bool) -> None:
        with Session(engine, expire_on_commit=False) as session:
            found = session.get_one(Project, project.id)
            rows = [(n, {"external_id": i, "payload": {"i": i}}) for n, i in enumerate(order, start=1)]
            results[name] = import_tasks(session, project=found, rows=rows, chunk_size=7)
            if hold:
                first_holding.set()
                release.wait(timeout=30)
            session.commit()

    first = threading.Thread(target=run, args=("first", ids[:30], True))
    first.start()
    assert first_holding.wait(timeout=30)
    second = threading.Thread(target=run, args=("second", list(reversed(ids[10:])), False))
    second.start()
    second.join(timeout=1.0)
    assert second.is_alive()  # waiting for the first import's commit, before inserting anything:
    with engine.connect() as conn:
        waits = conn.execute(text("SELECT locktype FROM pg_locks WHERE NOT granted")).scalars().all()
    assert waits == ["advisory"]  # for its turn, not on a row or an index entry the first one wrote
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert (results["first"].created, results["first"].existing) == (30, 0)
    assert (results["second"].created, results["second"].existing) == (10, 20)
    count = select(func.count()).select_from(Task).where(Task.project_id == project.id)
    assert db_session.scalar(count) == 40


def test_upholding_an_appeal_while_another_label_of_the_annotator_is_accepted_does_not_deadlock(
    app, client, db_session, engine
) -> None:
    """An upheld appeal pays from the budget after its hold was voided. It used to lock the budget's and the
    annotator's balance rows at once and the annotator's skill row after, while a reviewer's accept takes the
    skill row first and the balances at its commit: a deadlock. Now both take the balances at the commit."""
    t = qa.team(db_session)
    rejected = work(db_session, t.worker, "cat")
    db_session.commit()
    reject = {"decision": "reject", "reason": "it is a dog"}
    assert (
        client.post(f"/api/v1/labels/{rejected.id}/review", json=reject, headers=t.reviewer).status_code
        == 200
    )
    filed = client.post(
        f"/api/v1/labels/{rejected.id}/appeal", json={"comment": "cat"}, headers=t.worker_auth
    )
    assert filed.status_code == 201
    pending = work(db_session, t.worker, "dog")
    db_session.commit()
    reviewer = db_session.get_one(User, t.reviewer_id)
    accepting = threading.Event()
    release = threading.Event()
    answers: list[Any] = []

    def accept_and_wait() -> None:
        with app.app_context(), Session(engine, expire_on_commit=False) as session:
            user = session.get_one(User, reviewer.id)
            review_label(
                session, label_id=pending.id, user=user, decision="accept", reason=None, now=utcnow()
            )
            accepting.set()
            release.wait(timeout=30)
            session.commit()

    def uphold() -> None:
        answers.append(
            app.test_client().post(
                f"/api/v1/appeals/{filed.get_json()['id']}/decide",
                json={"decision": "uphold"},
                headers=t.second_reviewer,
            )
        )

    first = threading.Thread(target=accept_and_wait)
    first.start()
    assert accepting.wait(timeout=30)
    second = threading.Thread(target=uphold)
    second.start()
    second.join(timeout=1.0)
    assert second.is_alive()  # waiting for the accept's rows
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert answers[0].status_code == 200, answers[0].get_json()
    db_session.expire_all()
    states = {db_session.get_one(Label, i).review_state for i in (rejected.id, pending.id)}
    assert states == {"accepted"}
    assert ledger.check_integrity(db_session) == []


def test_changing_labels_per_item_while_a_lease_inserts_its_assignment_does_not_deadlock(
    app, db_session, engine
) -> None:
    """A lease holds its item's row and then inserts its assignment, whose foreign key shares the project's row;
    the change locks the project's row and then updates its items. With the project locked FOR UPDATE the two
    waited for each other."""
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    project = f.project(db_session, org, creator=manager, labels_per_item=3)
    import_tasks(db_session, project=project, rows=[(1, {"external_id": "a", "payload": {"n": 1}})])
    worker = f.annotator(db_session)
    headers = f.auth(f.token(db_session, manager))
    db_session.commit()
    task_id = db_session.scalar(select(Task.id).where(Task.project_id == project.id))
    answers: list[Any] = []
    with Session(engine) as lease:
        lease.execute(
            text("UPDATE tasks SET labels_in_progress = labels_in_progress + 1 WHERE id = :id"),
            {"id": task_id},
        )
        change = threading.Thread(
            target=lambda: answers.append(
                app.test_client().patch(
                    f"/api/v1/projects/{project.id}", json={"labels_per_item": 2}, headers=headers
                )
            )
        )
        change.start()
        deadline = time.monotonic() + 10
        while not _waiting_for_a_lock(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_for_a_lock(engine)  # the change waits for the lease's item
        now = utcnow()
        lease.add(
            Assignment(
                task_id=task_id,
                project_id=project.id,
                annotator_id=worker.id,
                price_minor=50,
                fee_minor=10,
                currency="EUR",
                leased_at=now,
                lease_expires_at=now + timedelta(minutes=30),
                lease_cap_at=now + timedelta(hours=2),
            )
        )
        # The foreign key's share lock on the project must not wait for the change (which, waiting for this
        # lease's item since before, would be found in a deadlock a second later and retried).
        lease.execute(text("SET LOCAL lock_timeout = '500ms'"))
        lease.flush()
        lease.commit()
    change.join(timeout=30)
    assert answers[0].status_code == 200, answers[0].get_json()
    db_session.expire_all()
    task = db_session.get_one(Task, task_id)
    assert (task.labels_needed, task.labels_in_progress) == (2, 1)
