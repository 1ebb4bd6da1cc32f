"""The ways a payout goes wrong, each checked in the ledger: transfers that do not match their payout, a second
transfer, one that arrives after the payee was paid again, balance transactions and reversals reported in part,
errors while looking a payout up, accounts that lost their transfer capability, a rate-limited gateway, runs
with nothing due, plans gone stale before the request, and the local gateway forgetting on restart."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from payments import ledger, payout_outcomes, payout_runs, payouts
from payments.errors import GatewayError, PayoutError, TransferDeclinedError
from payments.gateways.base import ReversalResult, TransferResult
from payments.gateways.local import LocalGateway
from payments.gateways.stripe import StripeGateway
from payments.money import Money
from payments.payout_models import Payout, PayoutAccount, PayoutReversal, PayoutRun
from payments.payout_runs import SessionScope
from payments.throttle import LocalTokenBucket, Throttle
from tests.payments.conftest import FrozenClock, available, earn, integrity, payee_account
from tests.payments.fake_stripe import API_KEY, FakeStripe, FakeStripeServer

EUR = "EUR"
PAYEE = "annotator:1"


def eur(amount: int) -> Money:
    return Money(amount, EUR)


def _payout(scope: SessionScope, payout_id: int) -> Payout:
    with scope() as session:
        payout = session.get_one(Payout, payout_id)
        _ = payout.reversals  # loaded while the session is open
        return payout


def _request(scope: SessionScope, payee: str = PAYEE) -> int:
    with scope() as session:
        planned = next(
            p
            for p in payouts.plan_payouts(session, min_amount_minor=1000).payouts
            if p.payee_reference == payee
        )
        payout = payouts.request_payout(session, planned=planned, min_amount_minor=1000)
        assert payout is not None
        return payout.id


def _claim(scope: SessionScope, clock: FrozenClock) -> payouts.PayoutClaim:
    with scope() as session:
        (claim,) = payouts.claim_payouts(session, worker="w1", now=clock())
    return claim


def _transfer(gateway: LocalGateway, claim: payouts.PayoutClaim) -> TransferResult:
    return gateway.create_transfer(
        amount=claim.amount,
        destination=claim.destination,
        idempotency_key=claim.idempotency_key,
        transfer_group=claim.transfer_group,
        metadata=claim.metadata,
    )


def _hold(scope: SessionScope, payout_id: int) -> str:
    """How the payout's hold stands: "pending", or the status of its one resolution."""
    with scope() as session:
        hold_id = session.get_one(Payout, payout_id).hold_id
        assert hold_id is not None
        resolution = ledger.hold_resolution(session, hold_id=hold_id)
        return "pending" if resolution is None else str(resolution.status)


def _posted(scope: SessionScope, code: str) -> int:
    with scope() as session:
        return ledger.balance(session, account_code=code, currency=EUR).posted.amount


def _transactions(scope: SessionScope) -> int:
    with scope() as session:
        return int(session.scalar(select(func.count()).select_from(ledger.LedgerTransaction)) or 0)


def _record(scope: SessionScope, payout_id: int, transfer: TransferResult, clock: FrozenClock) -> Payout:
    with scope() as session:
        payout_outcomes.record_transfer(session, payout_id=payout_id, transfer=transfer, now=clock())
    return _payout(scope, payout_id)


@pytest.fixture
def local() -> LocalGateway:
    return LocalGateway()


@pytest.fixture
def claimed(scope: SessionScope, local: LocalGateway, clock: FrozenClock) -> payouts.PayoutClaim:
    """PAYEE's payout of 2000, requested and claimed for its transfer."""
    earn(scope, PAYEE, eur(2000))
    payee_account(scope, local, PAYEE)
    _request(scope)
    return _claim(scope, clock)


