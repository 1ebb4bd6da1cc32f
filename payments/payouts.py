"""Payouts: from a payee's payable balance to a transfer at the gateway, each step one short transaction.

State machine (the row's `state`; every transition increments `version`, the fencing token):

    requested ──claim──▶ submitting ──transfer──▶ settled ──reversal of all──▶ reversed
        │                 │   ▲  │
        │                 │   └──┘ outcome unknown / gateway unavailable: retried with the same key
        │                 ├──declined──▶ failed
        │                 └──unresolved past `stale_after`──▶ needs_lookup ──found──▶ settled
        │                                                          └──not found──▶ failed
        └── (a transfer reported for a failed payout books it late: failed ──▶ settled)

Ledger entries (accounts: `{payee}:payable` liability, `clearing:stripe_transfers` liability,
`platform:stripe_balance` asset; X the payout's amount, R a reversal's):

- requested: hold `payout:{id}:hold`, pending: debit payable X, credit clearing X.
- settled: the hold posted (`payout:{id}:settle`): debit payable X, credit clearing X; and once the
  gateway's balance transaction for the transfer shows -X, `payout:{id}:gateway_balance`: debit clearing X,
  credit platform:stripe_balance X. Clearing is back to zero.
- failed: the hold voided: no entries; the payable's available balance is whole again.
- each reversal (`payout:{id}:reversal:{reversal id}`): debit platform:stripe_balance R, credit payable R.
- late settlement of a failed payout (`payout:{id}:late_settle`): debit payable X, credit clearing X.

This module plans, requests and claims payouts; `payments.payout_outcomes` books what the gateway answered.
Every function in both takes the caller's session and flushes, never commits. The calls to the gateway
happen between transactions, in `payments.payout_runs`, which takes a session factory for that reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from payments import ledger
from payments.db import take_turns
from payments.errors import (
    InsufficientFunds,
    PayoutAccountCountryConflict,
    PayoutError,
)
from payments.gateways.base import ConnectedAccount, OnboardingLink, PayoutGateway
from payments.models import Account
from payments.money import Money
from payments.payout_models import OPEN_STATES, Payout, PayoutAccount, PayoutState

#: the ledger kind of payout holds and their postings (billing counts these as paid out)
KIND_PAYOUT = "payout"
KIND_PAYOUT_SETTLEMENT = "payout_settlement"
KIND_PAYOUT_REVERSAL = "payout_reversal"
CLEARING_ACCOUNT = "clearing:stripe_transfers"
GATEWAY_BALANCE_ACCOUNT = "platform:stripe_balance"
PAYABLE_SUFFIX = ":payable"

#: how long a claim keeps other workers off a payout while its gateway call is in flight
DEFAULT_LEASE = timedelta(minutes=5)
#: past this, Stripe may have forgotten the idempotency key (it keeps them ~24 h): look up, never re-post
DEFAULT_STALE_AFTER = timedelta(hours=20)
#: how soon a payout whose call failed without an answer is tried again (with the same key)
DEFAULT_RETRY_DELAY = timedelta(minutes=1)


def payable_account_code(payee_reference: str) -> str:
    """The ledger account of what the platform owes `payee_reference` (`annotator:17` → `annotator:17:payable`)."""
    return f"{payee_reference}{PAYABLE_SUFFIX}"


def payout_metadata(payout: Payout) -> dict[str, str]:
    """What the gateway stores with the transfer, so that a lookup can tie it back to the row."""
    return {"payout_id": str(payout.id), "payee": payout.payee_reference}


# --- payee accounts -----------------------------------------------------------------------------------------


def get_payout_account(session: Session, *, reference: str) -> PayoutAccount | None:
    """The payee's gateway account, if they have one."""
    return session.scalars(select(PayoutAccount).where(PayoutAccount.reference == reference)).one_or_none()


