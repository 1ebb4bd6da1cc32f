"""The manager's write pages for a project's setup: a new project, and money for its budget.

The forms are read as people write them (amounts as decimals in the project's currency, the lease in minutes,
choices one per line), turned into exactly what the API would send, checked by the API's own schemas
(`ProjectCreate`, `FundingIn`) and handed to the same services (`create_project`, `fund_project`). So the web
and the API accept and refuse the same things; this module only says it in the form's words and units.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from marshmallow import validate
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import Field

from marketplace.accounts.auth import current_user, project_for
from marketplace.accounts.models import Organisation
from marketplace.annotators.models import Skill
from marketplace.billing.api import FundingIn
from marketplace.billing.services import fund_project, label_cost, project_budget, recorded_funding
from marketplace.db import get_session, retry_transaction
from marketplace.errors import Forbidden, InvalidInput
from marketplace.projects.api import ProjectCreate
from marketplace.projects.models import Project
from marketplace.projects.services import REVIEW_DEFAULTS, create_project
from marketplace.web.access import (
    PROJECT_MANAGERS,
    PROJECTS,
    area_required,
    managed_organisations,
    reload_user_on_retry,
)
from marketplace.web.blueprint import bp
from marketplace.web.formatting import parse_amount
from marketplace.web.forms import (
    NEW_PROJECT_STATUSES,
    REVIEW_POLICIES,
    SCHEMA_KINDS,
    FundingForm,
    NewProjectForm,
)
from payments.errors import IdempotencyConflict
from payments.money import ISO_CURRENCIES, Money

#: the currencies offered first in the currency list; every other ISO code follows
COMMON_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD")
#: review parameters offered by the form, and whether the service wants them as float or int
REVIEW_PARAMS = {
    "gold_rate": float,
    "agreement_threshold": float,
    "max_extra_labels": int,
    "review_window_hours": int,
}
#: API field → form field, where their names differ
_FORM_FIELD = {"pay_per_label_minor": "pay_per_label", "lease_seconds": "lease_minutes"}


def schema_range(schema: ma.Schema, name: str) -> validate.Range:
    """The range the API's schema allows for `name` (the one place that rule is written)."""
    for validator in schema.fields[name].validators:
        if isinstance(validator, validate.Range):
            return validator
    raise LookupError(f"{type(schema).__name__}.{name} has no range")


def money_range_message(schema: ma.Schema, name: str, currency: str) -> str:
    """'Enter an amount from €0.00 to …': the schema's range of minor units, said in the currency."""
    bounds = schema_range(schema, name)
    low, high = Money(int(bounds.min or 0), currency), Money(int(bounds.max or 0), currency)
    return f"Enter an amount from {low.format()} to {high.format()}."


def lease_range_message(schema: ma.Schema) -> str:
    """'Enter 1 to 10,080 minutes.': the schema's range of `lease_seconds`, in the form's minutes."""
    bounds = schema_range(schema, "lease_seconds")
    return f"Enter {int(bounds.min or 0) // 60:,} to {int(bounds.max or 0) // 60:,} minutes."


def schema_errors(
    form: FlaskForm,
    messages: dict[str, Any],
    schema: ma.Schema,
    currency: str,
    form_field: Mapping[str, str],
) -> None:
    """Put the API schema's refusals on the form's fields (`form_field`: API name → field, where they differ),
    in the form's units: amounts in the currency, the lease in minutes."""
    for name, problems in messages.items():
        field = getattr(form, form_field.get(name, name), None)
        if field is None:
            form.form_errors.append(f"{name}: {' '.join(map(str, problems))}")
            continue
        if name.endswith("_minor"):
            text = money_range_message(schema, name, currency)
        elif name == "lease_seconds":
            text = lease_range_message(schema)
        elif name == "webhook_url":
            text = "Enter a full address starting with https:// or http://, or leave it empty."
        else:
            text = " ".join(str(p) for p in (problems if isinstance(problems, list) else [problems]))
        field.errors = [*field.errors, text]


def service_error(form: FlaskForm, exc: InvalidInput, fields: Mapping[str, Field]) -> None:
    """Put the service's refusal on the field its details name (`fields`: the API's names → the form's fields),
    else on the form."""
    details = exc.details if isinstance(exc.details, dict) else {}
    for name, field in fields.items():
        if name in details:
            field.errors = [*field.errors, without_api_name(exc.message, name)]
            return
    form.form_errors.append(exc.message)