# --- what the gateway reports -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"amount": Money(1999, EUR)},
        {"amount": Money(2000, "USD")},
        {"destination": "acct_someone_else"},
    ],
    ids=["amount", "currency", "destination"],
)
def test_a_transfer_that_does_not_match_its_payout_is_not_booked(
    scope: SessionScope,
    local: LocalGateway,
    clock: FrozenClock,
    claimed: payouts.PayoutClaim,
    change: dict[str, Any],
) -> None:
    real = _transfer(local, claimed)

    wrong = _record(scope, claimed.payout_id, replace(real, id="tr_wrong", **change), clock)

    assert (wrong.state, wrong.failure_code, wrong.transfer_id) == ("needs_lookup", "transfer_mismatch", None)
    assert _hold(scope, claimed.payout_id) == "pending"
    assert available(scope, PAYEE) == 0  # still held
    assert _posted(scope, payouts.CLEARING_ACCOUNT) == 0
    assert integrity(scope) == []

    # the lookup finds the payout's real transfer and settles it
    report = payout_runs.resolve_stale_payouts(scope, gateway=local, worker="w2", clock=clock)

    settled = _payout(scope, claimed.payout_id)
    assert report.settled == [claimed.payout_id]
    assert (settled.state, settled.transfer_id, settled.failure_code) == ("settled", real.id, None)
    assert _hold(scope, claimed.payout_id) == "posted"
    assert _posted(scope, f"{PAYEE}:payable") == 0
    assert _posted(scope, payouts.GATEWAY_BALANCE_ACCOUNT) == -2000
    assert integrity(scope) == []


def test_a_second_transfer_for_a_settled_payout_is_flagged_never_booked(
    scope: SessionScope, local: LocalGateway, clock: FrozenClock, claimed: payouts.PayoutClaim
) -> None:
    real = _transfer(local, claimed)
    assert _record(scope, claimed.payout_id, real, clock).state == "settled"
    entries = _transactions(scope)

    again = _record(scope, claimed.payout_id, real, clock)  # the same news twice changes nothing
    assert (again.state, again.failure_code) == ("settled", None)
    other = _record(scope, claimed.payout_id, replace(real, id="tr_second"), clock)

    assert (other.state, other.transfer_id, other.failure_code) == ("settled", real.id, "duplicate_transfer")
    assert "tr_second" in (other.last_error or "")
    assert _transactions(scope) == entries
    assert _hold(scope, claimed.payout_id) == "posted"
    assert _posted(scope, f"{PAYEE}:payable") == 0
    assert _posted(scope, payouts.GATEWAY_BALANCE_ACCOUNT) == -2000
    assert integrity(scope) == []


def _stale_lookup(scope: SessionScope, clock: FrozenClock) -> payouts.PayoutClaim:
    clock.advance(payouts.DEFAULT_STALE_AFTER + timedelta(minutes=1))
    with scope() as session:
        assert payouts.mark_stale(session, now=clock()) == 1
    with scope() as session:
        (lookup,) = payouts.claim_lookups(session, worker="w2", now=clock())
    return lookup


def test_a_lookup_books_the_first_of_two_transfers_and_flags_the_other(
    scope: SessionScope, local: LocalGateway, clock: FrozenClock, claimed: payouts.PayoutClaim
) -> None:
    real = _transfer(local, claimed)
    later = replace(real, id="tr_later", created=real.created + timedelta(seconds=5))
    lookup = _stale_lookup(scope, clock)

    with scope() as session:
        unchanged = payout_outcomes.resolve_lookup(
            session, payout_id=lookup.payout_id, version=lookup.version - 1, transfers=[real], now=clock()
        )
        assert unchanged.state == "needs_lookup"  # an older claim learns nothing
    with scope() as session:
        payout_outcomes.resolve_lookup(
            session, payout_id=lookup.payout_id, version=lookup.version, transfers=[later, real], now=clock()
        )

    payout = _payout(scope, claimed.payout_id)
    assert (payout.state, payout.transfer_id, payout.failure_code) == (
        "settled",
        real.id,
        "duplicate_transfer",
    )
    assert _hold(scope, claimed.payout_id) == "posted"
    assert _posted(scope, f"{PAYEE}:payable") == 0
    assert integrity(scope) == []


def test_a_lookup_ignores_transfers_made_for_another_payout(
    scope: SessionScope, local: LocalGateway, clock: FrozenClock, claimed: payouts.PayoutClaim
) -> None:
    theirs = replace(
        _transfer(local, claimed), id="tr_theirs", metadata={"payout_id": str(claimed.payout_id + 1)}
    )
    lookup = _stale_lookup(scope, clock)

    with scope() as session:
        payout_outcomes.resolve_lookup(
            session, payout_id=lookup.payout_id, version=lookup.version, transfers=[theirs], now=clock()
        )

    payout = _payout(scope, claimed.payout_id)
    assert (payout.state, payout.failure_code, payout.transfer_id) == ("failed", "not_found_at_gateway", None)
    assert _hold(scope, claimed.payout_id) == "voided"
    assert available(scope, PAYEE) == 2000
    assert integrity(scope) == []


