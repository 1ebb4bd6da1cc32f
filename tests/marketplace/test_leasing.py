"""Next task, leases, release, heartbeat and expiry, through the services (the API has its own tests)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.billing.services import fund_project, project_budget
from marketplace.db import utcnow
from marketplace.errors import Conflict
from marketplace.events.models import Event
from marketplace.planning.models import Offer, PlanRun
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Task
from marketplace.work import decisions, leases, leasing
from marketplace.work.models import Assignment, AssignmentState
from payments import ledger
from payments.money import Money
from tests import factories as f

FEE_BPS = 2000


def make_project(db_session, *, tasks: int = 5, budget_minor: int = 100_00, gold: int = 0, **overrides):
    org = f.organisation(db_session)
    project = f.project(db_session, org, **overrides)
    rows = [(i + 1, {"external_id": f"t{i}", "payload": {"i": i}}) for i in range(tasks)]
    rows += [
        (tasks + i + 1, {"external_id": f"g{i}", "payload": {"g": i}, "gold_answer": "cat"})
        for i in range(gold)
    ]
    import_tasks(db_session, project=project, rows=rows)
    if budget_minor:
        fund_project(
            db_session,
            project=project,
            amount=Money(budget_minor, "EUR"),
            idempotency_key=f"fund-{project.id}",
        )
    db_session.commit()
    return project


def lease(db_session, annotator, now=None, **kwargs):
    outcome = leasing.lease_next_assignment(
        db_session, annotator=annotator, now=now or utcnow(), fee_bps=FEE_BPS, **kwargs
    )
    db_session.commit()
    return outcome


def test_spot_lease_claims_a_slot_and_holds_the_budget(db_session) -> None:
    project = make_project(db_session, pay_per_label_minor=100)
    worker = f.annotator(db_session, price_minor=80)
    db_session.commit()
    outcome = lease(db_session, worker)
    assignment = outcome.assignment
    assert assignment is not None
    assert outcome.reason is None
    assert assignment.price_minor == 80
    assert assignment.fee_minor == 16  # 20% of the annotator's price
    assert assignment.source == "spot"
    task = db_session.get(Task, assignment.task_id)
    assert task.external_id == "t0"
    assert task.labels_in_progress == 1
    budget = project_budget(db_session, project=project)
    assert budget.held.amount == 96
    assert budget.available.amount == 100_00 - 96
    assert assignment.lease_expires_at - assignment.leased_at == timedelta(seconds=project.lease_seconds)


def test_redundancy_gives_each_item_to_distinct_annotators(db_session) -> None:
    make_project(db_session, tasks=2, labels_per_item=2)
    a, b, c = (f.annotator(db_session) for _ in range(3))
    db_session.commit()
    got = {name: lease(db_session, who).assignment for name, who in (("a", a), ("b", b), ("c", c))}
    assert got["a"].task_id == got["b"].task_id  # the same item, two distinct annotators
    assert got["c"].task_id != got["a"].task_id  # its two slots are taken
    second = lease(db_session, a).assignment
    assert second.task_id == got["c"].task_id  # a never gets the same item twice
    assert lease(db_session, a).reason == "all_slots_leased"


def test_no_work_reasons(db_session) -> None:
    make_project(db_session, tasks=1, min_level=4, pay_per_label_minor=100)
    too_junior = f.annotator(db_session, skills={"image-classification": 2})
    too_pricey = f.annotator(db_session, skills={"image-classification": 5}, price_minor=150)
    other_currency = f.annotator(db_session, skills={"image-classification": 5}, currency="USD")
    paused = f.annotator(db_session, skills={"image-classification": 5})
    paused.status = "paused"
    busy = f.annotator(db_session, skills={"image-classification": 5}, capacity=0)
    db_session.commit()
    for who in (too_junior, too_pricey, other_currency):
        assert lease(db_session, who).reason == "no_eligible_project"
    assert lease(db_session, paused).reason == "account_paused"
    assert lease(db_session, busy).reason == "at_capacity"


def test_budget_exhausted_stops_leasing(db_session) -> None:
    make_project(
        db_session, tasks=5, budget_minor=2 * 60, pay_per_label_minor=100
    )  # two labels of 50 + 10 fee
    workers = [f.annotator(db_session, price_minor=50) for _ in range(3)]
    db_session.commit()
    assert lease(db_session, workers[0]).assignment is not None
    assert lease(db_session, workers[1]).assignment is not None
    outcome = lease(db_session, workers[2])
    assert outcome.assignment is None
    assert outcome.reason == "budget_exhausted"
    assert "budget" in outcome.message
    assert db_session.scalar(select(func.sum(Task.labels_in_progress))) == 2  # the refused claim left nothing


def test_release_returns_the_slot_and_voids_the_hold(db_session) -> None:
    project = make_project(db_session, tasks=1)
    worker, other = f.annotator(db_session), f.annotator(db_session)
    db_session.commit()
    assignment = lease(db_session, worker).assignment
    leases.release_assignment(db_session, annotator=worker, assignment_id=assignment.id, now=utcnow())
    db_session.commit()
    assert db_session.get(Task, assignment.task_id).labels_in_progress == 0
    assert project_budget(db_session, project=project).held.amount == 0
    assert lease(db_session, worker).reason == "all_slots_leased"  # released items do not come back
    assert lease(db_session, other).assignment.task_id == assignment.task_id
    assert ledger.check_integrity(db_session) == []


def test_heartbeat_extends_up_to_the_cap(db_session) -> None:
    make_project(db_session, tasks=1, lease_seconds=600)
    worker = f.annotator(db_session)
    db_session.commit()
    start = utcnow()
    assignment = lease(db_session, worker, now=start).assignment
    later = start + timedelta(seconds=500)
    extended = leases.extend_lease(db_session, annotator=worker, assignment_id=assignment.id, now=later)
    assert extended.lease_expires_at == later + timedelta(seconds=600)
    leases.extend_lease(
        db_session, annotator=worker, assignment_id=assignment.id, now=start + timedelta(seconds=1000)
    )
    near_cap = start + timedelta(seconds=1500)
    capped = leases.extend_lease(db_session, annotator=worker, assignment_id=assignment.id, now=near_cap)
    assert capped.lease_expires_at == start + timedelta(seconds=1800)  # 3 × the lease length
    with pytest.raises(Conflict):
        leases.extend_lease(
            db_session, annotator=worker, assignment_id=assignment.id, now=start + timedelta(seconds=1801)
        )


def test_expired_leases_return_to_the_pool_and_late_submits_are_refused(db_session) -> None:
    project = make_project(db_session, tasks=1, lease_seconds=60)
    worker = f.annotator(db_session)
    db_session.commit()
    start = utcnow()
    assignment = lease(db_session, worker, now=start).assignment
    assert leases.expire_leases(db_session, now=start + timedelta(seconds=30)) == 0
    assert leases.expire_leases(db_session, now=start + timedelta(seconds=61)) == 1
    db_session.commit()
    db_session.refresh(assignment)
    assert assignment.state == AssignmentState.EXPIRED
    assert db_session.get(Task, assignment.task_id).labels_in_progress == 0
    assert project_budget(db_session, project=project).held.amount == 0
    with pytest.raises(Conflict, match="expired"):
        decisions.submit_label(
            db_session,
            annotator=worker,
            assignment_id=assignment.id,
            value="cat",
            idempotency_key=None,
            now=start + timedelta(seconds=62),
        )
    assert leases.expire_leases(db_session, now=start + timedelta(seconds=120)) == 0  # once only


def test_submit_is_idempotent_by_key(db_session) -> None:
    make_project(db_session, tasks=1)
    worker = f.annotator(db_session)
    db_session.commit()
    assignment = lease(db_session, worker).assignment
    now = utcnow()
    first, created = decisions.submit_label(
        db_session, annotator=worker, assignment_id=assignment.id, value="dog", idempotency_key="k1", now=now
    )
    db_session.commit()
    assert created
    with pytest.raises(Conflict, match="another value") as changed:  # the same key, another body: not a retry
        decisions.submit_label(
            db_session,
            annotator=worker,
            assignment_id=assignment.id,
            value="cat",
            idempotency_key="k1",
            now=now,
        )
    assert changed.value.code == "idempotency_conflict"
    again, created_again = decisions.submit_label(
        db_session, annotator=worker, assignment_id=assignment.id, value="dog", idempotency_key="k1", now=now
    )
    assert not created_again
    assert again.id == first.id
    assert again.value == "dog"
    with pytest.raises(Conflict, match="already submitted"):
        decisions.submit_label(
            db_session,
            annotator=worker,
            assignment_id=assignment.id,
            value="cat",
            idempotency_key="k2",
            now=now,
        )


def test_planned_offers_come_first_in_rank_order_and_are_used_once(db_session) -> None:
    project = make_project(db_session, tasks=4)
    worker = f.annotator(db_session)
    db_session.commit()
    tasks = list(db_session.scalars(select(Task).where(Task.project_id == project.id).order_by(Task.id)))
    run = PlanRun(method="flow", status="optimal")
    db_session.add(run)
    db_session.flush()
    for rank, task in enumerate([tasks[3], tasks[1]], start=1):
        db_session.add(
            Offer(
                plan_run_id=run.id,
                annotator_id=worker.id,
                task_id=task.id,
                project_id=project.id,
                rank=rank,
                price_minor=worker.price_minor,
                currency="EUR",
            )
        )
    db_session.commit()
    first = lease(db_session, worker).assignment
    second = lease(db_session, worker).assignment
    third = lease(db_session, worker).assignment
    assert (first.task_id, first.source) == (tasks[3].id, "plan")
    assert (second.task_id, second.source) == (tasks[1].id, "plan")
    assert (third.task_id, third.source) == (tasks[0].id, "spot")
    assert db_session.scalar(select(func.count()).select_from(Offer)) == 0


def test_gold_items_are_mixed_in_from_the_first_task(db_session) -> None:
    make_project(db_session, tasks=20, gold=3, review_params={"gold_rate": 0.25})
    worker = f.annotator(db_session, capacity=50)
    db_session.commit()
    sources = [lease(db_session, worker).assignment for _ in range(8)]
    gold_positions = [i for i, a in enumerate(sources) if a.is_gold]
    assert gold_positions == [0, 4]  # the first, then one in four
    assert all(db_session.get(Task, a.task_id).is_gold == a.is_gold for a in sources)
    assert db_session.scalar(select(func.sum(Task.labels_in_progress)).where(Task.is_gold.is_(True))) == 0


def test_another_annotators_assignment_is_not_found(db_session) -> None:
    make_project(db_session, tasks=1)
    owner, stranger = f.annotator(db_session), f.annotator(db_session)
    db_session.commit()
    assignment = lease(db_session, owner).assignment
    from marketplace.errors import NotFound

    with pytest.raises(NotFound):
        leases.release_assignment(db_session, annotator=stranger, assignment_id=assignment.id, now=utcnow())
    assert db_session.get(Assignment, assignment.id).state == "leased"


@pytest.mark.postgres
def test_a_planned_item_whose_row_another_transaction_holds_is_skipped_not_waited_for(
    db_session, engine
) -> None:
    """An expiry batch, a decision or another lease may hold an item's row until its commit; the lease takes the
    next candidate at once instead of waiting behind it (and, for a "submit and next", deadlocking with it)."""
    project = make_project(db_session, tasks=2)
    worker = f.annotator(db_session)
    db_session.commit()
    first, second = db_session.scalars(select(Task).where(Task.project_id == project.id).order_by(Task.id))
    run = PlanRun(method="flow", status="optimal")
    db_session.add(run)
    db_session.flush()
    db_session.add(
        Offer(
            plan_run_id=run.id,
            annotator_id=worker.id,
            task_id=second.id,
            project_id=project.id,
            rank=1,
            price_minor=worker.price_minor,
            currency="EUR",
        )
    )
    db_session.commit()
    leased: list[Assignment] = []
    with Session(engine) as holder:
        holder.execute(select(Task.id).where(Task.id == second.id).with_for_update(key_share=True))
        thread = threading.Thread(target=lambda: leased.append(lease(db_session, worker).assignment))
        thread.start()
        thread.join(timeout=5)
        waited = thread.is_alive()
        holder.rollback()
    thread.join(timeout=10)
    assert not waited, "the lease waited for the held item"
    assert (leased[0].task_id, leased[0].source) == (first.id, "spot")


def test_expired_leases_return_their_slots_in_item_order(db_session) -> None:
    """Two expiry runs at once lock the rows of their items in the same order, so neither waits for a row the
    other holds while holding one it needs: the events show the order of the work."""
    make_project(db_session, tasks=4)
    worker = f.annotator(db_session, capacity=4)
    db_session.commit()
    now = utcnow()
    assignments = [lease(db_session, worker, now=now).assignment for _ in range(4)]
    for n, assignment in enumerate(assignments):  # the last item's lease runs out first
        stored = db_session.get_one(Assignment, assignment.id)
        stored.lease_expires_at = now - timedelta(minutes=10, seconds=n)
    db_session.commit()
    assert leases.expire_leases(db_session, now=utcnow()) == 4
    db_session.commit()
    expired = db_session.scalars(
        select(Event.data).where(Event.type == "assignment.expired").order_by(Event.seq)
    ).all()
    assert [data["task_id"] for data in expired] == sorted(a.task_id for a in assignments)