def _service_fields(form: NewProjectForm) -> dict[str, Field]:
    return {
        "label_schema.choices": form.choices,
        "label_schema.min": form.choice_min,
        "label_schema.max_length": form.text_max_length,
        "label_schema.type": form.schema_type,
        **{f"review_params.{name}": getattr(form, name) for name in REVIEW_PARAMS},
        "skill": form.skill,
        "deadline": form.deadline,
        "labels_per_item": form.labels_per_item,
    }


def without_api_name(message: str, name: str) -> str:
    """'label_schema.choices must be …' → 'Must be …' (said under the field itself); 'label_schema.min and max
    must be …' → 'Min and max must be …'."""
    if message.startswith(f"{name} "):
        rest = message.removeprefix(f"{name} ")
        if rest.startswith("must "):
            return rest[:1].upper() + rest[1:]
    text = message.split(".", 1)[1] if message.startswith(("label_schema.", "review_params.")) else message
    return text[:1].upper() + text[1:]


def _label_schema(form: NewProjectForm) -> dict[str, Any]:
    """The label schema the form describes (the service checks and completes it)."""
    kind = form.schema_type.data
    if kind == "text":
        schema: dict[str, Any] = {"type": kind}
        if form.text_max_length.data is not None:
            schema["max_length"] = form.text_max_length.data
        return schema
    lines = (form.choices.data or "").splitlines()
    schema = {"type": kind, "choices": [line.strip() for line in lines if line.strip()]}
    if kind == "multi_choice":
        if form.choice_min.data is not None:
            schema["min"] = form.choice_min.data
        if form.choice_max.data is not None:
            schema["max"] = form.choice_max.data
    return schema


def _review_params(form: NewProjectForm) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, kind in REVIEW_PARAMS.items():
        value = getattr(form, name).data
        if value is not None:
            params[name] = kind(value)
    return params


def _project_fields(form: NewProjectForm) -> dict[str, Any] | None:
    """The API's fields for `create_project`, checked by its schema; None (and errors on the form) if wrong."""
    currency = (form.currency.data or "").strip().upper()
    if currency not in ISO_CURRENCIES:
        form.currency.errors = [*form.currency.errors, "Choose a currency from the list."]
        return None
    try:
        pay = parse_amount(form.pay_per_label.data, currency)
    except ValueError as exc:
        form.pay_per_label.errors = [*form.pay_per_label.errors, str(exc)]
        return None
    assert form.deadline.data is not None  # InputRequired
    body: dict[str, Any] = {
        "name": (form.name.data or "").strip(),
        "instructions": form.instructions.data or "",
        "label_schema": _label_schema(form),
        "skill": form.skill.data,
        "min_level": form.min_level.data,
        "pay_per_label_minor": pay.amount,
        "currency": currency,
        "labels_per_item": form.labels_per_item.data,
        "review_policy": form.review_policy.data,
        "review_params": _review_params(form),
        # the form's deadline is a UTC wall time, as its label says
        "deadline": form.deadline.data.replace(tzinfo=UTC).isoformat(),
        "status": form.status.data,
    }
    if form.lease_minutes.data is not None:
        body["lease_seconds"] = form.lease_minutes.data * 60
    schema = ProjectCreate()
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ma.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
        schema_errors(form, messages, schema, currency, _FORM_FIELD)
        return None
    return loaded


def _organisation_for(form: NewProjectForm, organisations: list[Organisation]) -> int | None:
    chosen = form.organisation_id.data or ""
    for organisation in organisations:
        if str(organisation.id) == chosen:
            return organisation.id
    form.organisation_id.errors = [*form.organisation_id.errors, "Choose one of your organisations."]
    return None


def _currency_options() -> list[str]:
    return [*COMMON_CURRENCIES, *sorted(ISO_CURRENCIES - set(COMMON_CURRENCIES))]


