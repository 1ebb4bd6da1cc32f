"""Gold items, consensus and automatic acceptance, through the services, each ending in the right ledger state."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill
from marketplace.billing.services import project_budget
from marketplace.db import utcnow
from marketplace.events.models import Event
from marketplace.projects.models import Task
from marketplace.quality.models import ConsensusItem, ReviewEntry
from marketplace.quality.outcomes import lock_task
from marketplace.quality.policy import review_submitted_label
from marketplace.quality.review import auto_accept_overdue
from marketplace.work import decisions, leasing
from marketplace.work.models import Label, ProjectWorker
from payments import ledger
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    FEE,
    FEE_BPS,
    PRICE,
    annotators,
    fast_password_hashing,
    lease,
    make_project,
    payable,
    submit,
    work,
)

GOLD_PARAMS = {"gold_rate": 0.5, "gold_min_items": 2, "gold_accuracy_floor": 0.6}


def skill_row(db_session, annotator, project):
    return db_session.scalar(
        select(AnnotatorSkill)
        .where(AnnotatorSkill.annotator_id == annotator.id, AnnotatorSkill.skill_id == project.skill_id)
        .execution_options(populate_existing=True)
    )


def event_types(db_session, project):
    return [
        e.type
        for e in db_session.scalars(select(Event).where(Event.project_id == project.id).order_by(Event.seq))
    ]


def test_correct_gold_answer_is_accepted_and_paid(db_session) -> None:
    project = make_project(db_session, gold=1, review_params=GOLD_PARAMS)
    (worker,) = annotators(db_session, 1)
    label = work(db_session, worker, "cat")
    assert label.is_gold
    assert label.review_state == "accepted"
    assert payable(db_session, worker) == PRICE
    budget = project_budget(db_session, project=project)
    assert (budget.spent.amount, budget.fees.amount, budget.held.amount) == (PRICE, FEE, 0)
    assert db_session.get(ProjectWorker, (project.id, worker.id)).gold_correct == 1
    skill = skill_row(db_session, worker, project)
    assert (skill.accuracy_alpha, skill.accuracy_beta, skill.gold_seen, skill.gold_correct) == (
        3.0,
        1.0,
        1,
        1,
    )
    assert event_types(db_session, project) == ["assignment.leased", "assignment.submitted", "label.accepted"]
    # a project that does not pay for control items releases the hold instead
    unpaid = make_project(db_session, gold=1, review_params={**GOLD_PARAMS, "pay_correct_gold": False})
    assert work(db_session, worker, "cat", project_id=unpaid.id).review_state == "accepted"
    assert payable(db_session, worker) == PRICE
    budget = project_budget(db_session, project=unpaid)
    assert (budget.spent.amount, budget.held.amount) == (0, 0)
    assert ledger.check_integrity(db_session) == []


def test_wrong_gold_answer_is_rejected_with_the_expected_answer(db_session) -> None:
    project = make_project(db_session, gold=1, review_params=GOLD_PARAMS)
    (worker,) = annotators(db_session, 1)
    label = work(db_session, worker, "dog")
    assert label.review_state == "rejected"
    assert label.reason == "wrong answer on a control item: expected cat"
    assert payable(db_session, worker) == 0
    budget = project_budget(db_session, project=project)
    assert (budget.spent.amount, budget.held.amount, budget.available.amount) == (0, 0, 100_00)  # hold voided
    skill = skill_row(db_session, worker, project)
    assert (skill.accuracy_alpha, skill.accuracy_beta, skill.gold_seen, skill.gold_correct) == (
        2.0,
        2.0,
        1,
        0,
    )
    assert db_session.get(ProjectWorker, (project.id, worker.id)).gold_wrong == 1
    assert ledger.check_integrity(db_session) == []


def test_failing_gold_blocks_and_releases_live_leases(db_session) -> None:
    project = make_project(db_session, tasks=3, gold=2, review_params=GOLD_PARAMS)
    (worker,) = annotators(db_session, 1)
    now = utcnow()
    first = work(db_session, worker, "dog", now=now)
    assert first.is_gold
    assert first.review_state == "rejected"
    kept = lease(db_session, worker, now=now)  # an ordinary item, still leased when the block comes
    assert not kept.is_gold
    second = work(db_session, worker, "other", now=now)
    assert second.is_gold
    assert second.review_state == "rejected"
    standing = db_session.get(ProjectWorker, (project.id, worker.id))
    assert standing.blocked_at is not None
    assert (
        standing.blocked_reason
        == "Gold accuracy 0% is below the project's floor of 60% after 2 control items."
    )
    db_session.refresh(kept)
    assert kept.state == "released"
    assert db_session.get(Task, kept.task_id).labels_in_progress == 0
    assert project_budget(db_session, project=project).held.amount == 0
    outcome = leasing.lease_next_assignment(db_session, annotator=worker, now=now, fee_bps=FEE_BPS)
    assert outcome.reason == "no_eligible_project"
    assert ledger.check_integrity(db_session) == []


def test_gold_policy_accepts_ordinary_labels_at_once(db_session) -> None:
    project = make_project(db_session, tasks=1, review_policy="gold")
    (worker,) = annotators(db_session, 1)
    label = work(db_session, worker, "dog")
    assert label.review_state == "accepted"
    assert db_session.get(Task, label.task_id).status == "complete"
    assert event_types(db_session, project) == [
        "assignment.leased",
        "assignment.submitted",
        "label.accepted",
        "item.completed",
    ]
    skill = skill_row(db_session, worker, project)
    assert (skill.accuracy_alpha, skill.accuracy_beta) == (2.0, 1.0)  # nobody checked: no evidence


def test_consensus_accepts_the_majority_and_rejects_the_dissenter(db_session) -> None:
    project = make_project(db_session, tasks=1, review_policy="consensus", labels_per_item=3)
    a, b, c = annotators(db_session, 3)
    la, lb = work(db_session, a, "cat"), work(db_session, b, "dog")
    assert (la.review_state, lb.review_state) == ("pending", "pending")  # waiting for the third
    lc = work(db_session, c, "cat")
    for label in (la, lb):
        db_session.refresh(label)
    assert (la.review_state, lb.review_state, lc.review_state) == ("accepted", "rejected", "accepted")
    assert lb.reason == "disagreed with consensus"
    task = db_session.get(Task, la.task_id)
    assert (task.status, task.labels_accepted, task.labels_in_progress, task.labels_needed) == (
        "complete",
        2,
        0,
        3,
    )
    assert [payable(db_session, w) for w in (a, b, c)] == [PRICE, 0, PRICE]
    budget = project_budget(db_session, project=project)
    assert (budget.spent.amount, budget.fees.amount, budget.held.amount) == (2 * PRICE, 2 * FEE, 0)
    assert skill_row(db_session, a, project).accuracy_alpha == 2.5
    assert skill_row(db_session, b, project).accuracy_beta == 1.5
    assert event_types(db_session, project)[-1] == "item.completed"
    assert ledger.check_integrity(db_session) == []


def test_consensus_tie_buys_one_more_label(db_session) -> None:
    project = make_project(db_session, tasks=1, review_policy="consensus", labels_per_item=2)
    a, b, c = annotators(db_session, 3)
    la, lb = work(db_session, a, "cat"), work(db_session, b, "dog")
    task = db_session.get(Task, la.task_id)
    db_session.refresh(task)
    assert (task.labels_needed, task.status) == (3, "open")
    assert db_session.get(ConsensusItem, task.id).extra_labels == 1
    lc = work(db_session, c, "dog")
    db_session.refresh(la)
    db_session.refresh(lb)
    assert (la.review_state, lb.review_state, lc.review_state) == ("rejected", "accepted", "accepted")
    assert [payable(db_session, w) for w in (a, b, c)] == [0, PRICE, PRICE]
    budget = project_budget(db_session, project=project)
    assert (budget.spent.amount, budget.held.amount) == (2 * PRICE, 0)
    assert ledger.check_integrity(db_session) == []


def test_consensus_without_extra_labels_left_goes_to_manual_review(db_session) -> None:
    project = make_project(
        db_session,
        tasks=1,
        review_policy="consensus",
        labels_per_item=2,
        review_params={"max_extra_labels": 0},
    )
    a, b = annotators(db_session, 2)
    la, lb = work(db_session, a, "cat"), work(db_session, b, "dog")
    entries = db_session.scalars(select(ReviewEntry).order_by(ReviewEntry.label_id)).all()
    assert [(e.label_id, e.reason) for e in entries] == [(la.id, "no consensus"), (lb.id, "no consensus")]
    db_session.refresh(la)
    assert la.review_state == "pending"
    assert db_session.get(Task, la.task_id).labels_needed == 2
    assert project_budget(db_session, project=project).held.amount == 2 * (PRICE + FEE)  # still reserved
    # extra labels allowed, but the budget cannot pay for one more: manual review too
    poor = make_project(
        db_session, tasks=1, review_policy="consensus", labels_per_item=2, budget_minor=2 * (PRICE + FEE)
    )
    work(db_session, a, "cat", project_id=poor.id)
    label = work(db_session, b, "dog", project_id=poor.id)
    assert db_session.get(ReviewEntry, label.id) is not None
    assert db_session.get(Task, label.task_id).labels_needed == 2


def test_an_extended_item_whose_extra_label_no_budget_pays_goes_to_review(db_session, runner) -> None:
    """Two items are extended on the same last label's worth of budget; one takes it, and the other would wait
    for a lease no budget pays, its labels' holds locked with it, until the escalation job sends it to review."""
    cost = PRICE + FEE
    project = make_project(
        db_session,
        tasks=2,
        review_policy="consensus",
        labels_per_item=2,
        review_params={"max_extra_labels": 1},
        pay_per_label_minor=PRICE,  # the annotators' price: routing's label cost is what a lease holds
        budget_minor=5 * cost,
    )
    a, b, c = annotators(db_session, 3)
    first = work(db_session, a, "cat")
    work(db_session, b, "dog")
    second = work(db_session, a, "cat")
    work(db_session, b, "dog")
    assert first.task_id != second.task_id
    for label in (first, second):
        item = db_session.get_one(ConsensusItem, label.task_id, populate_existing=True)
        assert item.extra_labels == 1  # both extended: one label's worth was available each time
    third = work(db_session, c, "other")  # the first item's extra label: three answers, no majority
    assert third.task_id == first.task_id
    assert db_session.get(ReviewEntry, third.id) is not None
    assert project_budget(db_session, project=project).available.amount == 0
    outcome = leasing.lease_next_assignment(db_session, annotator=c, now=utcnow(), fee_bps=FEE_BPS)
    assert outcome.assignment is None  # nobody can buy the second item's extra label

    other = make_project(  # the same situation with money left: its extended item keeps waiting
        db_session,
        tasks=1,
        review_policy="consensus",
        labels_per_item=2,
        review_params={"max_extra_labels": 1},
    )
    waiting = work(db_session, a, "cat", project_id=other.id)
    work(db_session, b, "dog", project_id=other.id)

    result = runner.invoke(args=["quality", "escalate-unfunded"])
    assert result.exit_code == 0, result.output
    assert "1 item sent to review" in result.output
    db_session.expire_all()
    task = db_session.get_one(Task, second.task_id)
    item = db_session.get_one(ConsensusItem, second.task_id)
    assert (task.labels_needed, task.free_slots, task.status) == (2, 0, "open")  # the slot given back
    assert (item.extra_labels, item.escalated_at is not None) == (0, True)
    queued = db_session.scalars(
        select(ReviewEntry.label_id).join(Label).where(Label.task_id == task.id)
    ).all()
    assert sorted(queued) == sorted(
        db_session.scalars(select(Label.id).where(Label.task_id == task.id)).all()
    )  # both of its labels, now a reviewer's to decide
    assert db_session.get_one(ConsensusItem, waiting.task_id).escalated_at is None
    assert db_session.get_one(Task, waiting.task_id).labels_needed == 3
    again = runner.invoke(args=["quality", "escalate-unfunded"])
    assert "0 items sent to review" in again.output
    assert ledger.check_integrity(db_session) == []