def test_a_transfer_for_no_payout_of_ours_is_ignored(
    scope: SessionScope, clock: FrozenClock, claimed: payouts.PayoutClaim
) -> None:
    stranger = TransferResult(
        id="tr_stranger",
        amount=eur(2000),
        destination=claimed.destination,
        transfer_group=None,
        created=clock(),
    )
    entries = _transactions(scope)

    with scope() as session:
        assert payout_outcomes.sync_transfer(session, transfer=stranger, now=clock()) is None

    assert _transactions(scope) == entries
    assert _payout(scope, claimed.payout_id).state == "submitting"
    assert integrity(scope) == []


def test_a_transfer_arriving_after_the_payee_was_paid_again_is_left_for_reconciliation(
    scope: SessionScope,
    local: LocalGateway,
    throttle: Throttle,
    clock: FrozenClock,
    claimed: payouts.PayoutClaim,
) -> None:
    with scope() as session:
        payout_outcomes.record_gateway_error(
            session,
            payout_id=claimed.payout_id,
            version=claimed.version,
            error=TransferDeclinedError("declined"),
            now=clock(),
        )
    assert available(scope, PAYEE) == 2000
    rerun = payout_runs.run_payouts(
        scope, gateway=local, throttle=throttle, worker="w2", min_amount_minor=1000, clock=clock
    )
    (second,) = rerun.submit.settled
    assert available(scope, PAYEE) == 0

    late = _transfer(local, claimed)  # the first, declined call did move money after all
    with scope() as session:
        payout_outcomes.sync_transfer(session, transfer=late, now=clock())

    first = _payout(scope, claimed.payout_id)
    assert (first.state, first.transfer_id, first.failure_code) == (
        "failed",
        late.id,
        "late_transfer_unbooked",
    )
    assert first.settle_transaction_id is None
    with scope() as session:
        assert ledger.find_transaction(session, idempotency_key=f"payout:{first.id}:late_settle") is None
    assert _hold(scope, claimed.payout_id) == "voided"
    assert _hold(scope, second) == "posted"
    assert _posted(scope, f"{PAYEE}:payable") == 0
    assert integrity(scope) == []


@pytest.mark.parametrize(
    "change", [{"amount_minor": -1999, "net_minor": -1999}, {"currency": "USD"}], ids=["amount", "currency"]
)
def test_a_balance_transaction_that_does_not_match_leaves_clearing_open_until_booked(
    scope: SessionScope,
    local: LocalGateway,
    clock: FrozenClock,
    claimed: payouts.PayoutClaim,
    change: dict[str, Any],
) -> None:
    real = _transfer(local, claimed)
    assert real.balance_transaction is not None
    odd = replace(real, balance_transaction=replace(real.balance_transaction, **change))

    payout = _record(scope, claimed.payout_id, odd, clock)

    assert payout.state == "settled"
    assert payout.balance_ledger_transaction_id is None
    assert real.balance_transaction.id in (payout.last_error or "")
    assert _posted(scope, payouts.CLEARING_ACCOUNT) == 2000
    assert integrity(scope, clearing_at_zero=False) == []
    (problem,) = integrity(scope)
    assert problem.startswith("clearing account clearing:stripe_transfers (EUR)")

    # the next pass fetches the transfer again and books its balance side
    assert payout_runs.book_gateway_balances(scope, gateway=local, clock=clock) == [claimed.payout_id]
    assert _posted(scope, payouts.CLEARING_ACCOUNT) == 0
    assert _posted(scope, payouts.GATEWAY_BALANCE_ACCOUNT) == -2000
    assert integrity(scope) == []


