"""Billing: the marketplace's money flows written to the ledger (funding, lease holds, payment for labels).

The ledger (`payments`) knows accounts and amounts; this module knows what they mean here: which project's
budget pays which annotator for which label, and what the platform keeps. Services flush and never commit.

Chart of accounts used here (docs/payments.md has every flow):

| code                        | kind      | normal | no overdraft | what it is                               |
| --------------------------- | --------- | ------ | ------------ | ---------------------------------------- |
| `project:{id}:budget`       | liability | credit | yes          | prepaid by a client for a project        |
| `annotator:{id}:payable`    | liability | credit | yes          | earned, not yet paid out                 |
| `platform:fees`             | revenue   | credit | no           | the platform's fee on accepted labels    |
| `clearing:stripe_funding`   | asset     | debit  | no           | client payments via Stripe, not settled  |
| `platform:funding_received` | asset     | debit  | no           | funding received outside Stripe          |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from marketplace.errors import InvalidInput, NotFound
from marketplace.projects.models import Project
from marketplace.work.models import Assignment
from payments import ledger, payouts
from payments.errors import (
    AccountNotFound,
    CurrencyMismatch,
    HoldAlreadyResolved,
    HoldNotFound,
    InvalidAmount,
)
from payments.models import Account, LedgerEntry, LedgerTransaction, TransactionStatus
from payments.money import Money, fee_for

FEES_ACCOUNT = "platform:fees"
STRIPE_FUNDING_ACCOUNT = "clearing:stripe_funding"
LOCAL_FUNDING_ACCOUNT = "platform:funding_received"
#: where the money of a funding comes from, by source
FUNDING_SOURCES = {"stripe": STRIPE_FUNDING_ACCOUNT, "local": LOCAL_FUNDING_ACCOUNT}

#: transaction kinds written by billing (a hold's posting and voiding inherit the hold's kind)
KIND_FUNDING = "funding"
KIND_LABEL_PAYMENT = "label_payment"
#: a bonus paid from a project's budget (marketplace.billing.bonuses)
KIND_BONUS = "bonus"
#: the kinds the payouts flow writes on payable accounts: its holds (and so their postings), and reversals
KIND_PAYOUT = payouts.KIND_PAYOUT
KIND_PAYOUT_REVERSAL = payouts.KIND_PAYOUT_REVERSAL

#: what `affordable_slots` answers when labels cost nothing: "no budget limit", as a plain int for routing
UNLIMITED_SLOTS = 2**31 - 1


def budget_account_code(project_id: int) -> str:
    """The ledger account of a project's budget."""
    return f"project:{project_id}:budget"


def payable_account_code(annotator_id: int) -> str:
    """The ledger account of what the platform owes an annotator."""
    return f"annotator:{annotator_id}:payable"


def budget_account_spec(project_id: int, currency: str) -> ledger.AccountSpec:
    return ledger.AccountSpec(
        code=budget_account_code(project_id), currency=currency, kind="liability", no_overdraft=True
    )


def payable_account_spec(annotator_id: int, currency: str) -> ledger.AccountSpec:
    return ledger.AccountSpec(
        code=payable_account_code(annotator_id), currency=currency, kind="liability", no_overdraft=True
    )


def _budget_account(session: Session, project_id: int, currency: str) -> Account:
    spec = budget_account_spec(project_id, currency)
    return ledger.ensure_accounts(session, [spec])[(spec.code, currency)]


# --- funding ------------------------------------------------------------------------------------------------


def fund_project(
    session: Session, *, project: Project, amount: Money, idempotency_key: str, source: str = "local"
) -> LedgerTransaction:
    """Credit the project's budget with `amount`; the same key again returns the first funding.

    `source` says where the money is: "stripe" (a client payment not yet settled: `clearing:stripe_funding`,
    cleared by reconciliation into `platform:stripe_balance`) or "local" (received outside Stripe, or the
    embedded setup without payments: `platform:funding_received`). The key is scoped to the project.
    """
    if not isinstance(amount, Money) or amount.amount <= 0:
        raise InvalidAmount("a funding is a positive amount of Money")
    if amount.currency != project.currency:
        raise CurrencyMismatch(
            f"project {project.id} is budgeted in {project.currency}, not {amount.currency}",
            details={"currency": f"expected {project.currency}"},
        )
    source_account = FUNDING_SOURCES.get(source)
    if source_account is None:
        raise InvalidInput(f"unknown funding source {source!r}", details={"source": sorted(FUNDING_SOURCES)})
    _budget_account(session, project.id, project.currency)
    ledger.ensure_account(session, code=source_account, currency=project.currency, kind="asset")
    budget = budget_account_code(project.id)
    return ledger.post_transaction(
        session,
        idempotency_key=f"project:{project.id}:funding:{idempotency_key}",  # see recorded_funding
        kind=KIND_FUNDING,
        reference=f"project:{project.id}",
        legs=[ledger.debit(source_account, amount), ledger.credit(budget, amount)],
        metadata={"source": source, "client_key": idempotency_key},
    )


