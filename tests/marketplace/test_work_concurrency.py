"""64 annotators racing through next → submit on PostgreSQL: no slot leased twice, no item twice to one person,
no item over its labels, every hold resolved once, the ledger balanced."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select, text

from marketplace.accounts.models import User
from marketplace.billing.services import fund_project
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Task
from marketplace.work.models import Assignment, Label
from payments import ledger
from payments.db import utcnow
from payments.money import Money
from tests import factories as f

THREADS = 64
ITEMS_PER_PROJECT = 350
PROJECTS = 3
REDUNDANCY = 3


@pytest.mark.postgres
@pytest.mark.slow
def test_64_annotators_never_double_lease(app_config, make_app, db_session) -> None:
    # one connection per annotator thread, as 64 separate clients of a deployment would have
    app = make_app({**app_config, "DATABASE_POOL_SIZE": THREADS, "DATABASE_MAX_OVERFLOW": 8})
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    for p in range(PROJECTS):
        project = f.project(
            db_session,
            org,
            creator=manager,
            labels_per_item=REDUNDANCY,
            review_policy="consensus",
            pay_per_label_minor=100,
        )
        rows = [(i, {"external_id": f"p{p}-{i}", "payload": {"i": i}}) for i in range(ITEMS_PER_PROJECT)]
        import_tasks(db_session, project=project, rows=rows)
        fund_project(db_session, project=project, amount=Money(10**9, "EUR"), idempotency_key=f"fund-{p}")
    tokens = []
    for _ in range(THREADS):
        worker = f.annotator(db_session, capacity=3)
        tokens.append(f.token(db_session, db_session.get(User, worker.user_id)))
    db_session.commit()
    errors: list[str] = []
    total_slots = PROJECTS * ITEMS_PER_PROJECT * REDUNDANCY
    done = Counter(dict.fromkeys(range(THREADS), 0))  # every key now: threads sum it while others count
    deadline = time.monotonic() + 300

    def annotate(index: int) -> None:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {tokens[index]}"}
        pause = 0.01
        while sum(done.values()) < total_slots:
            if time.monotonic() > deadline:
                errors.append(f"annotator {index} found no work for 300 s with slots left")
                return
            response = client.post("/api/v1/work/next", headers=headers)
            if response.status_code != 200:
                errors.append(f"next {response.status_code}: {response.get_json()}")
                return
            assignment = response.get_json()["assignment"]
            if assignment is None:
                # The last free slots may be in items other annotators hold leased right now (skipped, locked):
                # ask again until every slot is labelled, instead of leaving them to whoever asks last.
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
                continue
            pause = 0.01
            submitted = client.post(
                f"/api/v1/assignments/{assignment['id']}/submit",
                json={"value": "cat"},
                headers={**headers, "Idempotency-Key": f"{index}-{assignment['id']}"},
            )
            if submitted.status_code != 200:
                errors.append(f"submit {submitted.status_code}: {submitted.get_json()}")
                return
            done[index] += 1

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert errors == []
    assert sum(done.values()) == total_slots  # every slot labelled exactly once
    # no item has more assignments that reached a label than it needs, none to the same annotator twice
    per_task = db_session.execute(
        select(Assignment.task_id, func.count(), func.count(func.distinct(Assignment.annotator_id)))
        .where(Assignment.state == "submitted")
        .group_by(Assignment.task_id)
    ).all()
    assert len(per_task) == PROJECTS * ITEMS_PER_PROJECT
    assert all(count == REDUNDANCY and distinct == REDUNDANCY for _, count, distinct in per_task)
    tasks = db_session.scalars(select(Task)).all()
    assert all(
        t.status == "complete" and t.labels_accepted == REDUNDANCY and t.labels_in_progress == 0
        for t in tasks
    )
    # consensus accepted every label (they all agree), and each hold was posted exactly once
    assert (
        db_session.scalar(select(func.count()).select_from(Label).where(Label.review_state != "accepted"))
        == 0
    )
    unresolved = db_session.scalar(
        text(
            "SELECT count(*) FROM assignments a WHERE a.hold_transaction_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM ledger_transactions r WHERE r.resolves_hold_id = a.hold_transaction_id)"
        )
    )
    assert unresolved == 0
    assert ledger.check_integrity(db_session) == []


@pytest.mark.postgres
def test_one_annotator_asking_many_times_at_once_gets_no_more_leases_than_their_capacity(
    app_config, make_app, db_session
) -> None:
    """Each request counts the annotator's live leases before it leases: without a lock, requests that run at
    once each count the others' leases as not there yet."""
    requests = 12
    app = make_app({**app_config, "DATABASE_POOL_SIZE": requests, "DATABASE_MAX_OVERFLOW": 4})
    org = f.organisation(db_session)
    project = f.project(db_session, org, creator=f.member(db_session, org, "manager"), labels_per_item=1)
    rows = [(i, {"external_id": f"cap-{i}", "payload": {"i": i}}) for i in range(50)]
    import_tasks(db_session, project=project, rows=rows)
    fund_project(db_session, project=project, amount=Money(10**6, "EUR"), idempotency_key="fund-cap")
    worker = f.annotator(db_session, capacity=2)
    worker.last_seen_at = utcnow()  # seen just now: no request of theirs writes the profile on the way
    secret = f.token(db_session, db_session.get(User, worker.user_id))
    db_session.commit()
    # used just now: no request writes the token's row on the way either
    assert app.test_client().get("/api/v1/me", headers=f.auth(secret)).status_code == 200
    start = threading.Barrier(requests)
    answers: list[dict] = []

    def ask() -> None:
        client = app.test_client()
        start.wait()
        response = client.post("/api/v1/work/next", headers=f.auth(secret))
        answers.append(response.get_json())

    threads = [threading.Thread(target=ask) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    leased = [a["assignment"] for a in answers if a["assignment"] is not None]
    assert len(answers) == requests
    assert len(leased) == 2
    assert {a["reason"] for a in answers if a["assignment"] is None} == {"at_capacity"}
    live = db_session.scalar(
        select(func.count()).select_from(Assignment).where(Assignment.annotator_id == worker.id)
    )
    assert live == 2