def test_reversals_reported_in_part_are_booked_once_and_the_rest_awaited(
    scope: SessionScope, local: LocalGateway, clock: FrozenClock, claimed: payouts.PayoutClaim
) -> None:
    real = _transfer(local, claimed)
    _record(scope, claimed.payout_id, real, clock)

    def reversal(name: str, amount: int) -> ReversalResult:
        return ReversalResult(id=name, amount=eur(amount), balance_transaction=None, created=clock())

    first = reversal("trr_1", 500)
    partly = replace(real, amount_reversed_minor=1200, reversals=(first,))
    for _ in range(2):
        payout = _record(scope, claimed.payout_id, partly, clock)
    assert (payout.state, payout.amount_reversed_minor, len(payout.reversals)) == ("settled", 500, 1)
    assert "fetch the remaining reversals" in (payout.last_error or "")
    assert available(scope, PAYEE) == 500
    assert _posted(scope, payouts.GATEWAY_BALANCE_ACCOUNT) == -1500
    assert integrity(scope) == []

    whole = replace(
        real, amount_reversed_minor=2000, reversals=(first, reversal("trr_2", 700), reversal("trr_3", 800))
    )
    payout = _record(scope, claimed.payout_id, whole, clock)

    assert (payout.state, payout.amount_reversed_minor) == ("reversed", 2000)
    assert sorted(r.gateway_reversal_id for r in payout.reversals) == ["trr_1", "trr_2", "trr_3"]
    with scope() as session:
        assert session.scalar(select(func.count()).select_from(PayoutReversal)) == 3
    assert available(scope, PAYEE) == 2000
    assert _posted(scope, payouts.GATEWAY_BALANCE_ACCOUNT) == 0
    assert _hold(scope, claimed.payout_id) == "posted"
    assert integrity(scope) == []


# --- errors from the gateway --------------------------------------------------------------------------------