def test_unreviewed_labels_are_accepted_after_the_review_window(db_session, runner) -> None:
    project = make_project(db_session, tasks=2, review_params={"review_window_hours": 1})
    a, b = annotators(db_session, 2)
    now = utcnow()
    early, late = (
        work(db_session, a, "cat", now=now),
        work(db_session, b, "dog", now=now + timedelta(minutes=30)),
    )
    assert auto_accept_overdue(db_session, now=now + timedelta(minutes=59)) == 0
    assert auto_accept_overdue(db_session, now=now + timedelta(minutes=61)) == 1
    db_session.commit()
    db_session.refresh(early)
    db_session.refresh(late)
    assert (early.review_state, late.review_state) == ("accepted", "pending")
    assert early.reason == "accepted automatically: not reviewed within 1 hours"
    assert early.reviewed_by_id is None
    assert payable(db_session, a) == PRICE
    assert db_session.get(ReviewEntry, early.id) is None
    budget = project_budget(db_session, project=project)
    assert (budget.spent.amount, budget.held.amount) == (PRICE, PRICE + FEE)
    # the scheduled job and `flask quality auto-accept` run the same sweep at the current time
    db_session.get_one(ReviewEntry, late.id).due_at = utcnow() - timedelta(minutes=1)
    db_session.commit()
    result = runner.invoke(args=["quality", "auto-accept"])
    assert result.exit_code == 0, result.output
    assert "1 label accepted automatically" in result.output
    db_session.refresh(late)
    assert late.review_state == "accepted"
    assert ledger.check_integrity(db_session) == []