@bp.route("/projects/new", methods=["GET", "POST"])
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def new_project() -> Response | tuple[str, int]:
    """A new project in an organisation I administer or manage, through `create_project`."""
    session = get_session()
    user = current_user()
    organisations = managed_organisations(session, user)
    if not organisations:
        raise Forbidden("Only an organisation's admins and managers create projects.", code="no_access")
    form = NewProjectForm(
        organisation_id=str(organisations[0].id),
        **{name: Decimal(str(REVIEW_DEFAULTS[name])) for name in ("gold_rate", "agreement_threshold")},
        **{name: REVIEW_DEFAULTS[name] for name in ("max_extra_labels", "review_window_hours")},
    )
    status = 200
    if form.validate_on_submit():
        organisation_id = _organisation_for(form, organisations)
        fields = _project_fields(form) if organisation_id is not None else None
        if organisation_id is not None and fields is not None:
            try:
                project = create_project(
                    session, organisation_id=organisation_id, created_by_id=user.id, fields=fields
                )
            except InvalidInput as exc:
                service_error(form, exc, _service_fields(form))
            else:
                flash(
                    f"Project “{project.name}” created. Next: import its tasks and fund its budget.",
                    "success",
                )
                return redirect(url_for("web.project", project_id=project.id))
        status = 422
    elif form.is_submitted():
        status = 422
    skills = list(session.scalars(select(Skill.name).order_by(Skill.name)))
    return (
        render_template(
            "web/projects/new.html",
            form=form,
            organisation_options=[(str(o.id), o.name) for o in organisations],
            skill_options=[(name, name) for name in skills],
            currency_options=[(code, code) for code in _currency_options()],
            kinds=SCHEMA_KINDS,
            policies=REVIEW_POLICIES,
            statuses=NEW_PROJECT_STATUSES,
        ),
        status,
    )


def _stripe_funding() -> bool:
    # As the API: with Stripe, money reaches a budget only through a payment Stripe confirms.
    return current_app.config.get("PAYOUT_GATEWAY") == "stripe"


@bp.route("/projects/<int:project_id>/funding", methods=["GET", "POST"])
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def fund(project_id: int) -> Response | tuple[str, int]:
    """Add money to the project's budget (`fund_project`); the form's key makes a double submit fund once."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS)
    form = FundingForm()
    status = 200
    if _stripe_funding():
        status = 409 if form.is_submitted() else 200
    elif form.validate_on_submit():
        amount = _funding_amount(form, found)
        if amount is not None:
            key = form.funding_key.data or ""
            repeated = recorded_funding(session, project=found, idempotency_key=key) is not None
            try:
                fund_project(session, project=found, amount=amount, idempotency_key=key)
            except IdempotencyConflict:
                form.amount.errors = [
                    *form.amount.errors,
                    "This form already funded the project with another amount; the form below is a new one.",
                ]
                form.funding_key.data = None
                status = 409
            else:
                budget = project_budget(session, project=found)
                if repeated:
                    flash("That funding was already recorded: nothing was added twice.", "info")
                else:
                    flash(
                        f"Added {amount.format()} to the budget; {budget.available.format()} is available.",
                        "success",
                    )
                return redirect(url_for("web.project", project_id=found.id))
        else:
            status = 422
    elif form.is_submitted():
        status = 422
    if not form.funding_key.data:
        form.funding_key.data = uuid.uuid4().hex
    fee_bps = int(current_app.config["PLATFORM_FEE_BPS"])
    return (
        render_template(
            "web/projects/funding.html",
            project=found,
            form=form,
            budget=project_budget(session, project=found),
            label_cost=label_cost(found, fee_bps=fee_bps),
            stripe=_stripe_funding(),
        ),
        status,
    )


def _funding_amount(form: FundingForm, project: Project) -> Money | None:
    """The amount in the project's currency, checked by the API's funding schema; None (errors on the form)."""
    try:
        amount = parse_amount(form.amount.data, project.currency)
    except ValueError as exc:
        form.amount.errors = [*form.amount.errors, str(exc)]
        return None
    schema = FundingIn()
    try:
        schema.load(
            {
                "amount_minor": amount.amount,
                "currency": project.currency,
                "idempotency_key": form.funding_key.data,
            }
        )
    except ma.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {}
        if "amount_minor" in messages:
            form.amount.errors = [
                *form.amount.errors,
                money_range_message(schema, "amount_minor", project.currency),
            ]
        if "idempotency_key" in messages:
            form.amount.errors = [*form.amount.errors, "The form expired; please send it again."]
            form.funding_key.data = None
        return None
    return amount