def open_payout_account(
    session: Session,
    *,
    gateway: PayoutGateway,
    reference: str,
    country: str,
    currency: str,
    email: str | None = None,
) -> PayoutAccount:
    """The payee's gateway account, created at the gateway on first use (idempotent per payee); asking again
    in another country is a PayoutAccountCountryConflict.

    The gateway call happens inside the caller's transaction: if the transaction then fails, the gateway's
    idempotency key (derived from the payee) hands back the same account on the retry, so nothing leaks. Two
    first requests for one payee at once take turns (a transaction-scoped lock on the payee's reference, on
    PostgreSQL; SQLite runs one writer at a time): the second finds the first's account instead of asking the
    gateway for another, which one in another country would otherwise get and leave unrecorded.
    """
    existing = get_payout_account(session, reference=reference)
    if existing is None:
        take_turns(session, f"payout-account:{reference}")
        existing = get_payout_account(session, reference=reference)
    if existing is None:
        created = gateway.create_connected_account(
            reference=reference, country=country.upper(), currency=currency.upper(), email=email
        )
        account = PayoutAccount(
            reference=reference,
            gateway=gateway.name,
            gateway_account_id=created.id,
            country=(created.country or country).upper(),
            currency=(created.currency or currency).upper(),
            payouts_enabled=created.payouts_enabled and created.transfers_enabled,
            details_submitted=created.details_submitted,
        )
        try:
            with session.begin_nested():
                session.add(account)
                session.flush()  # generate account.id
            return account
        except IntegrityError:
            # A concurrent request for the same payee (a double click) recorded it first: the gateway's key gave
            # both the same account, so theirs is ours.
            existing = get_payout_account(session, reference=reference)
            if existing is None:
                raise
    if existing.country != country.upper():
        raise PayoutAccountCountryConflict(
            f"The payout account is in {existing.country}; an account's country cannot change.",
            details={"country": existing.country},
        )
    return existing


def onboarding_link(
    *, gateway: PayoutGateway, account: PayoutAccount, refresh_url: str, return_url: str
) -> OnboardingLink:
    """A fresh onboarding link for the payee's account (links are single-use and short-lived)."""
    return gateway.create_onboarding_link(
        account_id=account.gateway_account_id, refresh_url=refresh_url, return_url=return_url
    )


def sync_payout_account(session: Session, *, account: ConnectedAccount) -> PayoutAccount | None:
    """Copy the gateway's view of an account (can it be paid?) onto our row; None if it is not ours."""
    row = session.scalars(
        select(PayoutAccount).where(PayoutAccount.gateway_account_id == account.id).with_for_update()
    ).one_or_none()
    if row is None:
        return None
    row.payouts_enabled = account.payouts_enabled and account.transfers_enabled
    row.details_submitted = account.details_submitted
    if account.country:
        row.country = account.country.upper()
    if account.currency:
        row.currency = account.currency.upper()
    session.flush()
    return row


# --- planning -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedPayout:
    """A payee whose available payable balance would be paid out now."""

    payee_reference: str
    payout_account_id: int
    destination: str
    amount: Money


@dataclass(frozen=True)
class SkippedPayee:
    """A payee with money owed that this run would not pay, and why."""

    payee_reference: str
    amount: Money
    reason: str


