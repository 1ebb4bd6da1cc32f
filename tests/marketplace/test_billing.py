"""Billing glue on real rows: funding, lease holds, payment for labels, releases, budgets and earnings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from marketplace.accounts.models import Organisation, User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing import earnings
from marketplace.billing import services as billing
from marketplace.db import utcnow
from marketplace.errors import InvalidInput
from marketplace.projects.models import Project, Task
from marketplace.work.models import Assignment, Label
from payments import ledger
from payments.errors import (
    CurrencyMismatch,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
)
from payments.money import Money, fee_for
from tests import factories as f

FEE_BPS = 2000
_items = itertools.count(1)


def eur(amount: int) -> Money:
    return Money(amount, "EUR")


@dataclass
class World:
    """An organisation with a manager, a project paying `pay` per label, and annotators."""

    org: Organisation
    manager: User
    project: Project
    annotators: list[AnnotatorProfile]


def make_world(session: Session, *, pay: int = 100, annotators: int = 2, currency: str = "EUR") -> World:
    """Organisation, manager, skill, annotators and a project, committed."""
    org = f.organisation(session)
    manager = f.member(session, org, "manager")
    project = f.project(session, org, creator=manager, pay_per_label_minor=pay, currency=currency)
    people = [f.annotator(session, price_minor=pay, currency=currency) for _ in range(annotators)]
    session.commit()
    return World(org, manager, project, people)


def lease(
    session: Session, world: World, annotator: AnnotatorProfile, *, price: int | None = None
) -> Assignment:
    """A task and an assignment of it to `annotator`, with its budget hold (as the lease path does)."""
    project = world.project
    task = Task(project_id=project.id, external_id=f"item-{next(_items)}", payload={"n": 1})
    session.add(task)
    session.flush()  # generate task.id
    price_minor = project.pay_per_label_minor if price is None else price
    now = utcnow()
    assignment = Assignment(
        task_id=task.id,
        project_id=project.id,
        annotator_id=annotator.id,
        price_minor=price_minor,
        fee_minor=fee_for(Money(price_minor, project.currency), FEE_BPS).amount,
        currency=project.currency,
        lease_expires_at=now + timedelta(minutes=30),
        lease_cap_at=now + timedelta(hours=2),
    )
    session.add(assignment)
    billing.hold_for_assignment(session, assignment=assignment)
    return assignment


def submit(session: Session, assignment: Assignment, *, state: str = "pending") -> Label:
    """The label of an assignment, in review state `state`."""
    label = Label(
        assignment_id=assignment.id,
        task_id=assignment.task_id,
        project_id=assignment.project_id,
        annotator_id=assignment.annotator_id,
        value="cat",
        review_state=state,
    )
    session.add(label)
    session.flush()  # generate label.id
    return label


def test_account_codes() -> None:
    assert billing.budget_account_code(3) == "project:3:budget"
    assert billing.payable_account_code(17) == "annotator:17:payable"


def test_funding_is_idempotent_and_strict(db_session: Session) -> None:
    world = make_world(db_session)
    project = world.project
    first = billing.fund_project(db_session, project=project, amount=eur(10_000), idempotency_key="top-up-1")
    again = billing.fund_project(db_session, project=project, amount=eur(10_000), idempotency_key="top-up-1")
    db_session.commit()
    assert again.id == first.id
    assert billing.project_budget(db_session, project=project).funded == eur(10_000)
    with pytest.raises(IdempotencyConflict):
        billing.fund_project(db_session, project=project, amount=eur(9_999), idempotency_key="top-up-1")
    with pytest.raises(CurrencyMismatch):
        billing.fund_project(db_session, project=project, amount=Money(100, "USD"), idempotency_key="k2")
    for bad in (eur(0), eur(-5)):
        with pytest.raises(InvalidAmount):
            billing.fund_project(db_session, project=project, amount=bad, idempotency_key="k3")
    with pytest.raises(InvalidInput):
        billing.fund_project(db_session, project=project, amount=eur(5), idempotency_key="k4", source="cash")
    billing.fund_project(
        db_session, project=project, amount=eur(500), idempotency_key="card", source="stripe"
    )
    db_session.commit()
    assert billing.project_budget(db_session, project=project).funded == eur(10_500)
    stripe = ledger.balance(db_session, account_code="clearing:stripe_funding", currency="EUR")
    assert stripe.posted == eur(500)  # awaiting settlement by reconciliation
    local = ledger.balance(db_session, account_code="platform:funding_received", currency="EUR")
    assert local.posted == eur(10_000)
    # the same client key on another project is another funding: keys are scoped to the project
    other = f.project(db_session, world.org, creator=world.manager)
    assert (
        billing.fund_project(db_session, project=other, amount=eur(1), idempotency_key="top-up-1").id
        != first.id
    )


def test_budget_through_hold_pay_and_release(db_session: Session) -> None:
    world = make_world(db_session, pay=100)
    project, (ann1, ann2) = world.project, world.annotators
    billing.fund_project(db_session, project=project, amount=eur(1000), idempotency_key="f")
    a1 = lease(db_session, world, ann1)
    a2 = lease(db_session, world, ann2)
    db_session.commit()
    assert a1.hold_transaction_id is not None
    summary = billing.project_budget(db_session, project=project)
    assert (summary.funded, summary.held, summary.remaining, summary.available) == (
        eur(1000),
        eur(240),
        eur(1000),
        eur(760),
    )
    assert billing.affordable_slots(db_session, project=project, fee_bps=FEE_BPS) == 6  # 760 // 120

    label = submit(db_session, a1)
    paid = billing.pay_for_label(db_session, assignment=a1, label_id=label.id)
    assert (
        billing.pay_for_label(db_session, assignment=a1, label_id=label.id).id == paid.id
    )  # accepting twice pays once
    billing.release_assignment_hold(db_session, assignment=a2, reason="lease expired")
    billing.release_assignment_hold(
        db_session, assignment=a2, reason="asked again"
    )  # already released: nothing
    db_session.commit()

    summary = billing.project_budget(db_session, project=project)
    assert (summary.held, summary.spent, summary.fees, summary.remaining, summary.available) == (
        eur(0),
        eur(100),
        eur(20),
        eur(880),
        eur(880),
    )
    assert summary.to_json()["available"] == {"amount_minor": 880, "currency": "EUR", "display": "€8.80"}
    payable = ledger.balance(db_session, account_code=billing.payable_account_code(ann1.id), currency="EUR")
    assert payable.available == eur(100)
    assert ledger.balance(db_session, account_code="platform:fees", currency="EUR").posted == eur(20)
    assert billing.affordable_slots(db_session, project=project, fee_bps=FEE_BPS) == 7
    with pytest.raises(HoldAlreadyResolved):  # a paid assignment's hold cannot be released
        billing.release_assignment_hold(db_session, assignment=a1, reason="too late")
    assert ledger.check_integrity(db_session) == []


def test_hold_refused_when_budget_is_short(db_session: Session) -> None:
    world = make_world(db_session, pay=100)
    billing.fund_project(db_session, project=world.project, amount=eur(239), idempotency_key="f")
    lease(db_session, world, world.annotators[0])
    db_session.commit()
    with pytest.raises(InsufficientFunds):
        lease(db_session, world, world.annotators[1])
    db_session.rollback()
    unfunded = make_world(db_session)
    with pytest.raises(InsufficientFunds):  # never funded: the budget exists at zero
        lease(db_session, unfunded, unfunded.annotators[0])
    db_session.rollback()
    assert billing.affordable_slots(db_session, project=unfunded.project, fee_bps=FEE_BPS) == 0


def test_hold_is_idempotent_per_assignment(db_session: Session) -> None:
    world = make_world(db_session)
    billing.fund_project(db_session, project=world.project, amount=eur(1000), idempotency_key="f")
    assignment = lease(db_session, world, world.annotators[0])
    first = assignment.hold_transaction_id
    assert billing.hold_for_assignment(db_session, assignment=assignment).id == first
    db_session.commit()
    assert billing.project_budget(db_session, project=world.project).held == eur(120)


def test_overturned_rejection_is_paid_from_the_budget(db_session: Session) -> None:
    world = make_world(db_session, pay=100)
    billing.fund_project(db_session, project=world.project, amount=eur(360), idempotency_key="f")
    rejected = lease(db_session, world, world.annotators[0])
    label = submit(db_session, rejected, state="rejected")
    billing.release_assignment_hold(db_session, assignment=rejected, reason="rejected")
    db_session.commit()
    paid = billing.pay_for_label(db_session, assignment=rejected, label_id=label.id)  # the appeal succeeded
    assert billing.pay_for_label(db_session, assignment=rejected, label_id=label.id).id == paid.id
    db_session.commit()
    assert paid.resolves_hold_id is None
    assert paid.kind == "label_payment"
    summary = billing.project_budget(db_session, project=world.project)
    assert (summary.spent, summary.fees, summary.available) == (eur(100), eur(20), eur(240))
    # another rejection is overturned after its released budget went to new leases: it cannot be paid
    other = lease(db_session, world, world.annotators[1])
    other_label = submit(db_session, other, state="rejected")
    lease(db_session, world, world.annotators[0])
    billing.release_assignment_hold(db_session, assignment=other, reason="rejected")
    lease(db_session, world, world.annotators[1])
    db_session.commit()
    with pytest.raises(InsufficientFunds):
        billing.pay_for_label(db_session, assignment=other, label_id=other_label.id)
    assert ledger.check_integrity(db_session) == []


def test_free_labels_move_nothing(db_session: Session) -> None:
    world = make_world(db_session, pay=0)
    assignment = lease(db_session, world, world.annotators[0])
    label = submit(db_session, assignment)
    paid = billing.pay_for_label(db_session, assignment=assignment, label_id=label.id)
    db_session.commit()
    assert paid.entries == []
    assert (
        billing.affordable_slots(db_session, project=world.project, fee_bps=FEE_BPS)
        == billing.UNLIMITED_SLOTS
    )
    assert billing.project_budget(db_session, project=world.project).spent == eur(0)


def test_assignment_without_hold(db_session: Session) -> None:
    world = make_world(db_session)
    task = Task(project_id=world.project.id, external_id="x", payload={})
    db_session.add(task)
    db_session.flush()
    now = utcnow()
    assignment = Assignment(
        task_id=task.id,
        project_id=world.project.id,
        annotator_id=world.annotators[0].id,
        price_minor=100,
        fee_minor=20,
        currency="EUR",
        lease_expires_at=now,
        lease_cap_at=now,
    )
    db_session.add(assignment)
    db_session.flush()
    with pytest.raises(HoldNotFound):
        billing.pay_for_label(db_session, assignment=assignment, label_id=1)
    billing.release_assignment_hold(db_session, assignment=assignment, reason="nothing held")
    usd = Assignment(**{**{c: getattr(assignment, c) for c in ("task_id", "project_id", "price_minor")}})
    usd.annotator_id, usd.currency, usd.lease_expires_at, usd.lease_cap_at = (
        world.annotators[1].id,
        "USD",
        now,
        now,
    )
    with pytest.raises(CurrencyMismatch):
        billing.hold_for_assignment(db_session, assignment=usd)


def _payout(session: Session, annotator: AnnotatorProfile, amount: int, n: int, *, confirm: bool) -> None:
    """What the payouts flow writes: a hold payable → clearing, then posted when the transfer is confirmed."""
    ledger.ensure_account(session, code="clearing:stripe_transfers", currency="EUR", kind="liability")
    hold = ledger.place_hold(
        session,
        idempotency_key=f"payout:{n}:hold",
        kind=billing.KIND_PAYOUT,
        reference=f"payout:{n}",
        legs=[
            ledger.debit(billing.payable_account_code(annotator.id), eur(amount)),
            ledger.credit("clearing:stripe_transfers", eur(amount)),
        ],
    )
    if confirm:
        ledger.post_hold(session, hold_id=hold.id)


def test_annotator_earnings(db_session: Session) -> None:
    world = make_world(db_session, pay=100, annotators=1)
    (ann,) = world.annotators
    billing.fund_project(db_session, project=world.project, amount=eur(10_000), idempotency_key="f")
    accepted = [submit(db_session, lease(db_session, world, ann)) for _ in range(3)]
    for label in accepted:
        label.review_state = "accepted"
        billing.pay_for_label(db_session, assignment=label.assignment, label_id=label.id)
    rejected = submit(db_session, lease(db_session, world, ann), state="rejected")
    billing.release_assignment_hold(db_session, assignment=rejected.assignment, reason="rejected")
    pending = submit(db_session, lease(db_session, world, ann))
    _payout(db_session, ann, 150, 1, confirm=True)
    _payout(db_session, ann, 50, 2, confirm=False)
    ledger.ensure_account(db_session, code="platform:stripe_balance", currency="EUR", kind="asset")
    ledger.post_transaction(  # 20 of the first transfer came back: it is payable again
        db_session,
        idempotency_key="payout:1:reversal:r1",
        kind=billing.KIND_PAYOUT_REVERSAL,
        reference="payout:1",
        legs=[
            ledger.debit("platform:stripe_balance", eur(20)),
            ledger.credit(billing.payable_account_code(ann.id), eur(20)),
        ],
    )
    db_session.commit()

    report = earnings.annotator_earnings(db_session, annotator_id=ann.id)
    assert report.currency == "EUR"
    assert (report.pending, report.accepted, report.rejected) == (eur(100), eur(300), eur(100))
    assert (report.paid_out, report.payout_pending, report.payable) == (eur(130), eur(50), eur(120))
    assert len(report.days) == 1
    day = report.days[0]
    assert (day.day, day.accepted, day.paid_out) == (utcnow().date(), eur(300), eur(130))
    by_id = {item.label_id: item for item in report.labels}
    assert by_id[accepted[0].id].earned == eur(100)
    assert by_id[rejected.id].earned == eur(0)
    assert by_id[pending.id].review_state == "pending"
    assert report.labels[0].label_id == max(by_id)  # newest first

    empty = earnings.annotator_earnings(
        db_session,
        annotator_id=ann.id,
        since=utcnow() - timedelta(days=60),
        until=utcnow() - timedelta(days=31),
    )
    assert (empty.accepted, empty.paid_out, empty.days, empty.labels) == (eur(0), eur(0), [], [])
    assert empty.payable == eur(120)  # the balance is as of now, whatever the period
    assert earnings.annotator_earnings(db_session, annotator_id=ann.id, label_limit=2).labels[
        1
    ].label_id < max(by_id)
    with pytest.raises(InvalidInput):
        earnings.annotator_earnings(
            db_session, annotator_id=ann.id, since=utcnow(), until=utcnow() - timedelta(1)
        )
