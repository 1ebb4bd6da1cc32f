"""Bonuses: a project's managers pay an annotator who worked on it something extra, from the project's budget.

What MTurk (`SendBonus`) and Prolific (bonus payments) do, with what their users asked for:

- a bonus goes only to someone who labelled in the project, so it cannot reach the wrong worker, and it carries a
  reason the annotator reads;
- a retried request pays once: the client's key is unique per project here and in the ledger (Prolific documents
  its bonus call as not idempotent; retries there pay twice);
- the budget pays the bonus plus the platform's fee, as it pays a label, in one posted ledger transaction
  (budget → the annotator's payable + `platform:fees`); money held for live leases is not available to it, so a
  bonus never takes what a lease already reserved. The next payout run pays it out with the labels.

Services flush and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.billing.models import Bonus
from marketplace.billing.services import (
    FEES_ACCOUNT,
    KIND_BONUS,
    budget_account_code,
    budget_account_spec,
    payable_account_code,
    payable_account_spec,
)
from marketplace.errors import Conflict, InvalidInput
from marketplace.events.services import record_event
from marketplace.projects.models import Project
from marketplace.work.models import Label
from payments import ledger
from payments.money import Money, fee_for

#: the longest reason kept (the column's size)
MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class Granted:
    """A bonus and whether this call created it (False: a retry answered with the first)."""

    bonus: Bonus
    created: bool


def _same_request(bonus: Bonus, *, annotator_id: int, amount: Money, reason: str) -> bool:
    return (
        bonus.annotator_id == annotator_id
        and bonus.amount_minor == amount.amount
        and bonus.currency == amount.currency
        and bonus.reason == reason
    )


def _replay(bonus: Bonus, *, annotator_id: int, amount: Money, reason: str) -> Granted:
    if not _same_request(bonus, annotator_id=annotator_id, amount=amount, reason=reason):
        raise Conflict(
            "This key was used for another bonus; a retry sends the same annotator, amount and reason.",
            code="idempotency_conflict",
            details={
                "bonus_id": bonus.id,
                "annotator_id": bonus.annotator_id,
                "amount_minor": bonus.amount_minor,
                "currency": bonus.currency,
            },
        )
    return Granted(bonus, created=False)


def grant_bonus(
    session: Session,
    *,
    project: Project,
    annotator_id: int,
    amount: Money,
    reason: str,
    client_key: str,
    granted_by_id: int | None,
    fee_bps: int,
) -> Granted:
    """Pay `amount` (+ the platform's fee) from the project's budget to an annotator who labelled in it.

    The same `client_key` with the same annotator, amount and reason answers with the first bonus; with anything
    else it is a Conflict. InsufficientFunds if the available budget (funded less spent, less held) cannot pay.
    """
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why: the annotator reads the reason.", details={"reason": "required"})
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"A reason has at most {MAX_REASON:,} characters.", details={"reason": "too long"})
    if amount.currency != project.currency:
        raise InvalidInput(
            f"This project is budgeted in {project.currency}.",
            details={"currency": f"must be {project.currency}"},
        )
    if not amount.is_positive:
        raise InvalidInput("A bonus is a positive amount.", details={"amount_minor": "must be positive"})
    existing = session.scalar(
        select(Bonus).where(Bonus.project_id == project.id, Bonus.client_key == client_key)
    )
    if existing is not None:
        return _replay(existing, annotator_id=annotator_id, amount=amount, reason=reason)
    worked = session.scalar(
        select(Label.id).where(Label.project_id == project.id, Label.annotator_id == annotator_id).limit(1)
    )
    if worked is None:
        # The same answer for an unknown annotator: a manager learns nothing about people outside the project.
        raise InvalidInput(
            f"Annotator {annotator_id} has no label in this project: bonuses go to people who worked on it.",
            code="not_a_worker",
            details={"annotator_id": "no label in this project"},
        )
    fee = fee_for(amount, fee_bps)
    specs = [
        budget_account_spec(project.id, project.currency),
        payable_account_spec(annotator_id, project.currency),
    ]
    legs = [
        ledger.debit(budget_account_code(project.id), amount + fee),
        ledger.credit(payable_account_code(annotator_id), amount),
    ]
    if fee.is_positive:
        specs.append(ledger.AccountSpec(code=FEES_ACCOUNT, currency=project.currency, kind="revenue"))
        legs.append(ledger.credit(FEES_ACCOUNT, fee))
    ledger.ensure_accounts(session, specs)
    # A concurrent request with the same key waits here on the ledger's unique key and, once the first commits,
    # gets its transaction back (or a conflict if it asked for something else).
    transaction = ledger.post_transaction(
        session,
        idempotency_key=f"project:{project.id}:bonus:{client_key}",
        kind=KIND_BONUS,
        reference=f"project:{project.id}",
        legs=legs,
        metadata={"annotator_id": annotator_id, "reason": reason, "client_key": client_key},
    )
    recorded = session.scalar(select(Bonus).where(Bonus.transaction_id == transaction.id))
    if recorded is not None:
        return _replay(recorded, annotator_id=annotator_id, amount=amount, reason=reason)
    bonus = Bonus(
        project_id=project.id,
        annotator_id=annotator_id,
        amount_minor=amount.amount,
        fee_minor=fee.amount,
        currency=project.currency,
        reason=reason,
        client_key=client_key,
        granted_by_id=granted_by_id,
        transaction_id=transaction.id,
    )
    session.add(bonus)
    session.flush()  # generate bonus.id for the event
    record_event(
        session,
        project_id=project.id,
        type="bonus.granted",
        data={
            "bonus_id": bonus.id,
            "annotator_id": annotator_id,
            "amount": amount.to_json(),
            "reason": reason,
        },
    )
    return Granted(bonus, created=True)


def project_bonuses(session: Session, *, project_id: int, after: int = 0, limit: int = 100) -> list[Bonus]:
    """A project's bonuses in the order given, after the bonus id `after` (keyset pagination)."""
    return list(
        session.scalars(
            select(Bonus)
            .where(Bonus.project_id == project_id, Bonus.id > after)
            .order_by(Bonus.id)
            .limit(limit)
        )
    )