@dataclass(frozen=True)
class PayoutPlan:
    """What a run would do: the payouts it would request and the payees it would leave."""

    payouts: list[PlannedPayout] = field(default_factory=list)
    skipped: list[SkippedPayee] = field(default_factory=list)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per currency: how many payouts and how much in minor units."""
        totals: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "amount_minor": 0})
        for planned in self.payouts:
            entry = totals[planned.amount.currency]
            entry["count"] += 1
            entry["amount_minor"] += planned.amount.amount
        return dict(sorted(totals.items()))


def plan_payouts(session: Session, *, min_amount_minor: int, currency: str | None = None) -> PayoutPlan:
    """Every payee whose available payable balance is at least `min_amount_minor`; reads only."""
    if min_amount_minor <= 0:
        raise PayoutError("the minimum payout must be a positive amount")
    query = (
        select(Account)
        .where(Account.code.like(f"%{PAYABLE_SUFFIX}"))
        .order_by(Account.code, Account.currency)
    )
    if currency is not None:
        query = query.where(Account.currency == currency)
    accounts = {a.reference: a for a in session.scalars(select(PayoutAccount))}
    open_payouts = set(
        session.execute(
            select(Payout.payee_reference, Payout.currency).where(
                Payout.state.in_([s.value for s in OPEN_STATES])
            )
        ).tuples()
    )
    plan = PayoutPlan()
    for account in session.scalars(query):
        payee = account.code.removesuffix(PAYABLE_SUFFIX)
        available = ledger.balance(session, account_code=account.code, currency=account.currency).available
        if available.amount <= 0:
            continue
        payout_account = accounts.get(payee)
        reason = None
        if (payee, account.currency) in open_payouts:
            reason = "payout_in_progress"
        elif available.amount < min_amount_minor:
            reason = "below_minimum"
        elif payout_account is None:
            reason = "no_payout_account"
        elif not payout_account.payouts_enabled:
            reason = "payouts_disabled"
        elif payout_account.currency != account.currency:
            reason = "currency_mismatch"
        if reason is not None or payout_account is None:
            plan.skipped.append(SkippedPayee(payee, available, reason or "no_payout_account"))
            continue
        plan.payouts.append(
            PlannedPayout(
                payee_reference=payee,
                payout_account_id=payout_account.id,
                destination=payout_account.gateway_account_id,
                amount=available,
            )
        )
    return plan


# --- requesting ---------------------------------------------------------------------------------------------


def request_payout(
    session: Session, *, planned: PlannedPayout, min_amount_minor: int, run_id: int | None = None
) -> Payout | None:
    """Create the payout row and its ledger hold (payable → clearing) together; None if no longer due.

    The balance is read again here, in the transaction that places the hold: the plan may be minutes old.
    The ledger refuses a hold the payable cannot cover, and the partial unique index on open payouts refuses a
    second open payout for the payee, so two concurrent runs cannot both take the same money.
    """
    payable = payable_account_code(planned.payee_reference)
    currency = planned.amount.currency
    account = session.get(PayoutAccount, planned.payout_account_id)
    if account is None or not account.payouts_enabled or account.currency != currency:
        return None
    available = ledger.balance(session, account_code=payable, currency=currency).available
    if available.amount < min_amount_minor:
        return None
    ledger.ensure_account(session, code=CLEARING_ACCOUNT, currency=currency, kind="liability")
    ledger.ensure_account(session, code=GATEWAY_BALANCE_ACCOUNT, currency=currency, kind="asset")
    try:
        with session.begin_nested():
            payout = Payout(
                run_id=run_id,
                payee_reference=planned.payee_reference,
                payout_account_id=account.id,
                gateway=account.gateway,
                destination=account.gateway_account_id,
                amount_minor=available.amount,
                currency=currency,
                state=PayoutState.REQUESTED.value,
                version=1,
            )
            session.add(payout)
            session.flush()  # generate payout.id: the key, the group and the hold are named after it
            payout.idempotency_key = f"payout:{payout.id}:transfer:v1"
            payout.transfer_group = f"payout:{payout.id}"
            hold = ledger.place_hold(
                session,
                idempotency_key=f"payout:{payout.id}:hold",
                kind=KIND_PAYOUT,
                reference=f"payout:{payout.id}",
                legs=[ledger.debit(payable, available), ledger.credit(CLEARING_ACCOUNT, available)],
                metadata={"payee": planned.payee_reference, "destination": account.gateway_account_id},
            )
            payout.hold_id = hold.id
            session.flush()
    except (IntegrityError, InsufficientFunds):
        # another run holds this payee's open payout, or the balance went to a concurrent hold first
        return None
    return payout


# --- claiming -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayoutClaim:
    """A worker's exclusive right, until its lease ends, to call the gateway for one payout."""

    payout_id: int
    version: int
    state: str
    amount: Money
    destination: str
    idempotency_key: str
    transfer_group: str
    metadata: dict[str, str]


