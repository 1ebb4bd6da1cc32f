"""The finance console: payouts of a period, totals, reconciliation and the CSV downloads."""

from __future__ import annotations

import csv
import io

from marketplace.billing.services import payable_account_code
from marketplace.db import utcnow
from marketplace.quality.policy import review_submitted_label
from marketplace.work import decisions, leasing
from payments import payouts
from payments.gateways.local import LocalGateway
from tests.web.conftest import World


def _paid_annotator(db_session, world: World) -> None:
    """One accepted label (€0.50 payable) and a requested payout of it."""
    outcome = leasing.lease_next_assignment(db_session, annotator=world.annotator, now=utcnow(), fee_bps=2000)
    assert outcome.assignment is not None
    label, _ = decisions.submit_label(
        db_session,
        annotator=world.annotator,
        assignment_id=outcome.assignment.id,
        value="neutral",
        idempotency_key=None,
        now=utcnow(),
    )
    review_submitted_label(db_session, label=label, now=utcnow())
    decisions.accept_label(db_session, label=label, now=utcnow())
    payee = payable_account_code(world.annotator.id).removesuffix(":payable")
    payouts.open_payout_account(
        db_session, gateway=LocalGateway(), reference=payee, country="DE", currency="EUR"
    )
    plan = payouts.plan_payouts(db_session, min_amount_minor=1)
    assert len(plan.payouts) == 1
    assert payouts.request_payout(db_session, planned=plan.payouts[0], min_amount_minor=1) is not None
    db_session.commit()


def test_finance_sees_payouts_totals_and_reconciliation(world: World, as_user, db_session) -> None:
    _paid_annotator(db_session, world)
    page = as_user(world.platform_finance).get("/finance").get_data(as_text=True)
    assert world.annotator.display_name in page
    assert "€0.50" in page
    assert "requested" in page
    assert "Reconciliation" in page
    assert "Download payouts (CSV)" in page


def test_payouts_csv_has_one_row_per_payout(world: World, as_user, db_session) -> None:
    _paid_annotator(db_session, world)
    today = utcnow().date().isoformat()
    response = as_user(world.platform_finance).get(f"/finance/payouts.csv?since={today}&until={today}")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert f"payouts-{today}-{today}.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 1
    assert rows[0]["amount_minor"] == "50"
    assert rows[0]["amount"] == "€0.50"
    assert rows[0]["payee"] == f"annotator:{world.annotator.id}"


def test_reconciliation_csv_downloads(world: World, as_user, db_session) -> None:
    _paid_annotator(db_session, world)
    response = as_user(world.platform_finance).get("/finance/reconciliation.csv")
    assert response.status_code == 200
    assert response.get_data(as_text=True).count("\n") == 2  # the header and the payout


def test_a_bad_period_is_refused_with_a_page(world: World, as_user) -> None:
    client = as_user(world.platform_finance)
    assert client.get("/finance?since=2025-02-01&until=2025-01-01").status_code == 422
    assert client.get("/finance?since=yesterday").status_code == 422
    assert client.get("/finance?since=2020-01-01&until=2025-01-01").status_code == 422
    empty = client.get("/finance?since=2020-01-01&until=2020-01-31").get_data(as_text=True)
    assert "No payouts in this period." in empty
