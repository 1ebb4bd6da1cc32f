"""Builders shared by the quality, throughput and events tests (this module holds no tests)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import fund_project, payable_account_code
from marketplace.db import utcnow
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Project
from marketplace.quality.policy import review_submitted_label
from marketplace.work import decisions, leasing
from marketplace.work.models import Assignment, Label
from payments import ledger
from payments.money import Money
from tests import factories as f

FEE_BPS = 2000
#: what one accepted label at the factory annotator's price costs: 50 to the annotator, 10 to the platform
PRICE, FEE = 50, 10


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2 parameters: these tests create many users and test no password (a third of a second each)."""
    from marketplace.accounts import security

    monkeypatch.setattr(security, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))


def make_project(
    db_session: Session,
    *,
    tasks: int = 3,
    gold: int = 0,
    gold_answer: Any = "cat",
    budget_minor: int = 100_00,
    org: Any = None,
    **overrides: Any,
) -> Project:
    """An active project with `tasks` ordinary items and `gold` control items, funded."""
    org = org or f.organisation(db_session)
    project = f.project(db_session, org, **overrides)
    rows = [(i + 1, {"external_id": f"t{i}", "payload": {"i": i}}) for i in range(tasks)]
    rows += [
        (tasks + i + 1, {"external_id": f"g{i}", "payload": {"g": i}, "gold_answer": gold_answer})
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


def annotators(db_session: Session, n: int, **kwargs: Any) -> list[AnnotatorProfile]:
    """`n` annotators, committed."""
    made = [f.annotator(db_session, **kwargs) for _ in range(n)]
    db_session.commit()
    return made


def lease(
    db_session: Session,
    annotator: AnnotatorProfile,
    *,
    now: datetime | None = None,
    project_id: int | None = None,
) -> Assignment:
    """Lease the annotator's next item (it must exist), committed."""
    outcome = leasing.lease_next_assignment(
        db_session, annotator=annotator, now=now or utcnow(), fee_bps=FEE_BPS, project_id=project_id
    )
    assert outcome.assignment is not None, outcome.reason
    db_session.commit()
    return outcome.assignment


def submit(
    db_session: Session,
    annotator: AnnotatorProfile,
    assignment: Assignment,
    value: Any,
    *,
    now: datetime | None = None,
) -> Label:
    """Submit a label and run the review policy, as the submit endpoint does; committed."""
    now = now or utcnow()
    label, created = decisions.submit_label(
        db_session,
        annotator=annotator,
        assignment_id=assignment.id,
        value=value,
        idempotency_key=None,
        now=now,
    )
    assert created
    review_submitted_label(db_session, label=label, now=now, fee_bps=FEE_BPS)
    db_session.commit()
    return label


def work(
    db_session: Session,
    annotator: AnnotatorProfile,
    value: Any,
    *,
    now: datetime | None = None,
    seconds: float = 30,
    project_id: int | None = None,
) -> Label:
    """Lease the next item at `now - seconds` and submit `value` for it at `now`."""
    now = now or utcnow()
    assignment = lease(db_session, annotator, now=now - timedelta(seconds=seconds), project_id=project_id)
    return submit(db_session, annotator, assignment, value, now=now)


def payable(db_session: Session, annotator: AnnotatorProfile) -> int:
    """What the platform owes the annotator (posted), in minor units."""
    return ledger.balance(
        db_session, account_code=payable_account_code(annotator.id), currency="EUR"
    ).posted.amount