def recorded_funding(session: Session, *, project: Project, idempotency_key: str) -> LedgerTransaction | None:
    """The funding already recorded under the client's key for this project, if any."""
    return ledger.find_transaction(session, idempotency_key=f"project:{project.id}:funding:{idempotency_key}")


# --- holds and payments for labels --------------------------------------------------------------------------


def hold_for_assignment(session: Session, *, assignment: Assignment) -> LedgerTransaction:
    """Reserve price + fee on the project budget for a leased assignment; InsufficientFunds if it cannot pay.

    The hold already names who is paid (the annotator's payable and the platform's fees), so accepting the
    label is a plain posting of it. It has no expiry of its own: the lease decides, and releases it. The budget is
    checked now and its balance row changed (and locked) at the commit: the commit may raise the retryable
    FundsTakenBeforeCommit if concurrent leases took the money first (`payments.deferred_balances`).
    """
    project = session.get(Project, assignment.project_id)
    if project is None:
        raise NotFound(f"Project {assignment.project_id} not found.")
    if assignment.currency != project.currency:
        raise CurrencyMismatch(
            f"assignment {assignment.id} is in {assignment.currency}, its project in {project.currency}"
        )
    if not sa_inspect(assignment).has_identity:
        session.flush()  # generate assignment.id: the hold is keyed by it
        if assignment.id is None:
            raise ValueError("add the assignment to the session before holding its budget")
    currency = project.currency
    price = Money(assignment.price_minor, currency)
    fee = Money(assignment.fee_minor, currency)
    specs = [budget_account_spec(project.id, currency)]
    legs: list[ledger.Leg] = []
    if price.is_positive or fee.is_positive:
        legs.append(ledger.debit(budget_account_code(project.id), price + fee))
    if price.is_positive:
        specs.append(payable_account_spec(assignment.annotator_id, currency))
        legs.append(ledger.credit(payable_account_code(assignment.annotator_id), price))
    if fee.is_positive:
        specs.append(ledger.AccountSpec(code=FEES_ACCOUNT, currency=currency, kind="revenue"))
        legs.append(ledger.credit(FEES_ACCOUNT, fee))
    ledger.ensure_accounts(session, specs)  # one query for the three accounts
    hold = ledger.place_hold(
        session,
        idempotency_key=f"assignment:{assignment.id}:hold",
        kind=KIND_LABEL_PAYMENT,
        reference=f"assignment:{assignment.id}",
        legs=legs,
        metadata={
            "project_id": project.id,
            "annotator_id": assignment.annotator_id,
            "task_id": assignment.task_id,
        },
        # every lease of the project holds money on its budget: lock that row only for the commit
        at_commit=True,
    )
    assignment.hold_transaction_id = hold.id
    return hold


def pay_for_label(session: Session, *, assignment: Assignment, label_id: int) -> LedgerTransaction:
    """Pay an accepted label: post its assignment's hold (budget → payable + fees), once per label.

    Accepting twice returns the first payment. If the hold was already released (a rejection overturned on
    appeal), the same amounts are paid from the budget's available balance instead, under the same key.
    """
    key = f"label:{label_id}:accept"
    paid = ledger.find_transaction(session, idempotency_key=key)
    if paid is not None:
        return paid
    hold_id = assignment.hold_transaction_id
    if hold_id is None:
        raise HoldNotFound(
            f"assignment {assignment.id} has no budget hold", details={"assignment_id": assignment.id}
        )
    reference = f"label:{label_id}"
    metadata: dict[str, Any] = {"label_id": label_id, "assignment_id": assignment.id}
    try:
        return ledger.post_hold(
            session, hold_id=hold_id, idempotency_key=key, reference=reference, metadata=metadata
        )
    except HoldAlreadyResolved:
        resolution = ledger.hold_resolution(session, hold_id=hold_id)
        if resolution is None or resolution.status == TransactionStatus.POSTED:
            raise
    hold = session.get(LedgerTransaction, hold_id)
    assert hold is not None
    assert resolution is not None
    legs = ledger.hold_legs(session, hold=hold)
    if not legs:
        return resolution  # a free label: there is nothing to pay
    # At the commit, as a hold's posting would be: an upheld appeal then takes the budget's and the payable's
    # locks after the annotator's and the item's rows, in the order every other decision takes them.
    return ledger.post_transaction(
        session,
        idempotency_key=key,
        kind=KIND_LABEL_PAYMENT,
        reference=reference,
        legs=legs,
        metadata={**metadata, "released_hold_id": hold_id},
        at_commit=True,
    )


