"""Payout runs: the loops that need several commits per payout, one before and one after each gateway call.

A gateway call must never happen inside a database transaction that could still roll back: the payout's
claim (state, key, lease) is committed first, then the call is made, then its outcome is committed. These
loops therefore take a session factory, `scope`: a callable returning a context manager that yields a
session and commits it on a clean exit (the marketplace passes `lambda: unit_of_work(app)`). Everything
they do to the database goes through `payments.payouts`, whose functions never commit.

`on_step(step, payout_id)` is called at each boundary ("requested", "claimed", "transferred", "recorded",
"looked_up"): the CLI drives its progress bar with it, and the fault-injection tests raise from it to
simulate a crash at exactly that point.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from payments import payout_outcomes, payouts
from payments.db import utcnow
from payments.errors import GatewayError, GatewayUnavailableError, PayoutError
from payments.gateways.base import PayoutGateway
from payments.payout_models import PayoutRun, PayoutState
from payments.throttle import Throttle

SessionScope = Callable[[], AbstractContextManager[Session]]
StepHook = Callable[[str, int], None]
Clock = Callable[[], datetime]


def _no_step(step: str, payout_id: int) -> None:
    return None


@dataclass
class SubmitReport:
    """What one pass over the due payouts did."""

    settled: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    #: why the pass stopped early (the gateway is unavailable), if it did
    stopped: str | None = None


@dataclass
class RunReport:
    """A payout run: its plan, the payouts it requested and what submitting them gave."""

    run_id: int
    plan: payouts.PayoutPlan
    requested: list[int]
    submit: SubmitReport
    lookups: LookupReport


@dataclass
class LookupReport:
    """What resolving payouts whose outcome stayed unknown did."""

    marked_stale: int = 0
    settled: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    still_open: list[int] = field(default_factory=list)
    balances_booked: list[int] = field(default_factory=list)


def dry_run(scope: SessionScope, *, min_amount_minor: int, currency: str | None = None) -> payouts.PayoutPlan:
    """What a run would pay, per payee and per currency, without writing anything."""
    with scope() as session:
        plan = payouts.plan_payouts(session, min_amount_minor=min_amount_minor, currency=currency)
        session.rollback()
    return plan


def start_run(
    session: Session, *, requested_by: str, min_amount_minor: int, currency: str | None = None
) -> PayoutRun:
    """Record a payout run to be executed (by `run_payouts` with its id, now or in a job)."""
    if min_amount_minor <= 0:
        raise PayoutError("the minimum payout must be a positive amount")
    run = PayoutRun(requested_by=requested_by, min_amount_minor=min_amount_minor, currency=currency)
    session.add(run)
    session.flush()  # generate run.id
    return run


def run_payouts(
    scope: SessionScope,
    *,
    gateway: PayoutGateway,
    throttle: Throttle,
    worker: str,
    run_id: int | None = None,
    min_amount_minor: int | None = None,
    currency: str | None = None,
    requested_by: str = "system",
    clock: Clock = utcnow,
    on_step: StepHook = _no_step,
    batch_size: int = 20,
    lease: timedelta = payouts.DEFAULT_LEASE,
    retry_delay: timedelta = payouts.DEFAULT_RETRY_DELAY,
    stale_after: timedelta = payouts.DEFAULT_STALE_AFTER,
) -> RunReport:
    """Request a payout (row + hold, one transaction each) for every payee due, then submit all due payouts.

    Either executes a run recorded with `start_run` (`run_id`: its threshold and currency apply) or records a
    new one (`min_amount_minor`, `currency`, `requested_by`).
    """
    with scope() as session:
        if run_id is None:
            if min_amount_minor is None:
                raise PayoutError("a new run needs its minimum payout")
            run = start_run(
                session, requested_by=requested_by, min_amount_minor=min_amount_minor, currency=currency
            )
        else:
            run = session.get_one(PayoutRun, run_id)
            if run.finished_at is not None:
                raise PayoutError(f"payout run {run_id} was already executed", details={"run_id": run_id})
        run_id, minimum, currency = run.id, run.min_amount_minor, run.currency
        plan = payouts.plan_payouts(session, min_amount_minor=minimum, currency=currency)
    requested: list[int] = []
    totals: dict[str, dict[str, int]] = {}
    for planned in plan.payouts:
        with scope() as session:
            payout = payouts.request_payout(session, planned=planned, min_amount_minor=minimum, run_id=run_id)
            if payout is None:
                continue
            payout_id, amount, code = payout.id, payout.amount_minor, payout.currency
        requested.append(payout_id)
        entry = totals.setdefault(code, {"count": 0, "amount_minor": 0})
        entry["count"] += 1
        entry["amount_minor"] += amount
        on_step("requested", payout_id)
    with scope() as session:
        run = session.get_one(PayoutRun, run_id)
        # additive: a run re-executed after a crash keeps what its first pass requested
        run.payouts_requested += len(requested)
        merged = {c: dict(v) for c, v in (run.totals or {}).items()}
        for code, entry in totals.items():
            into = merged.setdefault(code, {"count": 0, "amount_minor": 0})
            into["count"] += entry["count"]
            into["amount_minor"] += entry["amount_minor"]
        run.totals = dict(sorted(merged.items()))
    report = submit_due_payouts(
        scope,
        gateway=gateway,
        throttle=throttle,
        worker=worker,
        clock=clock,
        on_step=on_step,
        batch_size=batch_size,
        lease=lease,
        retry_delay=retry_delay,
        stale_after=stale_after,
    )
    # Payouts unresolved for too long are never retried by the submit pass; resolve them here too, so that no
    # payout waits on a separate schedule to end settled or failed.
    lookups = resolve_stale_payouts(
        scope,
        gateway=gateway,
        worker=worker,
        clock=clock,
        on_step=on_step,
        stale_after=stale_after,
        lease=lease,
        retry_delay=retry_delay,
    )
    with scope() as session:
        session.get_one(PayoutRun, run_id).finished_at = clock()
    return RunReport(run_id=run_id, plan=plan, requested=requested, submit=report, lookups=lookups)


def submit_due_payouts(
    scope: SessionScope,
    *,
    gateway: PayoutGateway,
    throttle: Throttle,
    worker: str,
    clock: Clock = utcnow,
    on_step: StepHook = _no_step,
    batch_size: int = 20,
    lease: timedelta = payouts.DEFAULT_LEASE,
    retry_delay: timedelta = payouts.DEFAULT_RETRY_DELAY,
    stale_after: timedelta = payouts.DEFAULT_STALE_AFTER,
    payout_ids: list[int] | None = None,
) -> SubmitReport:
    """Claim due payouts in batches and call the gateway for each with its stored key, committing around it.

    Each payout is tried at most once per pass, so a payout that keeps failing cannot spin the loop; it is
    due again after `retry_delay`.
    """
    report = SubmitReport()
    seen: set[int] = set()
    while report.stopped is None:
        with scope() as session:
            claims = payouts.claim_payouts(
                session,
                worker=worker,
                now=clock(),
                limit=batch_size,
                lease=lease,
                stale_after=stale_after,
                payout_ids=payout_ids,
                exclude_ids=seen,
            )
        if not claims:
            break
        for index, claim in enumerate(claims):
            seen.add(claim.payout_id)
            on_step("claimed", claim.payout_id)
            try:
                throttle.acquire()
                transfer = gateway.create_transfer(
                    amount=claim.amount,
                    destination=claim.destination,
                    idempotency_key=claim.idempotency_key,
                    transfer_group=claim.transfer_group,
                    metadata=claim.metadata,
                )
            except (GatewayError, TimeoutError) as exc:
                error = exc if isinstance(exc, GatewayError) else GatewayUnavailableError(str(exc))
                with scope() as session:
                    payout = payout_outcomes.record_gateway_error(
                        session,
                        payout_id=claim.payout_id,
                        version=claim.version,
                        error=error,
                        now=clock(),
                        retry_delay=retry_delay,
                    )
                    state = payout.state
                (report.failed if state == PayoutState.FAILED else report.retrying).append(claim.payout_id)
                if isinstance(error, GatewayUnavailableError):
                    # Rate limited or refused our credentials: calling again now only makes it worse.
                    report.stopped = str(error)
                    with scope() as session:
                        payouts.release_claims(session, claims=claims[index + 1 :], now=clock())
                    break
                continue
            on_step("transferred", claim.payout_id)
            with scope() as session:
                payout = payout_outcomes.record_transfer(
                    session, payout_id=claim.payout_id, transfer=transfer, now=clock()
                )
                state = payout.state
            (
                report.settled if state in {PayoutState.SETTLED, PayoutState.REVERSED} else report.retrying
            ).append(claim.payout_id)
            on_step("recorded", claim.payout_id)
    return report


def resolve_stale_payouts(
    scope: SessionScope,
    *,
    gateway: PayoutGateway,
    worker: str,
    clock: Clock = utcnow,
    on_step: StepHook = _no_step,
    stale_after: timedelta = payouts.DEFAULT_STALE_AFTER,
    lease: timedelta = payouts.DEFAULT_LEASE,
    retry_delay: timedelta = payouts.DEFAULT_RETRY_DELAY,
) -> LookupReport:
    """Look up payouts unresolved past `stale_after` by transfer group (never re-post them), and book the
    gateway balance side of settled payouts that lack it."""
    report = LookupReport()
    with scope() as session:
        report.marked_stale = payouts.mark_stale(session, now=clock(), stale_after=stale_after)
    seen: set[int] = set()
    while True:
        with scope() as session:
            claims = [
                c
                for c in payouts.claim_lookups(session, worker=worker, now=clock(), lease=lease)
                if c.payout_id not in seen
            ]
        if not claims:
            break
        for claim in claims:
            seen.add(claim.payout_id)
            try:
                transfers = gateway.find_transfers(claim.transfer_group)
            except GatewayError as exc:
                with scope() as session:
                    payout_outcomes.record_gateway_error(
                        session,
                        payout_id=claim.payout_id,
                        version=claim.version,
                        error=exc,
                        now=clock(),
                        retry_delay=retry_delay,
                    )
                report.still_open.append(claim.payout_id)
                continue
            on_step("looked_up", claim.payout_id)
            with scope() as session:
                payout = payout_outcomes.resolve_lookup(
                    session,
                    payout_id=claim.payout_id,
                    version=claim.version,
                    transfers=transfers,
                    now=clock(),
                )
                state = payout.state
            if state in {PayoutState.SETTLED, PayoutState.REVERSED}:
                report.settled.append(claim.payout_id)
            elif state == PayoutState.FAILED:
                report.failed.append(claim.payout_id)
            else:
                report.still_open.append(claim.payout_id)
    report.balances_booked = book_gateway_balances(scope, gateway=gateway, clock=clock)
    return report


def book_gateway_balances(scope: SessionScope, *, gateway: PayoutGateway, clock: Clock = utcnow) -> list[int]:
    """For settled payouts whose balance transaction is not booked, fetch the transfer and book it."""
    with scope() as session:
        pending = payout_outcomes.unbalanced_settled_payouts(session)
    booked: list[int] = []
    for payout_id, transfer_id in pending:
        try:
            transfer = gateway.retrieve_transfer(transfer_id)
        except GatewayError:
            continue
        if transfer is None:
            continue
        with scope() as session:
            payout = payout_outcomes.record_transfer(
                session, payout_id=payout_id, transfer=transfer, now=clock()
            )
            if payout.balance_ledger_transaction_id is not None:
                booked.append(payout_id)
    return booked
