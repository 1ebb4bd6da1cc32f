"""The manager's setup pages: a new project (create_project) and funding its budget (fund_project)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts import services as accounts
from marketplace.billing.services import project_budget
from marketplace.db import utcnow
from marketplace.projects.models import Project
from payments.money import Money
from tests import factories as f
from tests.web.conftest import World, login


def _deadline(days: int = 10) -> str:
    return (utcnow() + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")


def project_form(world: World, **overrides: str) -> dict[str, str]:
    """A complete new-project form as a browser sends it."""
    data = {
        "organisation_id": str(world.org.id),
        "name": "Street signs",
        "instructions": "Which sign is it?",
        "schema_type": "single_choice",
        "choices": "stop\r\nyield\r\n\r\n  speed limit  \r\n",
        "choice_min": "",
        "choice_max": "",
        "text_max_length": "",
        "skill": "image-classification",
        "min_level": "2",
        "currency": "EUR",
        "pay_per_label": "1.25",
        "labels_per_item": "3",
        "review_policy": "consensus",
        "gold_rate": "0.05",
        "agreement_threshold": "0.7",
        "max_extra_labels": "1",
        "review_window_hours": "48",
        "deadline": _deadline(),
        "lease_minutes": "45",
        "status": "active",
    }
    data.update(overrides)
    return data


def _projects(engine: Any) -> list[Project]:
    with Session(engine) as check:
        return list(check.scalars(select(Project).order_by(Project.id)))


def _funded(engine: Any, project_id: int) -> Money:
    with Session(engine) as check:
        return project_budget(check, project=check.get_one(Project, project_id)).funded


# --- new project ----------------------------------------------------------------------------------------------


def test_the_projects_list_offers_a_new_project_to_managers_only(world: World, as_user) -> None:
    assert 'href="/projects/new"' in as_user(world.manager).get("/projects").get_data(as_text=True)
    for who in (world.reviewer, world.org_finance):
        assert 'href="/projects/new"' not in as_user(who).get("/projects").get_data(as_text=True)


def test_the_new_project_form_offers_skills_currencies_and_review_defaults(world: World, as_user) -> None:
    response = as_user(world.manager).get("/projects/new")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Acme" in page  # the one organisation the manager manages, shown without a choice
    assert f'name="organisation_id" value="{world.org.id}"' in page
    assert '<option value="image-classification">' in page
    assert '<option value="EUR" selected>' in page
    assert '<option value="JPY">' in page
    assert 'name="agreement_threshold" step="any" type="number" value="0.66"' in page
    assert 'name="review_window_hours" type="number" value="72"' in page
    assert 'type="datetime-local"' in page


def test_a_manager_creates_a_project_with_the_pay_in_minor_units(world: World, as_user, engine) -> None:
    before = len(_projects(engine))
    form = project_form(world)
    client = as_user(world.manager)
    response = client.post("/projects/new", data=form)
    assert response.status_code == 302
    created = _projects(engine)[-1]
    assert len(_projects(engine)) == before + 1
    assert response.headers["Location"] == f"/projects/{created.id}"
    assert created.organisation_id == world.org.id
    assert created.created_by_id == world.manager.id
    assert created.name == "Street signs"
    assert created.instructions == "Which sign is it?"
    assert created.label_schema == {"type": "single_choice", "choices": ["stop", "yield", "speed limit"]}
    assert (created.pay_per_label_minor, created.currency) == (125, "EUR")
    assert (created.min_level, created.labels_per_item, created.lease_seconds) == (2, 3, 45 * 60)
    assert created.review_policy == "consensus"
    assert created.review_params["gold_rate"] == 0.05
    assert created.review_params["agreement_threshold"] == 0.7
    assert created.review_params["max_extra_labels"] == 1
    assert created.review_params["review_window_hours"] == 48
    assert created.deadline_at == datetime.strptime(form["deadline"], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    assert created.status == "active"

    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Project “Street signs” created." in page
    assert "€1.25 per accepted label" in page


def test_other_answer_kinds_and_currencies(world: World, as_user, engine) -> None:
    client = as_user(world.manager)
    multi = project_form(
        world,
        name="Tags",
        schema_type="multi_choice",
        choices="indoor\noutdoor\npeople",
        choice_min="1",
        choice_max="2",
        currency="JPY",
        pay_per_label="500",
        review_policy="manual",
        lease_minutes="",
        labels_per_item="1",
    )
    assert client.post("/projects/new", data=multi).status_code == 302
    text = project_form(world, name="Captions", schema_type="text", choices="", text_max_length="300")
    assert client.post("/projects/new", data=text).status_code == 302
    tags, captions = _projects(engine)[-2:]
    assert tags.label_schema == {
        "type": "multi_choice",
        "choices": ["indoor", "outdoor", "people"],
        "min": 1,
        "max": 2,
    }
    assert (tags.pay_per_label_minor, tags.currency) == (500, "JPY")  # yen have no minor unit
    assert tags.lease_seconds == 1800  # left empty: the service's default
    assert captions.label_schema == {"type": "text", "max_length": 300}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "Give the project a name."),
        ({"pay_per_label": "0.505"}, "Write the amount in EUR with at most 2 decimals after a point"),
        ({"pay_per_label": "1,50"}, "no thousands separators, e.g. 1250.50"),
        ({"pay_per_label": "-1"}, "Enter an amount from €0.00 to €10,000,000.00."),
        ({"currency": "JPY", "pay_per_label": "0.5"}, "Write the amount in JPY with no decimals"),
        ({"currency": "XYZ"}, "Choose a currency from the list."),
        ({"choices": "only one"}, "Must be 2 to 200 distinct non-empty strings."),
        ({"choices": "same\nsame"}, "Must be 2 to 200 distinct non-empty strings."),
        (
            {"schema_type": "multi_choice", "choice_min": "3", "choice_max": "1"},
            "Min and max must be integers with 0 ≤ min ≤ max ≤ number of choices, and max ≥ 1.",
        ),
        ({"labels_per_item": "0"}, "Must be greater than or equal to 1 and less than or equal to 50."),
        ({"labels_per_item": "1"}, "Consensus review needs labels_per_item of at least 2."),
        ({"min_level": "9"}, "Must be greater than or equal to 1 and less than or equal to 5."),
        ({"min_level": "two"}, "Not a valid integer value."),
        ({"lease_minutes": "0"}, "Enter 1 to 10,080 minutes."),
        ({"gold_rate": "0.9"}, "Must be between 0.0 and 0.5."),
        ({"gold_rate": "sNaN"}, "Not a valid decimal value."),
        ({"agreement_threshold": "Infinity"}, "Not a valid decimal value."),
        ({"agreement_threshold": "0.2"}, "Must be between 0.5 and 1.0."),
        ({"deadline": _deadline(days=-1)}, "The deadline must be in the future."),
        ({"deadline": "tomorrow"}, "Not a valid datetime value."),
        ({"skill": "astrology"}, "Unknown skill &#39;astrology&#39;."),
        ({"review_policy": "vibes"}, "Choose a review policy."),
    ],
)
def test_mistakes_are_shown_on_their_field_and_nothing_is_created(
    world: World, as_user, engine, overrides: dict[str, str], message: str
) -> None:
    before = len(_projects(engine))
    response = as_user(world.manager).post("/projects/new", data=project_form(world, **overrides))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'<p class="field-error" role="alert">[^<]*' + re.escape(message), page), page
    assert "Nothing was created" in page
    # what was typed is kept
    assert 'value="Street signs"' in page or overrides.get("name") == ""
    assert len(_projects(engine)) == before


def test_a_manager_of_two_organisations_chooses_one_but_never_another_tenants(
    world: World, as_user, db_session, engine
) -> None:
    both = f.member(db_session, world.org, "admin")
    third = f.organisation(db_session, "initech")
    f.member(db_session, third, "manager")
    accounts.add_membership(db_session, user=both, organisation=third, role="manager")
    db_session.commit()
    client = as_user(both)
    page = client.get("/projects/new").get_data(as_text=True)
    assert f'<option value="{world.org.id}"' in page
    assert f'<option value="{third.id}"' in page
    assert f'<option value="{world.other_org.id}"' not in page

    before = len(_projects(engine))
    refused = client.post("/projects/new", data=project_form(world, organisation_id=str(world.other_org.id)))
    assert refused.status_code == 422
    assert "Choose one of your organisations." in refused.get_data(as_text=True)
    assert len(_projects(engine)) == before

    chosen = client.post("/projects/new", data=project_form(world, organisation_id=str(third.id)))
    assert chosen.status_code == 302
    assert _projects(engine)[-1].organisation_id == third.id


def test_only_admins_and_managers_create_projects(world: World, as_user, engine) -> None:
    before = len(_projects(engine))
    for who in (world.reviewer, world.org_finance, world.annotator_user, world.platform_finance):
        client = as_user(who)
        assert client.get("/projects/new").status_code == 403
        assert client.post("/projects/new", data=project_form(world)).status_code == 403
    assert len(_projects(engine)) == before


# --- funding --------------------------------------------------------------------------------------------------


def test_the_dashboard_offers_funding_to_managers_only(world: World, as_user) -> None:
    url = f"/projects/{world.project.id}"
    assert f'href="{url}/funding"' in as_user(world.manager).get(url).get_data(as_text=True)
    assert f'href="{url}/funding"' not in as_user(world.org_finance).get(url).get_data(as_text=True)


def _funding_key(page: str) -> str:
    found = re.search(r'name="funding_key" type="hidden" value="([0-9a-f]{32})"', page)
    assert found is not None, page
    return found.group(1)


def test_funding_adds_to_the_budget_once_per_form(world: World, as_user, engine) -> None:
    client = as_user(world.manager)
    url = f"/projects/{world.project.id}/funding"
    page = client.get(url).get_data(as_text=True)
    assert "€1,000.00" in page  # funded so far
    assert "€1.20" in page  # one label: €1.00 and the 20% fee
    key = _funding_key(page)
    assert _funding_key(client.get(url).get_data(as_text=True)) != key  # each form has its own key

    first = client.post(url, data={"amount": "250.50", "funding_key": key})
    assert first.status_code == 302
    assert first.headers["Location"] == f"/projects/{world.project.id}"
    assert "Added €250.50 to the budget; €1,250.50 is available." in client.get(
        first.headers["Location"]
    ).get_data(as_text=True)

    again = client.post(url, data={"amount": "250.50", "funding_key": key}, follow_redirects=True)
    assert again.status_code == 200
    assert "That funding was already recorded: nothing was added twice." in again.get_data(as_text=True)
    assert _funded(engine, world.project.id) == Money(1_250_50, "EUR")

    other_amount = client.post(url, data={"amount": "99", "funding_key": key})
    assert other_amount.status_code == 409
    assert "already funded the project with another amount" in other_amount.get_data(as_text=True)
    assert _funding_key(other_amount.get_data(as_text=True)) != key
    assert _funded(engine, world.project.id) == Money(1_250_50, "EUR")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("", "Enter an amount."),
        ("lots", "Write the amount in EUR with at most 2 decimals after a point"),
        ("1.001", "Write the amount in EUR with at most 2 decimals after a point"),
        ("1,000", "no thousands separators"),
        ("0", "Enter an amount from €0.01 to €100,000,000,000.00."),
        ("-5", "Enter an amount from €0.01 to €100,000,000,000.00."),
    ],
)
def test_a_wrong_amount_is_shown_and_funds_nothing(
    world: World, as_user, engine, amount: str, message: str
) -> None:
    response = as_user(world.manager).post(
        f"/projects/{world.project.id}/funding", data={"amount": amount, "funding_key": "a" * 32}
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'<p class="field-error" role="alert">[^<]*' + re.escape(message), page), page
    assert _funding_key(page) == "a" * 32  # the same form: sending it corrected still funds once
    assert _funded(engine, world.project.id) == Money(1_000_00, "EUR")


def test_a_tampered_funding_key_is_refused(world: World, as_user, engine) -> None:
    response = as_user(world.manager).post(
        f"/projects/{world.project.id}/funding", data={"amount": "5", "funding_key": "not a key!"}
    )
    assert response.status_code == 422
    assert "The form expired; please send it again." in response.get_data(as_text=True)
    assert _funded(engine, world.project.id) == Money(1_000_00, "EUR")


def test_funding_is_for_the_projects_managers_only(world: World, as_user, engine) -> None:
    url = f"/projects/{world.project.id}/funding"
    form = {"amount": "5", "funding_key": "k" * 32}
    for who in (world.reviewer, world.org_finance, world.annotator_user):
        assert as_user(who).get(url).status_code == 403
        assert as_user(who).post(url, data=form).status_code == 403
    other = f"/projects/{world.other_project.id}/funding"
    assert as_user(world.manager).get(other).status_code == 404
    assert as_user(world.manager).post(other, data=form).status_code == 404
    assert _funded(engine, world.project.id) == Money(1_000_00, "EUR")
    assert _funded(engine, world.other_project.id) == Money(0, "EUR")


def test_with_stripe_the_page_points_to_the_api_and_books_nothing(
    world: World, app_config, make_app, engine
) -> None:
    app = make_app({**app_config, "PAYOUT_GATEWAY": "stripe", "STRIPE_SECRET_KEY": "sk_test_unused"})
    client = login(app.test_client(), world.manager)
    url = f"/projects/{world.project.id}/funding"
    page = client.get(url).get_data(as_text=True)
    assert "Funding is paid through Stripe" in page
    assert 'name="amount"' not in page
    refused = client.post(url, data={"amount": "5", "funding_key": "k" * 32})
    assert refused.status_code == 409
    assert _funded(engine, world.project.id) == Money(1_000_00, "EUR")