class LookupFails(LocalGateway):
    """A gateway whose lookups fail with `error`."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__()
        self.error = error

    def find_transfers(self, transfer_group: str) -> list[TransferResult]:
        raise self.error


def test_an_error_during_a_lookup_keeps_the_payout_open_even_a_decline(
    scope: SessionScope, clock: FrozenClock, claimed: payouts.PayoutClaim
) -> None:
    clock.advance(payouts.DEFAULT_STALE_AFTER + timedelta(minutes=1))

    report = payout_runs.resolve_stale_payouts(
        scope, gateway=LookupFails(TransferDeclinedError("no such group")), worker="w2", clock=clock
    )

    payout = _payout(scope, claimed.payout_id)
    assert (report.marked_stale, report.still_open, report.failed) == (1, [claimed.payout_id], [])
    assert (payout.state, payout.failure_code) == ("needs_lookup", "transfer_declined")
    assert payout.next_attempt_at == clock() + payouts.DEFAULT_RETRY_DELAY
    assert _hold(scope, claimed.payout_id) == "pending"
    assert available(scope, PAYEE) == 0

    # a later lookup that answers (a fresh local gateway holds no transfer for it) fails it and frees the money
    clock.advance(payouts.DEFAULT_RETRY_DELAY)
    report = payout_runs.resolve_stale_payouts(scope, gateway=LocalGateway(), worker="w2", clock=clock)

    assert report.failed == [claimed.payout_id]
    assert _payout(scope, claimed.payout_id).failure_code == "not_found_at_gateway"
    assert _hold(scope, claimed.payout_id) == "voided"
    assert available(scope, PAYEE) == 2000
    assert integrity(scope) == []


@pytest.fixture
def stripe_no_retries(fake_stripe_server: FakeStripeServer) -> StripeGateway:
    return StripeGateway(api_key=API_KEY, api_base=fake_stripe_server.url, max_network_retries=0)


def test_an_account_that_lost_its_transfer_capability_fails_the_payout_and_is_skipped(
    scope: SessionScope,
    stripe_no_retries: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 10_000)
    earn(scope, PAYEE, eur(2000))
    account_id = payee_account(scope, stripe_no_retries, PAYEE, fake=fake_stripe)
    payout_id = _request(scope)
    fake_stripe.enable_account(account_id, payouts_enabled=False)  # before we hear of it

    report = payout_runs.submit_due_payouts(
        scope, gateway=stripe_no_retries, throttle=throttle, worker="w1", clock=clock
    )

    payout = _payout(scope, payout_id)
    assert report.failed == [payout_id]
    assert (payout.state, payout.failure_code) == ("failed", "insufficient_capabilities_for_transfer")
    assert fake_stripe.transfers_in_group(f"payout:{payout_id}") == []
    assert _hold(scope, payout_id) == "voided"
    assert available(scope, PAYEE) == 2000
    with scope() as session:
        assert payouts.get_payout_account(session, reference=PAYEE).payouts_enabled is False  # type: ignore[union-attr]
    plan = payout_runs.dry_run(scope, min_amount_minor=1000)
    assert [(s.payee_reference, s.reason) for s in plan.skipped] == [(PAYEE, "payouts_disabled")]
    assert integrity(scope) == []


def test_a_rate_limited_gateway_stops_the_pass_and_hands_back_the_other_claims(
    scope: SessionScope,
    stripe_no_retries: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 100_000)
    for n in (1, 2, 3):
        earn(scope, f"annotator:{n}", eur(1000 * n))
        payee_account(scope, stripe_no_retries, f"annotator:{n}", fake=fake_stripe)
    ids = [_request(scope, f"annotator:{n}") for n in (1, 2, 3)]
    fake_stripe.inject("POST /v1/transfers", "rate_limit")

    report = payout_runs.submit_due_payouts(
        scope, gateway=stripe_no_retries, throttle=throttle, worker="w1", clock=clock
    )

    assert report.stopped is not None
    assert (report.retrying, report.settled, report.failed) == ([ids[0]], [], [])
    limited, *released = (_payout(scope, i) for i in ids)
    assert (limited.state, limited.failure_code) == ("submitting", "gateway_unavailable")
    assert limited.next_attempt_at == clock() + payouts.DEFAULT_RETRY_DELAY
    for payout in released:
        assert (payout.state, payout.claimed_by, payout.next_attempt_at) == ("submitting", None, clock())
    assert [_hold(scope, i) for i in ids] == ["pending"] * 3
    assert fake_stripe.transfers == {}

    again = payout_runs.submit_due_payouts(
        scope, gateway=stripe_no_retries, throttle=throttle, worker="w2", clock=clock
    )
    assert again.settled == ids[1:]  # the rate-limited one waits its delay
    clock.advance(payouts.DEFAULT_RETRY_DELAY)
    last = payout_runs.submit_due_payouts(
        scope, gateway=stripe_no_retries, throttle=throttle, worker="w2", clock=clock
    )
    assert last.settled == [ids[0]]
    for payout_id in ids:
        assert len(fake_stripe.transfers_in_group(f"payout:{payout_id}")) == 1
        assert _hold(scope, payout_id) == "posted"
    assert [available(scope, f"annotator:{n}") for n in (1, 2, 3)] == [0, 0, 0]
    assert integrity(scope) == []


def test_a_throttle_that_gives_up_leaves_the_payout_for_later(
    scope: SessionScope, local: LocalGateway, clock: FrozenClock
) -> None:
    for n in (1, 2):
        earn(scope, f"annotator:{n}", eur(1500))
        payee_account(scope, local, f"annotator:{n}")
    # one token now, the next in a thousand seconds: the second transfer cannot wait that long
    starved = Throttle(LocalTokenBucket(rate=0.001, capacity=1), max_wait=0.5)

    report = payout_runs.run_payouts(
        scope, gateway=local, throttle=starved, worker="w1", min_amount_minor=1000, clock=clock
    )

    first, second = report.requested
    assert (report.submit.settled, report.submit.retrying) == ([first], [second])
    assert report.submit.stopped is not None
    waiting = _payout(scope, second)
    assert (waiting.state, waiting.failure_code, waiting.transfer_id) == (
        "submitting",
        "gateway_unavailable",
        None,
    )
    assert local.find_transfers(f"payout:{second}") == []
    assert _hold(scope, second) == "pending"
    assert available(scope, "annotator:2") == 0

    clock.advance(payouts.DEFAULT_RETRY_DELAY)
    later = payout_runs.submit_due_payouts(
        scope, gateway=local, throttle=Throttle(LocalTokenBucket(rate=1000)), worker="w2", clock=clock
    )
    assert later.settled == [second]
    assert _hold(scope, second) == "posted"
    assert integrity(scope) == []


# --- runs and plans -----------------------------------------------------------------------------------------


def test_a_run_with_nothing_due_is_recorded_empty_and_cannot_run_twice(
    scope: SessionScope, local: LocalGateway, throttle: Throttle, clock: FrozenClock
) -> None:
    earn(scope, "annotator:1", eur(999))  # below the minimum
    payee_account(scope, local, "annotator:1")
    earn(scope, "annotator:2", eur(5000))  # no payout account
    entries = _transactions(scope)
    with scope() as session:
        run_id = payout_runs.start_run(session, requested_by="finance", min_amount_minor=1000).id

    report = payout_runs.run_payouts(
        scope, gateway=local, throttle=throttle, worker="w1", run_id=run_id, clock=clock
    )

    assert (report.run_id, report.requested, report.plan.payouts) == (run_id, [], [])
    assert [(s.payee_reference, s.reason) for s in report.plan.skipped] == [
        ("annotator:1", "below_minimum"),
        ("annotator:2", "no_payout_account"),
    ]
    with scope() as session:
        run = session.get_one(PayoutRun, run_id)
        assert (run.payouts_requested, run.totals, run.finished_at) == (0, {}, clock())
        assert session.scalar(select(func.count()).select_from(Payout)) == 0
    assert _transactions(scope) == entries
    assert (available(scope, "annotator:1"), available(scope, "annotator:2")) == (999, 5000)
    with pytest.raises(PayoutError, match="already executed"):
        payout_runs.run_payouts(
            scope, gateway=local, throttle=throttle, worker="w1", run_id=run_id, clock=clock
        )
    with pytest.raises(PayoutError, match="minimum"):
        payout_runs.run_payouts(scope, gateway=local, throttle=throttle, worker="w1", clock=clock)
    with scope() as session, pytest.raises(PayoutError, match="positive"):
        payout_runs.start_run(session, requested_by="finance", min_amount_minor=0)
    with scope() as session:
        assert session.scalar(select(func.count()).select_from(PayoutRun)) == 1
    assert integrity(scope) == []


def test_a_payee_paid_in_another_currency_than_their_account_is_skipped(
    scope: SessionScope, local: LocalGateway, throttle: Throttle, clock: FrozenClock
) -> None:
    earn(scope, PAYEE, eur(3000))
    account_id = payee_account(scope, local, PAYEE, currency="USD", country="US")
    with scope() as session:
        plan = payouts.plan_payouts(session, min_amount_minor=1000)
        account = payouts.get_payout_account(session, reference=PAYEE)
        assert account is not None
        forced = payouts.PlannedPayout(PAYEE, account.id, account_id, eur(3000))
        assert payouts.request_payout(session, planned=forced, min_amount_minor=1000) is None

    assert [(s.payee_reference, s.reason) for s in plan.skipped] == [(PAYEE, "currency_mismatch")]
    report = payout_runs.run_payouts(
        scope, gateway=local, throttle=throttle, worker="w1", min_amount_minor=1000, clock=clock
    )
    assert report.requested == []
    assert available(scope, PAYEE) == 3000
    assert integrity(scope) == []


@pytest.mark.parametrize("what", ["account_disabled", "balance_spent"])
def test_a_request_rechecks_what_the_plan_saw(
    scope: SessionScope, local: LocalGateway, clock: FrozenClock, what: str
) -> None:
    earn(scope, PAYEE, eur(2000))
    payee_account(scope, local, PAYEE)
    with scope() as session:
        (planned,) = payouts.plan_payouts(session, min_amount_minor=1000).payouts
    with scope() as session:
        if what == "account_disabled":
            session.get_one(PayoutAccount, planned.payout_account_id).payouts_enabled = False
        else:  # most of it is taken back before the run gets to it
            ledger.post_transaction(
                session,
                idempotency_key="test:clawback",
                kind="label_clawback",
                reference=PAYEE,
                legs=[
                    ledger.debit(f"{PAYEE}:payable", eur(1500)),
                    ledger.credit("platform:test_funding", eur(1500)),
                ],
            )
    entries = _transactions(scope)

    with scope() as session:
        assert payouts.request_payout(session, planned=planned, min_amount_minor=1000) is None

    with scope() as session:
        assert session.scalar(select(func.count()).select_from(Payout)) == 0
    assert _transactions(scope) == entries  # no hold placed
    assert available(scope, PAYEE) == (2000 if what == "account_disabled" else 500)
    assert integrity(scope) == []


# --- the local gateway --------------------------------------------------------------------------------------


def test_the_local_gateway_replays_a_key_and_keeps_nothing_outside_the_ledger(clock: FrozenClock) -> None:
    gateway = LocalGateway()
    account = gateway.create_connected_account(reference=PAYEE, country="DE", currency="EUR")
    assert (account.payouts_enabled, account.transfers_enabled, account.details_submitted) == (
        True,
        True,
        True,
    )
    assert gateway.create_connected_account(reference=PAYEE, country="DE", currency="EUR").id == account.id
    assert gateway.retrieve_account(account.id) == account
    assert gateway.retrieve_account("acct_unknown").payouts_enabled  # local accounts are always ready
    link = gateway.create_onboarding_link(
        account_id=account.id, refresh_url="https://r", return_url="https://back"
    )
    assert link.url == "https://back"

    def send(key: str, amount: int = 1200) -> TransferResult:
        return gateway.create_transfer(
            amount=eur(amount),
            destination=account.id,
            idempotency_key=key,
            transfer_group="payout:1",
            metadata={},
        )

    first = send("k1")
    assert send("k1", amount=9999) == first  # the key decides, as Stripe's idempotency does
    other = send("k2")
    assert other.id != first.id
    assert first.balance_transaction is not None
    assert (first.balance_transaction.amount_minor, first.balance_transaction.source) == (-1200, first.id)
    assert {t.id for t in gateway.find_transfers("payout:1")} == {first.id, other.id}
    assert gateway.retrieve_transfer(first.id) == first
    assert gateway.retrieve_transfer("tr_unknown") is None
    window = gateway.list_transfers(
        created_from=first.created - timedelta(seconds=1), created_to=other.created + timedelta(seconds=1)
    )
    assert {t.id for t in window} == {first.id, other.id}
    assert (
        gateway.list_transfers(
            created_from=clock() + timedelta(days=1), created_to=clock() + timedelta(days=2)
        )
        == []
    )
    assert gateway.platform_balance() == {}
    funding = gateway.create_funding(
        amount=eur(5000), reference="project:3", idempotency_key="f1", metadata={}
    )
    assert (funding.status, funding.client_secret, funding.metadata) == (
        "requires_payment_method",
        None,
        {"reference": "project:3"},
    )
    assert gateway.retrieve_funding(funding.id) is None
    assert LocalGateway().find_transfers("payout:1") == []  # another process knows none of it


def test_a_local_payout_whose_outcome_was_lost_is_failed_then_paid_by_the_next_run(
    scope: SessionScope, throttle: Throttle, clock: FrozenClock
) -> None:
    earn(scope, PAYEE, eur(2000))
    payee_account(scope, LocalGateway(), PAYEE)

    def crash(step: str, payout_id: int) -> None:
        if step == "transferred":
            raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError):
        payout_runs.run_payouts(
            scope,
            gateway=LocalGateway(),
            throttle=throttle,
            worker="w1",
            min_amount_minor=1000,
            clock=clock,
            on_step=crash,
        )
    (lost,) = [p.id for p in _payouts(scope)]
    assert _payout(scope, lost).state == "submitting"

    # a day later, in another process: the lookup finds nothing (no money moved) and the run pays the balance
    clock.advance(payouts.DEFAULT_STALE_AFTER + timedelta(minutes=1))
    restarted = LocalGateway()
    first = payout_runs.run_payouts(
        scope, gateway=restarted, throttle=throttle, worker="w2", min_amount_minor=1000, clock=clock
    )
    # when the run planned, the open payout still held the whole balance: nothing to pay yet
    assert (first.plan.payouts, first.plan.skipped, first.requested) == ([], [], [])
    assert first.lookups.failed == [lost]
    assert _hold(scope, lost) == "voided"
    assert available(scope, PAYEE) == 2000

    second = payout_runs.run_payouts(
        scope, gateway=restarted, throttle=throttle, worker="w2", min_amount_minor=1000, clock=clock
    )
    (paid,) = second.submit.settled
    assert paid != lost
    assert _hold(scope, paid) == "posted"
    assert available(scope, PAYEE) == 0
    assert _posted(scope, payouts.GATEWAY_BALANCE_ACCOUNT) == -2000
    assert integrity(scope) == []


def _payouts(scope: SessionScope) -> list[Payout]:
    with scope() as session:
        return list(session.scalars(select(Payout).order_by(Payout.id)))