def test_lock_task_rereads_a_row_the_session_already_holds(db_session, engine) -> None:
    make_project(db_session, tasks=1)
    task = db_session.scalars(select(Task)).one()
    with Session(engine) as other:
        other.get_one(Task, task.id).labels_needed = 4
        other.commit()
    assert db_session.get(Task, task.id, with_for_update=True).labels_needed == 1  # stale without a re-read
    assert lock_task(db_session, task.id).labels_needed == 4


@pytest.mark.postgres
def test_the_last_two_labels_of_an_item_submitted_at_once_are_decided(engine, db_session) -> None:
    make_project(db_session, tasks=1, review_policy="consensus", labels_per_item=2)
    a, b = annotators(db_session, 2)
    held = {a.id: lease(db_session, a), b.id: lease(db_session, b)}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def submit_in_own_session(annotator_id: int, value: str) -> None:
        try:
            with Session(engine, expire_on_commit=False) as session:
                annotator = session.get_one(AnnotatorProfile, annotator_id)
                now = utcnow()
                label, _ = decisions.submit_label(
                    session,
                    annotator=annotator,
                    assignment_id=held[annotator_id].id,
                    value=value,
                    idempotency_key=None,
                    now=now,
                )
                barrier.wait()  # both labels exist, neither is committed: the item's lock decides who goes second
                review_submitted_label(session, label=label, now=now, fee_bps=FEE_BPS)
                session.commit()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    threads = [
        threading.Thread(target=submit_in_own_session, args=(a.id, "cat")),
        threading.Thread(target=submit_in_own_session, args=(b.id, "cat")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    db_session.expire_all()
    states = db_session.scalars(select(Label.review_state)).all()
    assert states == ["accepted", "accepted"]
    assert db_session.scalars(select(Task.status)).one() == "complete"
    assert ledger.check_integrity(db_session) == []
