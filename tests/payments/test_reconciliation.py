"""Reconciliation: every kind of discrepancy injected (in the fake Stripe's books or in ours) is reported, and the
clean rows are not."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from payments import payout_outcomes, payout_runs, payouts, reconciliation
from payments.gateways.local import LocalGateway
from payments.gateways.stripe import StripeGateway
from payments.money import Money
from payments.payout_models import Payout
from payments.payout_runs import SessionScope
from payments.reconciliation import CSV_COLUMNS, MatchStatus
from payments.throttle import Throttle
from tests.payments.conftest import FrozenClock, earn, payee_account
from tests.payments.fake_stripe import FakeStripe

AMOUNTS = {
    "matched": 1100,
    "missing_in_stripe": 1200,
    "amount_mismatch": 1300,
    "duplicate": 1400,
    "reversed": 1500,
    "unbooked_reversal": 1600,
    "declined": 1700,
}


def _report(scope: SessionScope, gateway, clock: FrozenClock) -> reconciliation.ReconciliationReport:  # type: ignore[no-untyped-def]
    with scope() as session:
        return reconciliation.reconcile(
            session,
            gateway=gateway,
            start=clock() - timedelta(days=3),
            end=clock() + timedelta(days=1),
            now=clock(),
        )


def _request_only(scope: SessionScope, payee: str) -> int:
    with scope() as session:
        plan = payouts.plan_payouts(session, min_amount_minor=1000)
        (planned,) = [p for p in plan.payouts if p.payee_reference == payee]
        payout = payouts.request_payout(session, planned=planned, min_amount_minor=1000)
        assert payout is not None
        return payout.id


def test_every_discrepancy_is_reported_and_clean_rows_are_not(
    scope: SessionScope,
    stripe_gateway: StripeGateway,
    fake_stripe: FakeStripe,
    throttle: Throttle,
    clock: FrozenClock,
) -> None:
    fake_stripe.fund("eur", 100_000)
    payee_of = {name: f"annotator:{i}" for i, name in enumerate(AMOUNTS, start=1)}
    for name, amount in AMOUNTS.items():
        earn(scope, payee_of[name], Money(amount, "EUR"))
        destination = payee_account(scope, stripe_gateway, payee_of[name], fake=fake_stripe)
        if name == "declined":
            fake_stripe.enable_account(destination, payouts_enabled=False)  # Stripe will refuse the transfer
    payout_runs.run_payouts(
        scope,
        gateway=stripe_gateway,
        throttle=throttle,
        min_amount_minor=1000,
        requested_by="test",
        worker="w",
        clock=clock,
    )
    with scope() as session:
        rows = {p.payee_reference: p for p in session.scalars(select(Payout).order_by(Payout.id))}
    by_name = {name: rows[payee_of[name]] for name in AMOUNTS}
    assert by_name["declined"].state == "failed"

    # injected discrepancies, one per kind
    fake_stripe.transfers.pop(by_name["missing_in_stripe"].transfer_id or "")
    fake_stripe.transfers[by_name["amount_mismatch"].transfer_id or ""]["amount"] += 1
    with fake_stripe.lock:
        extra = fake_stripe._create_transfer(
            {
                "amount": str(AMOUNTS["duplicate"]),
                "currency": "eur",
                "destination": by_name["duplicate"].destination,
                "transfer_group": by_name["duplicate"].transfer_group,
            }
        )
        orphan = fake_stripe._create_transfer(
            {"amount": "999", "currency": "eur", "destination": by_name["matched"].destination}
        )
    fake_stripe.reverse(by_name["reversed"].transfer_id or "", 300)
    with scope() as session:
        payout_outcomes.sync_transfer(
            session,
            transfer=stripe_gateway.retrieve_transfer(by_name["reversed"].transfer_id or ""),
            now=clock(),
        )
    fake_stripe.reverse(by_name["unbooked_reversal"].transfer_id or "", 400)  # no webhook reached us
    earn(scope, "annotator:90", Money(5000, "EUR"))
    earn(scope, "annotator:91", Money(5000, "EUR"))
    payee_account(scope, stripe_gateway, "annotator:90", fake=fake_stripe)
    payee_account(scope, stripe_gateway, "annotator:91", fake=fake_stripe)
    stuck = _request_only(scope, "annotator:90")
    young = _request_only(scope, "annotator:91")
    with scope() as session:
        session.execute(
            update(Payout).where(Payout.id == stuck).values(created_at=clock() - timedelta(days=2))
        )

    report = _report(scope, stripe_gateway, clock)

    status = {row.payout_id: row.status for row in report.rows}
    assert status == {
        by_name["matched"].id: MatchStatus.MATCHED,
        by_name["missing_in_stripe"].id: MatchStatus.MISSING_IN_STRIPE,
        by_name["amount_mismatch"].id: MatchStatus.AMOUNT_MISMATCH,
        by_name["duplicate"].id: MatchStatus.DUPLICATE_TRANSFER,
        by_name["reversed"].id: MatchStatus.REVERSED,
        by_name["unbooked_reversal"].id: MatchStatus.MISSING_IN_LEDGER,
        by_name["declined"].id: MatchStatus.MATCHED,
        stuck: MatchStatus.PENDING_PAST_DUE,
        young: MatchStatus.IN_FLIGHT,
        None: MatchStatus.MISSING_IN_LEDGER,
    }
    (unknown,) = [row for row in report.rows if row.payout_id is None]
    assert (unknown.stripe_transfer_id, unknown.stripe_amount_minor) == (orphan["id"], 999)
    flagged = {row.payout_id for row in report.discrepancies}
    assert flagged == {
        by_name["missing_in_stripe"].id,
        by_name["amount_mismatch"].id,
        by_name["duplicate"].id,
        by_name["unbooked_reversal"].id,
        stuck,
        None,
    }
    duplicate_row = next(r for r in report.rows if r.payout_id == by_name["duplicate"].id)
    assert extra["id"] in duplicate_row.notes
    matched_row = next(r for r in report.rows if r.payout_id == by_name["matched"].id)
    assert matched_row.stripe_transfer_id == by_name["matched"].transfer_id
    assert matched_row.ledger_transaction_ids == tuple(
        sorted(
            [
                by_name["matched"].hold_id,
                by_name["matched"].settle_transaction_id,
                by_name["matched"].balance_ledger_transaction_id,
            ]
        )
    )

    # the ledger paid every settled payout in full, less the one booked reversal
    settled = [n for n in AMOUNTS if n != "declined"]
    ledger_total = sum(AMOUNTS[n] for n in settled) - 300
    stripe_total = (
        sum(AMOUNTS[n] for n in settled if n != "missing_in_stripe")
        + 1  # the edited amount
        + AMOUNTS["duplicate"]  # the second transfer of the duplicate
        - 300
        - 400
        + 999  # the transfer of no payout
    )
    (eur,) = report.totals
    assert (eur.currency, eur.ledger_minor, eur.stripe_minor) == ("EUR", ledger_total, stripe_total)
    assert eur.difference_minor == stripe_total - ledger_total


def test_the_csv_export_has_one_line_per_row_and_the_documented_columns(
    scope: SessionScope, throttle: Throttle, clock: FrozenClock
) -> None:
    gateway = LocalGateway()
    earn(scope, "annotator:1", Money(2500, "EUR"))
    payee_account(scope, gateway, "annotator:1")
    run = payout_runs.run_payouts(
        scope,
        gateway=gateway,
        throttle=throttle,
        min_amount_minor=1000,
        requested_by="t",
        worker="w",
        clock=clock,
    )
    report = _report(scope, gateway, clock)
    stream = io.StringIO()

    reconciliation.write_csv(report, stream)

    lines = list(csv.reader(io.StringIO(stream.getvalue())))
    assert (
        tuple(lines[0])
        == CSV_COLUMNS
        == (
            "payout_id",
            "payee",
            "amount_minor",
            "currency",
            "idempotency_key",
            "transfer_group",
            "state",
            "stripe_transfer_id",
            "stripe_amount_minor",
            "stripe_amount_reversed_minor",
            "ledger_transaction_ids",
            "status",
            "notes",
        )
    )
    (payout_id,) = run.requested
    assert len(lines) == 2
    row = dict(zip(CSV_COLUMNS, lines[1], strict=True))
    assert row["payout_id"] == str(payout_id)
    assert (row["payee"], row["amount_minor"], row["currency"]) == ("annotator:1", "2500", "EUR")
    assert row["idempotency_key"] == f"payout:{payout_id}:transfer:v1"
    assert (row["state"], row["status"]) == ("settled", "matched")
    assert len(row["ledger_transaction_ids"].split(";")) == 3
    assert row["stripe_transfer_id"] == ""  # the local gateway keeps no outside record
    assert [(t.currency, t.ledger_minor, t.stripe_minor) for t in report.totals] == [("EUR", 2500, 2500)]


def test_a_period_must_be_ordered(scope: SessionScope, clock: FrozenClock) -> None:
    with scope() as session, pytest.raises(ValueError, match="before its end"):
        reconciliation.reconcile(session, gateway=LocalGateway(), start=clock(), end=clock(), now=clock())
