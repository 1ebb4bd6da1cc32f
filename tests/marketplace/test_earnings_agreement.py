"""Finance's check that the accepted labels of a period and the ledger agree, label by label."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from marketplace.billing.agreement import check_earnings
from marketplace.billing.services import fund_project
from marketplace.db import utcnow
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Project
from marketplace.work import decisions, leasing
from marketplace.work.models import Label
from payments.money import Money
from tests import factories as f


def _accepted_labels(db_session, count: int) -> list[Label]:
    org = f.organisation(db_session)
    project = f.project(db_session, org, pay_per_label_minor=100)
    import_tasks(
        db_session,
        project=project,
        rows=[(i, {"external_id": f"x{i}", "payload": {"i": i}}) for i in range(count)],
    )
    fund_project(db_session, project=project, amount=Money(100_00, "EUR"), idempotency_key="fund")
    labels = []
    for price in (40, 55, 70)[:count]:
        worker = f.annotator(db_session, price_minor=price)
        now = utcnow()
        assignment = leasing.lease_next_assignment(
            db_session, annotator=worker, now=now, fee_bps=2000
        ).assignment
        label, _ = decisions.submit_label(
            db_session,
            annotator=worker,
            assignment_id=assignment.id,
            value="cat",
            idempotency_key=None,
            now=now,
        )
        decisions.accept_label(db_session, label=label, now=now)
        labels.append(label)
    db_session.commit()
    return labels


def test_accepted_labels_and_the_ledger_agree(db_session) -> None:
    _accepted_labels(db_session, 3)
    report = check_earnings(
        db_session, start=utcnow() - timedelta(hours=1), end=utcnow() + timedelta(hours=1)
    )
    body = report.to_json()
    assert body["labels_accepted"] == 3
    assert body["totals"] == [
        {"currency": "EUR", "earned_minor": 165, "paid_minor": 165, "difference_minor": 0}
    ]
    assert body["disagreeing_labels"] == 0
    outside = check_earnings(
        db_session, start=utcnow() + timedelta(hours=1), end=utcnow() + timedelta(hours=2)
    )
    assert outside.labels_accepted == 0


def test_a_label_accepted_without_its_payment_is_reported(db_session) -> None:
    labels = _accepted_labels(db_session, 2)
    project = db_session.get(Project, labels[0].project_id)
    import_tasks(db_session, project=project, rows=[(1, {"external_id": "late", "payload": {"n": 1}})])
    worker = f.annotator(db_session, price_minor=33)
    db_session.commit()
    now = utcnow()
    assignment = leasing.lease_next_assignment(db_session, annotator=worker, now=now, fee_bps=2000).assignment
    label, _ = decisions.submit_label(
        db_session, annotator=worker, assignment_id=assignment.id, value="dog", idempotency_key=None, now=now
    )
    # accepted behind the services' back: the ledger never paid it
    db_session.execute(
        update(Label).where(Label.id == label.id).values(review_state="accepted", reviewed_at=now)
    )
    db_session.commit()
    body = check_earnings(db_session, start=now - timedelta(hours=1), end=now + timedelta(hours=1)).to_json()
    assert body["labels_accepted"] == 3
    assert body["disagreeing_labels"] == 1
    assert body["disagreements"] == [{"label_id": label.id, "price_minor": 33, "paid_minor": 0}]
    assert body["totals"] == [
        {"currency": "EUR", "earned_minor": 128, "paid_minor": 95, "difference_minor": -33}
    ]
