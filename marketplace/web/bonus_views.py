"""The manager's bonuses page of a project: the bonuses given, newest first, and a form to give one.

As on the funding page, the form is read as people write it (the amount as a decimal in the project's currency),
turned into exactly what `POST /api/v1/projects/<id>/bonuses` would send, checked by the API's own schema
(`BonusIn`) and handed to the same service (`grant_bonus`). The annotator is chosen from the people who labelled
in the project, the only ones the service pays; the form carries its own key, so a double submit pays once.
Admins and managers give bonuses; finance, who reads the budget, reads the list.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_user, is_platform_admin, organisation_role, project_for
from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.api import BonusIn
from marketplace.billing.bonuses import MAX_REASON, grant_bonus
from marketplace.billing.models import Bonus
from marketplace.billing.services import project_budget
from marketplace.db import get_session, retry_transaction
from marketplace.errors import Conflict, InvalidInput
from marketplace.projects.models import Project
from marketplace.web.access import (
    BUDGET_READERS,
    PROJECT_MANAGERS,
    PROJECTS,
    area_required,
    reload_user_on_retry,
)
from marketplace.web.blueprint import bp, parse_id
from marketplace.web.formatting import format_count, parse_amount
from marketplace.web.forms import BonusForm
from marketplace.web.project_setup_views import money_range_message
from marketplace.work.models import Label
from payments.errors import IdempotencyConflict, InsufficientFunds
from payments.money import Money, fee_for

#: the latest bonuses the page lists (the API pages through all of them)
BONUSES_SHOWN = 200
_CHOOSE_WORKER = "Choose someone who labelled in this project: only they can get a bonus."
_EXPIRED = "The form expired; please send it again."


@dataclass(frozen=True, slots=True)
class GivenBonus:
    """A row of the page's list."""

    bonus: Bonus
    annotator: str
    #: the user who gave it (None once their account is gone)
    granted_by: str | None
    amount: Money
    fee: Money


def _workers(session: Session, project_id: int) -> list[tuple[str, str]]:
    """(annotator id, 'Name (12 labels)') of everyone who labelled in the project, by name: the select's options.
    Two people of the same name are told apart by their number."""
    labels = (
        select(Label.annotator_id, func.count().label("labels"))
        .where(Label.project_id == project_id)
        .group_by(Label.annotator_id)
        .subquery()
    )
    rows = session.execute(
        select(AnnotatorProfile.id, AnnotatorProfile.display_name, labels.c.labels)
        .join(labels, labels.c.annotator_id == AnnotatorProfile.id)
        .order_by(func.lower(AnnotatorProfile.display_name), AnnotatorProfile.id)
    ).tuples()
    workers = list(rows)
    names = Counter(name for _, name, _ in workers)
    return [
        (
            str(annotator_id),
            f"{name} ({'#' + str(annotator_id) + ', ' if names[name] > 1 else ''}"
            f"{format_count(int(count), 'label')})",
        )
        for annotator_id, name, count in workers
    ]


def _given(session: Session, project_id: int) -> tuple[list[GivenBonus], int]:
    """The project's latest bonuses, newest first, and how many it has in all."""
    rows = session.execute(
        select(Bonus, AnnotatorProfile.display_name, User.name)
        .join(AnnotatorProfile, AnnotatorProfile.id == Bonus.annotator_id)
        .outerjoin(User, User.id == Bonus.granted_by_id)
        .where(Bonus.project_id == project_id)
        .order_by(Bonus.id.desc())
        .limit(BONUSES_SHOWN)
    ).tuples()
    given = [
        GivenBonus(
            bonus=bonus,
            annotator=annotator,
            granted_by=giver,
            amount=Money(bonus.amount_minor, bonus.currency),
            fee=Money(bonus.fee_minor, bonus.currency),
        )
        for bonus, annotator, giver in rows
    ]
    total = session.scalar(select(func.count()).select_from(Bonus).where(Bonus.project_id == project_id))
    return given, int(total or 0)


def _can_give(session: Session, project: Project) -> bool:
    user = current_user()
    return (
        is_platform_admin(user)
        or organisation_role(session, user, project.organisation_id) in PROJECT_MANAGERS
    )


def _lines(text: str | None) -> str:
    # browsers send a textarea's line breaks as CRLF; the annotator reads the reason as written
    return (text or "").replace("\r\n", "\n").strip()


