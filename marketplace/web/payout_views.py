"""The annotator's payouts: the payout account and its onboarding, and the payouts sent so far.

The same services as /api/v1/annotators/me/payout-account and /api/v1/me/payouts: `payments.payouts` opens the
account at the gateway and asks it for an onboarding link. With the local gateway the account is ready at once
and the link leads straight back here; with Stripe the link is Stripe's hosted onboarding.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import marshmallow as ma
from flask import current_app, make_response, redirect, render_template, request
from sqlalchemy import select
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_annotator, current_user
from marketplace.billing.earnings import annotator_earnings
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.payouts.api import PayoutAccountRequest
from marketplace.payouts.services import get_gateway, open_account_and_onboard, payee_reference
from marketplace.web.access import WORK, area_required, reload_user_on_retry
from marketplace.web.blueprint import ONBOARDING_ORIGINS, bp, content_security_policy, id_arg
from marketplace.web.forms import PayoutAccountForm
from payments import payouts
from payments.money import Money
from payments.payout_models import Payout

PAYOUTS_PAGE = 50
#: a payout's state as the payee reads it
PAYOUT_STATES = {
    "requested": ("On its way", "requested by the last payout run"),
    "submitting": ("On its way", "being sent"),
    "needs_lookup": ("On its way", "being checked with the payment provider"),
    "settled": ("Paid", "sent to your payout account"),
    "failed": ("Failed", "the money is back in your balance and goes out with the next payout"),
    "reversed": ("Reversed", "taken back by the payment provider; the money is back in your balance"),
}
ONBOARDING_NOTES = {
    "done": "Welcome back. Your payout account is below.",
    "expired": "The onboarding link expired before it was finished: continue onboarding for a fresh one.",
}


def _page(form: PayoutAccountForm, *, status: int = 200) -> Response:
    session = get_session()
    annotator = current_annotator(session)
    reference = payee_reference(annotator.id)
    account = payouts.get_payout_account(session, reference=reference)
    before = id_arg("before")
    stmt = select(Payout).where(Payout.payee_reference == reference)
    if before:
        stmt = stmt.where(Payout.id < before)
    rows = list(session.scalars(stmt.order_by(Payout.id.desc()).limit(PAYOUTS_PAGE + 1)))
    more = len(rows) > PAYOUTS_PAGE
    rows = rows[:PAYOUTS_PAGE]
    now = utcnow()
    # The balances do not depend on the period asked for; the shortest one reads the fewest labels.
    balances = annotator_earnings(
        session, annotator_id=annotator.id, since=now - timedelta(days=1), until=now, label_limit=0
    )
    gateway = get_gateway()
    response = make_response(
        render_template(
            "web/work/payouts.html",
            annotator=annotator,
            account=account,
            gateway=gateway.name,
            form=form,
            payouts=rows,
            states=PAYOUT_STATES,
            next_before=rows[-1].id if more else None,
            balances=balances,
            minimum=Money(int(current_app.config["PAYOUT_MIN_AMOUNT_MINOR"]), annotator.currency),
            note=ONBOARDING_NOTES.get(request.args.get("onboarding", "")),
            now=now,
        ),
        status,
    )
    origin = ONBOARDING_ORIGINS.get(gateway.name)
    if origin is not None:
        response.headers["Content-Security-Policy"] = content_security_policy(form_redirect_to=origin)
    return response


@bp.get("/work/payouts")
@area_required(WORK)
def my_payouts() -> Response:
    """My payout account (with its onboarding action) and my payouts, newest first (keyset pages)."""
    return _page(PayoutAccountForm())


@bp.post("/work/payouts/account")
@area_required(WORK)
@retry_transaction
@reload_user_on_retry
def payout_account() -> Response:
    """Open my payout account (or reuse it) and go to a fresh onboarding link, as the API's POST does."""
    session = get_session()
    annotator = current_annotator(session)
    form = PayoutAccountForm()
    if not form.validate_on_submit():
        form.country.errors = [*form.country.errors, "The form expired; please send it again."]
        return _page(form, status=400)
    reference = payee_reference(annotator.id)
    account = payouts.get_payout_account(session, reference=reference)
    country = (form.country.data or "").strip().upper()
    if account is None:
        problem = _country_problem(country)
        if problem is not None:
            form.country.errors = [*form.country.errors, problem]
            return _page(form, status=422)
    else:
        country = account.country  # continuing: the page asks no country once the account exists
    _, link = open_account_and_onboard(
        session, profile=annotator, email=current_user().email, country=country
    )
    return redirect(link.url, code=303)


def _country_problem(country: str) -> str | None:
    """What is wrong with the country, as the API's schema sees it (None: nothing)."""
    if not country:
        return "Say where your bank account is: its two-letter country code, such as DE or FR."
    try:
        PayoutAccountRequest().load({"country": country})
    except ma.ValidationError as exc:
        messages: Any = exc.messages
        return " ".join(messages.get("country", [])) if isinstance(messages, dict) else str(messages)
    return None
