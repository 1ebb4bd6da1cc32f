"""A new labels per item applies to the open items, never below what they already have; items it completes are
complete, and a consensus item whose labels are then all in is decided."""

from __future__ import annotations

from sqlalchemy import select

from marketplace.db import utcnow
from marketplace.events.models import Event
from marketplace.projects.models import Task
from marketplace.projects.services import update_project
from marketplace.work import leases
from marketplace.work.models import Label
from payments import ledger
from tests import factories as f
from tests.marketplace import test_quality_api as qa
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    FEE_BPS,
    annotators,
    fast_password_hashing,
    lease,
    make_project,
    payable,
    submit,
    work,
)


def _needed(db_session, project) -> list[tuple[int, str]]:
    db_session.expire_all()
    rows = db_session.execute(
        select(Task.labels_needed, Task.status).where(Task.project_id == project.id).order_by(Task.id)
    )
    return [tuple(row) for row in rows]


def test_lowering_it_shrinks_open_items_but_never_below_their_work(db_session) -> None:
    project = make_project(db_session, tasks=4, labels_per_item=3, review_policy="gold")
    a, b, c = annotators(db_session, 3)
    first = work(db_session, a, "cat")  # the gold policy accepts ordinary labels at once
    held = [lease(db_session, worker) for worker in (b, c)]  # the spot queue: the same first item
    assert {assignment.task_id for assignment in held} == {first.task_id}
    update_project(db_session, project=project, fields={"labels_per_item": 1}, fee_bps=FEE_BPS)
    db_session.commit()
    # the first item has 1 accepted and 2 leased labels: it keeps its 3 slots; the others drop to one
    assert _needed(db_session, project) == [(3, "open"), (1, "open"), (1, "open"), (1, "open")]
    for worker, assignment in zip((b, c), held, strict=True):
        submit(db_session, worker, assignment, "cat")  # work handed out is honoured and paid
    assert _needed(db_session, project)[0] == (3, "complete")
    assert payable(db_session, b) == payable(db_session, c) == payable(db_session, a) > 0
    assert ledger.check_integrity(db_session) == []


def test_an_item_that_has_its_accepted_labels_is_complete_after_the_change(db_session) -> None:
    project = make_project(db_session, tasks=2, labels_per_item=2, review_policy="gold")
    (a,) = annotators(db_session, 1)
    first = work(db_session, a, "cat")
    update_project(db_session, project=project, fields={"labels_per_item": 1}, fee_bps=FEE_BPS)
    db_session.commit()
    assert _needed(db_session, project) == [(1, "complete"), (1, "open")]
    completed = db_session.scalars(select(Event.data).where(Event.type == "item.completed")).all()
    assert [data["task_id"] for data in completed] == [first.task_id]


def test_raising_it_opens_more_slots_on_open_items_only(db_session) -> None:
    project = make_project(db_session, tasks=2, labels_per_item=1, review_policy="gold")
    a, b = annotators(db_session, 2)
    first = work(db_session, a, "cat")  # item 1 complete
    update_project(db_session, project=project, fields={"labels_per_item": 2}, fee_bps=FEE_BPS)
    db_session.commit()
    assert _needed(db_session, project) == [(1, "complete"), (2, "open")]
    second = work(db_session, b, "dog")
    assert second.task_id != first.task_id


def test_lowering_a_consensus_project_decides_items_whose_labels_are_all_in(db_session) -> None:
    project = make_project(db_session, tasks=1, labels_per_item=3, review_policy="consensus")
    a, b = annotators(db_session, 2)
    la, lb = work(db_session, a, "cat"), work(db_session, b, "cat")
    assert (la.review_state, lb.review_state) == ("pending", "pending")  # waiting for a third label
    update_project(db_session, project=project, fields={"labels_per_item": 2}, fee_bps=FEE_BPS)
    db_session.commit()
    db_session.expire_all()
    states = [db_session.get_one(Label, label.id).review_state for label in (la, lb)]
    assert states == ["accepted", "accepted"]
    assert _needed(db_session, project) == [(2, "complete")]
    assert payable(db_session, a) == payable(db_session, b) > 0
    assert ledger.check_integrity(db_session) == []