def release_assignment_hold(session: Session, *, assignment: Assignment, reason: str) -> None:
    """Void the assignment's hold (rejected label, released or expired lease); a released hold stays so."""
    hold_id = assignment.hold_transaction_id
    if hold_id is None:
        return
    resolution = ledger.hold_resolution(session, hold_id=hold_id)
    if resolution is not None and resolution.status in (TransactionStatus.VOIDED, TransactionStatus.EXPIRED):
        return
    ledger.void_hold(session, hold_id=hold_id, reason=reason)


# --- budgets ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetSummary:
    """Where a project's money stands."""

    project_id: int
    currency: str
    #: everything credited to the budget by fundings
    funded: Money
    #: reserved by live leases and labels awaiting review
    held: Money
    #: paid to annotators for accepted labels
    spent: Money
    #: the platform's fees on those labels and on bonuses
    fees: Money
    #: the posted balance: funded less everything paid out of the budget
    remaining: Money
    #: remaining less held: what new leases can still reserve
    available: Money
    #: paid to annotators as bonuses (marketplace.billing.bonuses)
    bonuses: Money

    def to_json(self) -> dict[str, Any]:
        """The API's shape."""
        return {
            "project_id": self.project_id,
            "currency": self.currency,
            **{name: getattr(self, name).to_json() for name in BUDGET_FIELDS},
        }


#: a budget summary's amounts, in the order people read them
BUDGET_FIELDS = ("funded", "held", "spent", "bonuses", "fees", "remaining", "available")


def project_budget(session: Session, *, project: Project) -> BudgetSummary:
    """Funded, held, spent, fees, remaining and available money of a project."""
    currency = project.currency
    zero = Money.zero(currency)
    code = budget_account_code(project.id)
    account = session.scalar(select(Account).where(Account.code == code, Account.currency == currency))
    if account is None:
        return BudgetSummary(project.id, currency, zero, zero, zero, zero, zero, zero, zero)
    balance = ledger.balance(session, account_code=code, currency=currency)
    funded = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(
            LedgerEntry.account_id == account.id,
            LedgerEntry.direction == "credit",
            LedgerTransaction.kind == KIND_FUNDING,
            LedgerTransaction.status == TransactionStatus.POSTED.value,
        )
    )
    # Spent and fees are told apart by where the budget's money went: the credit side of each posted
    # transaction that debited the budget.
    paid_from_budget = select(LedgerEntry.transaction_id).where(
        LedgerEntry.account_id == account.id, LedgerEntry.direction == "debit"
    )
    spent = fees = bonuses = 0
    for counter_code, kind, total in session.execute(
        select(Account.code, LedgerTransaction.kind, func.sum(LedgerEntry.amount_minor))
        .join(Account, Account.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(
            LedgerEntry.transaction_id.in_(paid_from_budget),
            LedgerEntry.direction == "credit",
            LedgerTransaction.status == TransactionStatus.POSTED.value,
        )
        .group_by(Account.code, LedgerTransaction.kind)
    ):
        if counter_code == FEES_ACCOUNT:
            fees += int(total)
        elif counter_code.startswith("annotator:") and kind == KIND_BONUS:
            bonuses += int(total)
        elif counter_code.startswith("annotator:"):
            spent += int(total)
    return BudgetSummary(
        project_id=project.id,
        currency=currency,
        funded=Money(int(funded or 0), currency),
        held=balance.pending_debits,
        spent=Money(spent, currency),
        fees=Money(fees, currency),
        remaining=balance.posted,
        available=balance.available,
        bonuses=Money(bonuses, currency),
    )


def label_cost(project: Project, *, fee_bps: int) -> Money:
    """What one more label costs the budget at the project's rate: the pay plus the platform's fee."""
    pay = Money(project.pay_per_label_minor, project.currency)
    return pay + fee_for(pay, fee_bps)


def available_budget(session: Session, *, project: Project) -> Money:
    """What new leases can still reserve: the budget's posted balance less its holds. One read of the cached
    balance, where `project_budget` also sums the budget's entries to tell spent, bonuses and fees apart."""
    try:
        balance = ledger.balance(
            session, account_code=budget_account_code(project.id), currency=project.currency
        )
    except AccountNotFound:
        return Money.zero(project.currency)  # never funded
    return balance.available


def affordable_slots(session: Session, *, project: Project, fee_bps: int) -> int:
    """How many more labels the available budget covers at the project's pay rate plus fee (for routing, and for
    consensus deciding whether to buy one more label)."""
    cost = label_cost(project, fee_bps=fee_bps)
    if not cost.is_positive:
        return UNLIMITED_SLOTS
    return max(available_budget(session, project=project).amount // cost.amount, 0)