def _claim(
    session: Session,
    *,
    candidates: list[Payout],
    to_state: PayoutState,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> list[PayoutClaim]:
    claims: list[PayoutClaim] = []
    for payout in candidates:
        # The conditional UPDATE is the claim itself: it succeeds only if nobody changed the row since we read
        # it (same version, still claimable), which holds on every database, row locks or not.
        claimed = session.execute(
            update(Payout)
            .where(Payout.id == payout.id, Payout.version == payout.version, Payout.state == payout.state)
            .values(
                state=to_state.value,
                version=Payout.version + 1,
                attempts=Payout.attempts + (1 if to_state == PayoutState.SUBMITTING else 0),
                claimed_by=worker,
                next_attempt_at=now + lease,
                submitted_at=func.coalesce(Payout.submitted_at, now),
                updated_at=now,
            )
            .returning(Payout.version)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if claimed is None:
            continue
        assert payout.idempotency_key is not None
        assert payout.transfer_group is not None
        claims.append(
            PayoutClaim(
                payout_id=payout.id,
                version=claimed,
                state=to_state.value,
                amount=Money(payout.amount_minor, payout.currency),
                destination=payout.destination,
                idempotency_key=payout.idempotency_key,
                transfer_group=payout.transfer_group,
                metadata=payout_metadata(payout),
            )
        )
    session.expire_all()
    return claims


def _lockable(session: Session, query: Select[tuple[Payout]]) -> Select[tuple[Payout]]:
    # PostgreSQL: concurrent workers skip rows another worker is claiming instead of queueing behind it, so
    # they split a batch between them. SQLite has one writer at a time (BEGIN IMMEDIATE): nothing to skip.
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query.execution_options(populate_existing=True)


def claim_payouts(
    session: Session,
    *,
    worker: str,
    now: datetime,
    limit: int = 20,
    lease: timedelta = DEFAULT_LEASE,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    payout_ids: list[int] | None = None,
    exclude_ids: set[int] | None = None,
) -> list[PayoutClaim]:
    """Claim requested payouts, and submitting ones whose lease ran out, for a call to the gateway."""
    query = (
        select(Payout)
        .where(
            or_(
                Payout.state == PayoutState.REQUESTED.value,
                and_(
                    Payout.state == PayoutState.SUBMITTING.value,
                    Payout.next_attempt_at <= now,
                    Payout.submitted_at > now - stale_after,
                ),
            )
        )
        .order_by(Payout.id)
        .limit(limit)
    )
    if payout_ids is not None:
        query = query.where(Payout.id.in_(payout_ids))
    if exclude_ids:
        query = query.where(Payout.id.not_in(sorted(exclude_ids)))
    candidates = list(session.scalars(_lockable(session, query)))
    return _claim(
        session, candidates=candidates, to_state=PayoutState.SUBMITTING, worker=worker, now=now, lease=lease
    )


def mark_stale(session: Session, *, now: datetime, stale_after: timedelta = DEFAULT_STALE_AFTER) -> int:
    """Move payouts unresolved for longer than `stale_after` (and not leased) to needs_lookup; how many."""
    result = session.execute(
        update(Payout)
        .where(
            Payout.state == PayoutState.SUBMITTING.value,
            Payout.submitted_at <= now - stale_after,
            or_(Payout.next_attempt_at.is_(None), Payout.next_attempt_at <= now),
        )
        .values(
            state=PayoutState.NEEDS_LOOKUP.value, version=Payout.version + 1, claimed_by=None, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    return int(getattr(result, "rowcount", 0) or 0)


def claim_lookups(
    session: Session, *, worker: str, now: datetime, limit: int = 20, lease: timedelta = DEFAULT_LEASE
) -> list[PayoutClaim]:
    """Claim payouts in needs_lookup whose lease (if any) ran out, to look them up at the gateway."""
    query = (
        select(Payout)
        .where(
            Payout.state == PayoutState.NEEDS_LOOKUP.value,
            or_(Payout.next_attempt_at.is_(None), Payout.next_attempt_at <= now),
        )
        .order_by(Payout.id)
        .limit(limit)
    )
    candidates = list(session.scalars(_lockable(session, query)))
    return _claim(
        session, candidates=candidates, to_state=PayoutState.NEEDS_LOOKUP, worker=worker, now=now, lease=lease
    )


def release_claims(session: Session, *, claims: list[PayoutClaim], now: datetime) -> None:
    """Give back claims whose gateway call was never made, so that the next worker need not wait the lease."""
    for claim in claims:
        session.execute(
            update(Payout)
            .where(Payout.id == claim.payout_id, Payout.version == claim.version)
            .values(claimed_by=None, next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    session.expire_all()