def test_the_api_applies_it_to_open_items(client, db_session) -> None:
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    project = make_project(db_session, org=org, tasks=2, labels_per_item=3)
    headers = f.auth(f.token(db_session, manager))
    db_session.commit()
    response = client.patch(f"/api/v1/projects/{project.id}", json={"labels_per_item": 2}, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["labels_per_item"] == 2
    assert _needed(db_session, project) == [(2, "open"), (2, "open")]


def test_an_item_kept_higher_by_leases_shrinks_back_as_they_end(db_session) -> None:
    project = make_project(db_session, tasks=2, labels_per_item=3, review_policy="gold")
    b, c = annotators(db_session, 2)
    held = [lease(db_session, worker) for worker in (b, c)]
    update_project(db_session, project=project, fields={"labels_per_item": 1}, fee_bps=FEE_BPS)
    db_session.commit()
    assert _needed(db_session, project)[0] == (2, "open")  # two leases in flight
    released = leases.release_assignment(db_session, annotator=c, assignment_id=held[1].id, now=utcnow())
    assert released.state == "released"
    db_session.commit()
    assert _needed(db_session, project)[0] == (1, "open")  # the released slot is not bought again
    submit(db_session, b, held[0], "cat")
    assert _needed(db_session, project) == [(1, "complete"), (1, "open")]


def test_an_upheld_appeal_whose_slot_was_taken_does_not_buy_an_unplanned_label(client, db_session) -> None:
    t = qa.team(db_session)
    first = work(db_session, t.worker, "cat")
    reject = {"decision": "reject", "reason": "it is a dog"}
    assert (
        client.post(f"/api/v1/labels/{first.id}/review", json=reject, headers=t.reviewer).status_code == 200
    )
    (other,) = annotators(db_session, 1)
    taken = lease(db_session, other)  # the freed slot
    assert taken.task_id == first.task_id
    appeal = client.post(f"/api/v1/labels/{first.id}/appeal", json={"comment": "cat"}, headers=t.worker_auth)
    decided = client.post(
        f"/api/v1/appeals/{appeal.get_json()['id']}/decide",
        json={"decision": "uphold"},
        headers=t.second_reviewer,
    )
    assert decided.status_code == 200, decided.get_json()
    task = db_session.get_one(Task, first.task_id, populate_existing=True)
    assert (task.labels_needed, task.labels_accepted, task.labels_in_progress) == (
        2,
        1,
        1,
    )  # room for the lease
    second = submit(db_session, other, taken, "dog")
    assert (
        client.post(f"/api/v1/labels/{second.id}/review", json=reject, headers=t.reviewer).status_code == 200
    )
    task = db_session.get_one(Task, first.task_id, populate_existing=True)
    assert (task.labels_needed, task.labels_accepted, task.status) == (1, 1, "complete")  # not bought again
    completed = db_session.scalars(select(Event.data).where(Event.type == "item.completed")).all()
    assert [data["task_id"] for data in completed] == [first.task_id]
    assert ledger.check_integrity(db_session) == []


def test_lowering_and_raising_again_lands_on_the_number_asked_for(db_session) -> None:
    project = make_project(db_session, tasks=1, labels_per_item=3, review_policy="gold")
    workers = annotators(db_session, 3)
    for worker in workers:
        lease(db_session, worker)
    for to, expected in ((1, 3), (3, 3), (2, 3)):  # three leases in flight hold the item at three
        update_project(db_session, project=project, fields={"labels_per_item": to}, fee_bps=FEE_BPS)
        db_session.commit()
        assert _needed(db_session, project) == [(expected, "open")]