def _bonus_fields(form: BonusForm, project: Project) -> dict[str, Any] | None:
    """What the API's `BonusIn` loads from the form, checked by that schema; None (errors on the form) if wrong."""
    annotator_id = parse_id(form.annotator_id.data)
    if annotator_id is None:
        form.annotator_id.errors = [*form.annotator_id.errors, _CHOOSE_WORKER]
    try:
        amount = parse_amount(form.amount.data, project.currency)
    except ValueError as exc:
        form.amount.errors = [*form.amount.errors, str(exc)]
        return None
    if annotator_id is None:
        return None
    schema = BonusIn()
    try:
        loaded: dict[str, Any] = schema.load(
            {
                "annotator_id": annotator_id,
                "amount_minor": amount.amount,
                "currency": project.currency,
                "reason": _lines(form.reason.data),
                "idempotency_key": form.bonus_key.data,
            }
        )
    except ma.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {}
        if "annotator_id" in messages:
            form.annotator_id.errors = [*form.annotator_id.errors, _CHOOSE_WORKER]
        if "amount_minor" in messages:
            form.amount.errors = [
                *form.amount.errors,
                money_range_message(schema, "amount_minor", project.currency),
            ]
        if "reason" in messages:
            form.reason.errors = [*form.reason.errors, f"A reason has at most {MAX_REASON:,} characters."]
        if "idempotency_key" in messages:
            form.form_errors.append(_EXPIRED)
            form.bonus_key.data = None
        return None
    return loaded


def _service_refusal(form: BonusForm, exc: InvalidInput) -> None:
    """The service's refusal on the field it is about, in the form's words."""
    details = exc.details if isinstance(exc.details, dict) else {}
    if exc.code == "not_a_worker" or "annotator_id" in details:
        form.annotator_id.errors = [*form.annotator_id.errors, _CHOOSE_WORKER]
    elif "reason" in details:
        form.reason.errors = [*form.reason.errors, exc.message]
    elif "amount_minor" in details or "currency" in details:
        form.amount.errors = [*form.amount.errors, exc.message]
    else:
        form.form_errors.append(exc.message)


def _fee_percent(fee_bps: int) -> str:
    """2000 basis points → '20%', 250 → '2.5%'."""
    return f"{Decimal(fee_bps) / 100:f}%"


@bp.route("/projects/<int:project_id>/bonuses", methods=["GET", "POST"])
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def project_bonuses(project_id: int) -> Response | tuple[str, int]:
    """The project's bonuses, newest first; its admins and managers give one (`grant_bonus`), once per form."""
    session = get_session()
    giving = request.method == "POST"
    found = project_for(session, project_id, *(PROJECT_MANAGERS if giving else BUDGET_READERS))
    fee_bps = int(current_app.config["PLATFORM_FEE_BPS"])
    form = BonusForm()
    status = 200
    if form.validate_on_submit():
        fields = _bonus_fields(form, found)
        if fields is None:
            status = 422
        else:
            amount = Money.parse_minor(fields["amount_minor"], fields["currency"])
            try:
                # a refusal found half-way must leave nothing of the bonus for the page below
                with session.begin_nested():
                    granted = grant_bonus(
                        session,
                        project=found,
                        annotator_id=fields["annotator_id"],
                        amount=amount,
                        reason=fields["reason"],
                        client_key=fields["idempotency_key"],
                        granted_by_id=current_user().id,
                        fee_bps=fee_bps,
                    )
            except InsufficientFunds:
                available = project_budget(session, project=found).available
                cost = amount + fee_for(amount, fee_bps)
                form.amount.errors = [
                    *form.amount.errors,
                    f"The budget has {available.format()} available and this bonus costs it {cost.format()} "
                    "with the platform's fee: fund the budget or give less.",
                ]
                status = 409
            except (Conflict, IdempotencyConflict) as exc:
                if isinstance(exc, Conflict) and exc.code != "idempotency_conflict":
                    form.form_errors.append(exc.message)
                else:
                    form.form_errors.append(
                        "This form already gave a bonus to another annotator, of another amount or for another "
                        "reason; nothing more was paid. The form below is a new one: send it to give this bonus too."
                    )
                    form.bonus_key.data = None
                status = 409
            except InvalidInput as exc:
                _service_refusal(form, exc)
                status = 422
            else:
                bonus = granted.bonus
                if not granted.created:
                    flash("That bonus was already given: nothing was paid twice.", "info")
                else:
                    name = session.get_one(AnnotatorProfile, bonus.annotator_id).display_name
                    budget = project_budget(session, project=found)
                    paid = Money(bonus.amount_minor + bonus.fee_minor, bonus.currency)
                    flash(
                        f"Gave {name} a bonus of {amount.format()}; the budget paid {paid.format()} with the "
                        f"platform's fee and has {budget.available.format()} available.",
                        "success",
                    )
                return redirect(url_for("web.project_bonuses", project_id=found.id))
    elif form.is_submitted():
        if form.bonus_key.errors:
            form.form_errors.append(_EXPIRED)
        status = 422
    if not form.bonus_key.data:
        form.bonus_key.data = uuid.uuid4().hex
    given, count = _given(session, found.id)
    return (
        render_template(
            "web/projects/bonuses.html",
            project=found,
            form=form,
            can_give=_can_give(session, found),
            workers=_workers(session, found.id),
            given=given,
            count=count,
            budget=project_budget(session, project=found),
            fee_percent=_fee_percent(fee_bps),
            max_reason=MAX_REASON,
        ),
        status,
    )
