"""The manager's settings page: status changes, what PATCH changes (update_project) and the webhook secret."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from marketplace.db import utcnow
from marketplace.events.models import WebhookSecret
from marketplace.events.services import webhook_secret
from marketplace.projects.models import Project
from marketplace.projects.services import REVIEW_DEFAULTS
from marketplace.web import project_settings_views
from tests import factories as f
from tests.web.conftest import World, login

#: the status changes the service allows, written out here so that the page is checked against the rule itself
ALLOWED = {
    "draft": {"active", "completed"},
    "active": {"paused", "completed"},
    "paused": {"active", "completed"},
    "completed": set(),
}


class _FormReader(HTMLParser):
    """The fields of the page's settings form as a browser would send them (checked boxes only)."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.inside = False
        self.fields: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.inside = found.get("action") == self.action
        elif self.inside and tag == "input" and "name" in found:
            if found.get("type") == "checkbox":
                if "checked" in found:
                    self.fields[found["name"]] = found.get("value", "y")
            else:
                self.fields[found["name"]] = found.get("value", "")
        elif self.inside and tag == "textarea":
            self._textarea = found["name"]
            self.fields[self._textarea] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea is not None:
            # browsers drop the newline that opens a textarea's content (WTForms writes one)
            text = self.fields[self._textarea]
            self.fields[self._textarea] = (
                text.removeprefix("\r\n") if text.startswith("\r\n") else text.removeprefix("\n")
            )
            self._textarea = None
        elif tag == "form":
            self.inside = False


def settings_form(client: FlaskClient, project_id: int, **overrides: str | None) -> dict[str, str]:
    """The settings form as the page fills it, with `overrides` typed over it (None: a box left unticked)."""
    url = f"/projects/{project_id}/settings"
    page = client.get(url)
    assert page.status_code == 200
    reader = _FormReader(url)
    reader.feed(page.get_data(as_text=True))
    data = dict(reader.fields)
    for name, value in overrides.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def _project(engine: Any, project_id: int) -> Project:
    with Session(engine, expire_on_commit=False) as check:
        return check.get_one(Project, project_id)


def _snapshot(engine: Any, project_id: int) -> dict[str, Any]:
    project = _project(engine, project_id)
    return {
        column: getattr(project, column)
        for column in (
            "name",
            "instructions",
            "deadline_at",
            "pay_per_label_minor",
            "budget_minor",
            "lease_seconds",
            "webhook_url",
            "review_params",
            "status",
            "updated_at",
        )
    }


def _set_status(db_session: Session, project: Project, status: str) -> None:
    db_session.get_one(Project, project.id).status = status
    db_session.commit()


def _secret(engine: Any, project_id: int) -> str | None:
    with Session(engine) as check:
        row = check.get(WebhookSecret, project_id)
        return None if row is None else row.secret


def _value(page: str, name: str) -> str:
    """The value the page's input `name` shows."""
    found = re.search(rf'<input [^>]*name="{name}"[^>]*>', page)
    assert found is not None, name
    value = re.search(r'value="([^"]*)"', found.group(0))
    return "" if value is None else value.group(1)


def _offered(page: str) -> set[str]:
    return set(re.findall(r'<button type="submit" name="status" value="([a-z]+)"', page))


# --- the page -------------------------------------------------------------------------------------------------


def test_the_dashboard_offers_settings_to_managers_only(world: World, as_user) -> None:
    url = f"/projects/{world.project.id}"
    assert f'href="{url}/settings"' in as_user(world.manager).get(url).get_data(as_text=True)
    for who in (world.reviewer, world.org_finance):
        assert f'href="{url}/settings"' not in as_user(who).get(url).get_data(as_text=True)


def test_the_page_shows_the_current_settings_in_the_forms_units(world: World, as_user) -> None:
    response = as_user(world.manager).get(f"/projects/{world.project.id}/settings")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert _value(page, "name") == "Product reviews"
    assert "Is the review positive, negative or neutral?</textarea>" in page
    assert _value(page, "pay_per_label") == "1.00"  # 100 minor units of EUR
    assert _value(page, "budget") == "1000.00"
    assert _value(page, "lease_minutes") == "30"
    assert _value(page, "deadline") == world.project.deadline_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    assert _value(page, "gold_rate") == "0.0"
    assert _value(page, "gold_accuracy_floor") == "0.6"
    assert _value(page, "gold_min_items") == "5"
    assert re.search(r'<input checked [^>]*name="pay_correct_gold"', page)
    assert _value(page, "agreement_threshold") == "0.66"
    assert _value(page, "max_extra_labels") == "2"
    assert _value(page, "review_window_hours") == "72"
    assert _value(page, "min_seconds_per_label") == "0.0"
    assert _value(page, "fast_answer_limit") == "3"
    assert _value(page, "webhook_url") == ""


def test_every_review_parameter_has_a_field(world: World, as_user) -> None:
    assert set(project_settings_views.REVIEW_PARAMS) == set(REVIEW_DEFAULTS)
    page = as_user(world.manager).get(f"/projects/{world.project.id}/settings").get_data(as_text=True)
    for name in REVIEW_DEFAULTS:
        assert f'name="{name}"' in page, name


# --- status ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(ALLOWED))
def test_only_the_allowed_status_changes_are_offered(
    world: World, as_user, db_session: Session, status: str
) -> None:
    _set_status(db_session, world.project, status)
    page = as_user(world.manager).get(f"/projects/{world.project.id}/settings").get_data(as_text=True)
    assert _offered(page) == ALLOWED[status]


@pytest.mark.parametrize(
    ("before", "after", "button", "message"),
    [
        ("draft", "active", "Activate", "Project active: annotators get its tasks."),
        ("draft", "completed", "Complete", "Project completed."),
        ("active", "paused", "Pause", "Project paused: annotators get no new tasks from it."),
        ("active", "completed", "Complete", "Project completed."),
        ("paused", "active", "Resume", "Project active: annotators get its tasks."),
        ("paused", "completed", "Complete", "Project completed."),
    ],
)
def test_each_allowed_status_change(
    world: World, as_user, db_session: Session, engine, before: str, after: str, button: str, message: str
) -> None:
    _set_status(db_session, world.project, before)
    client = as_user(world.manager)
    page = client.get(f"/projects/{world.project.id}/settings").get_data(as_text=True)
    assert re.search(rf'name="status" value="{after}"[^>]*>{button}</button>', page)
    response = client.post(f"/projects/{world.project.id}/settings/status", data={"status": after})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/projects/{world.project.id}"
    assert _project(engine, world.project.id).status == after
    dashboard = client.get(response.headers["Location"]).get_data(as_text=True)
    assert message in dashboard
    assert f'<span class="state state-{after}">{after}</span>' in dashboard


@pytest.mark.parametrize(
    ("before", "wanted", "status_code", "message"),
    [
        ("active", "draft", 409, "The project is active: it cannot become draft."),
        ("draft", "paused", 409, "The project is draft: it cannot become paused."),
        ("completed", "active", 409, "The project is completed: it cannot become active."),
        ("active", "deleted", 422, "Choose one of the offered changes."),
    ],
)
def test_a_refused_status_change_is_shown_and_changes_nothing(
    world: World,
    as_user,
    db_session: Session,
    engine,
    before: str,
    wanted: str,
    status_code: int,
    message: str,
) -> None:
    _set_status(db_session, world.project, before)
    response = as_user(world.manager).post(
        f"/projects/{world.project.id}/settings/status", data={"status": wanted}
    )
    assert response.status_code == status_code
    page = response.get_data(as_text=True)
    assert re.search(r'<p class="field-error" role="alert">' + re.escape(message), page), page
    assert _project(engine, world.project.id).status == before


def test_asking_for_the_current_status_again_changes_nothing(world: World, as_user, engine) -> None:
    before = _snapshot(engine, world.project.id)
    client = as_user(world.manager)
    response = client.post(f"/projects/{world.project.id}/settings/status", data={"status": "active"})
    assert response.status_code == 302
    assert "The project is already active." in client.get(response.headers["Location"]).get_data(as_text=True)
    assert _snapshot(engine, world.project.id) == before


# --- fields ---------------------------------------------------------------------------------------------------


def test_edited_fields_are_saved_exactly(world: World, as_user, engine) -> None:
    client = as_user(world.manager)
    deadline = (utcnow() + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    form = settings_form(
        client,
        world.project.id,
        name="  Product reviews (EN)  ",
        instructions="Positive, negative or neutral?\r\nRead it all.",
        deadline=deadline,
        pay_per_label="0.75",
        budget="2500.50",
        lease_minutes="45",
        webhook_url="https://hooks.example.com/labelforce",
        gold_rate="0.1",
        gold_accuracy_floor="0.85",
        gold_min_items="12",
        pay_correct_gold=None,
        agreement_threshold="0.75",
        max_extra_labels="3",
        review_window_hours="24",
        min_seconds_per_label="2.5",
        fast_answer_limit="4",
    )
    response = client.post(f"/projects/{world.project.id}/settings", data=form)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/projects/{world.project.id}/settings"
    saved = _project(engine, world.project.id)
    assert saved.name == "Product reviews (EN)"
    assert saved.instructions == "Positive, negative or neutral?\nRead it all."
    assert saved.deadline_at == datetime.strptime(deadline, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    assert (saved.pay_per_label_minor, saved.budget_minor, saved.currency) == (75, 2_500_50, "EUR")
    assert saved.lease_seconds == 45 * 60
    assert saved.webhook_url == "https://hooks.example.com/labelforce"
    assert saved.review_params == {
        "gold_rate": 0.1,
        "gold_accuracy_floor": 0.85,
        "gold_min_items": 12,
        "pay_correct_gold": False,
        "agreement_threshold": 0.75,
        "max_extra_labels": 3,
        "review_window_hours": 24,
        "min_seconds_per_label": 2.5,
        "fast_answer_limit": 4,
    }
    assert saved.status == "active"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Saved: Name, Instructions for annotators, Deadline (UTC), Pay per accepted label" in page

    # the page shows what was saved, and sending it again changes nothing
    again = client.post(
        f"/projects/{world.project.id}/settings", data=settings_form(client, world.project.id)
    )
    assert again.status_code == 302
    assert "Nothing changed" in client.get(again.headers["Location"]).get_data(as_text=True)

    # clearing the webhook URL removes it
    cleared = client.post(
        f"/projects/{world.project.id}/settings", data=settings_form(client, world.project.id, webhook_url="")
    )
    assert cleared.status_code == 302
    assert _project(engine, world.project.id).webhook_url is None


def test_amounts_are_read_in_the_projects_currency(
    world: World, as_user, db_session: Session, engine
) -> None:
    yen = f.project(db_session, world.org, world.manager, currency="JPY", pay_per_label_minor=500)
    db_session.commit()
    client = as_user(world.manager)
    page = client.get(f"/projects/{yen.id}/settings").get_data(as_text=True)
    assert _value(page, "pay_per_label") == "500"
    refused = client.post(
        f"/projects/{yen.id}/settings", data=settings_form(client, yen.id, pay_per_label="5.5")
    )
    assert refused.status_code == 422
    assert "Write the amount in JPY with no decimals" in refused.get_data(as_text=True)
    saved = client.post(
        f"/projects/{yen.id}/settings",
        data=settings_form(client, yen.id, pay_per_label="750", budget="90000"),
    )
    assert saved.status_code == 302
    project = _project(engine, yen.id)
    assert (project.pay_per_label_minor, project.budget_minor, project.currency) == (750, 90_000, "JPY")


def test_only_the_changed_fields_reach_the_service(
    world: World, as_user, engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    real = project_settings_views.update_project

    def spy(session: Session, *, project: Project, fields: dict[str, Any]) -> Project:
        sent.append(dict(fields))
        return real(session, project=project, fields=fields)

    monkeypatch.setattr(project_settings_views, "update_project", spy)
    client = as_user(world.manager)
    url = f"/projects/{world.project.id}/settings"
    # the stored deadline has seconds the form cannot show: an untouched form must not round it
    deadline = _project(engine, world.project.id).deadline_at
    assert deadline.second or deadline.microsecond

    before = _snapshot(engine, world.project.id)
    unchanged = client.post(url, data=settings_form(client, world.project.id))
    assert unchanged.status_code == 302
    assert "Nothing changed" in client.get(unchanged.headers["Location"]).get_data(as_text=True)
    assert sent == []
    assert _snapshot(engine, world.project.id) == before

    assert (
        client.post(url, data=settings_form(client, world.project.id, pay_per_label="1.5")).status_code == 302
    )
    assert (
        client.post(url, data=settings_form(client, world.project.id, gold_min_items="7")).status_code == 302
    )
    assert sent == [{"pay_per_label_minor": 150}, {"review_params": {"gold_min_items": 7}}]
    after = _project(engine, world.project.id)
    assert after.deadline_at == deadline
    assert after.review_params == {**REVIEW_DEFAULTS, "gold_min_items": 7}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "Give the project a name."),
        ({"name": "x" * 201}, "Length must be between 1 and 200."),
        ({"pay_per_label": "0.505"}, "Write the amount in EUR with at most 2 decimals after a point"),
        ({"pay_per_label": "-1"}, "Enter an amount from €0.00 to €10,000,000.00."),
        ({"pay_per_label": ""}, "Say what an accepted label pays."),
        ({"budget": "1,000"}, "no thousands separators, e.g. 1250.50"),
        ({"budget": "200000000000.00"}, "Enter an amount from €0.00 to €100,000,000,000.00."),
        ({"lease_minutes": "0"}, "Enter 1 to 10,080 minutes."),
        ({"lease_minutes": "an hour"}, "Not a valid integer value."),
        ({"deadline": "tomorrow"}, "Not a valid datetime value."),
        ({"deadline": "2020-01-01T00:00"}, "The deadline must be in the future."),
        ({"webhook_url": "ftp://hooks.example.com/x"}, "Enter a full address starting with https://"),
        ({"webhook_url": "hooks example"}, "Enter a full address starting with https://"),
        ({"gold_rate": "0.9"}, "Must be between 0.0 and 0.5."),
        ({"gold_accuracy_floor": "1.5"}, "Must be between 0.0 and 1.0."),
        ({"gold_min_items": "0"}, "Must be between 1 and 1000."),
        ({"gold_min_items": ""}, "Give a number of gold items."),
        ({"agreement_threshold": "0.2"}, "Must be between 0.5 and 1.0."),
        ({"max_extra_labels": "21"}, "Must be between 0 and 20."),
        ({"review_window_hours": "0"}, "Must be between 1 and 720."),
        ({"min_seconds_per_label": "-1"}, "Must be between 0.0 and 3600.0."),
        ({"fast_answer_limit": "0"}, "Must be between 1 and 1000."),
    ],
)
def test_mistakes_are_shown_on_their_field_and_nothing_is_saved(
    world: World, as_user, engine, overrides: dict[str, str], message: str
) -> None:
    client = as_user(world.manager)
    before = _snapshot(engine, world.project.id)
    # a valid change sent with the mistake is not saved either
    form = settings_form(client, world.project.id, instructions="Changed instructions", **overrides)
    response = client.post(f"/projects/{world.project.id}/settings", data=form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'<p class="field-error" role="alert">[^<]*' + re.escape(message), page), page
    assert "Nothing was saved" in page
    assert "Changed instructions</textarea>" in page  # what was typed is kept
    assert _snapshot(engine, world.project.id) == before


def test_a_completed_project_is_shown_locked_and_refuses_changes(
    world: World, as_user, db_session: Session, engine
) -> None:
    _set_status(db_session, world.project, "completed")
    client = as_user(world.manager)
    page = client.get(f"/projects/{world.project.id}/settings").get_data(as_text=True)
    assert '<fieldset class="plain stack" disabled>' in page
    assert "Save changes" not in page
    assert "A completed project is final" in page
    before = _snapshot(engine, world.project.id)
    form = settings_form(client, world.project.id, name="Reopened?")
    response = client.post(f"/projects/{world.project.id}/settings", data=form)
    assert response.status_code == 409
    assert "A completed project cannot be changed." in response.get_data(as_text=True)
    assert _snapshot(engine, world.project.id) == before


# --- the webhook secret ---------------------------------------------------------------------------------------


def test_rotating_the_secret_shows_the_new_one_once(
    world: World, as_user, db_session: Session, engine
) -> None:
    old = webhook_secret(db_session, project_id=world.project.id).secret
    db_session.commit()
    client = as_user(world.manager)
    url = f"/projects/{world.project.id}/settings"
    page = client.get(url).get_data(as_text=True)
    assert old not in page
    assert f"whsec_••••••••{old[-4:]}" in page

    response = client.post(f"{url}/webhook-secret")
    assert response.status_code == 302
    assert response.headers["Location"] == url
    new = _secret(engine, world.project.id)
    assert new is not None
    assert new != old
    shown = client.get(url).get_data(as_text=True)
    assert f'<code class="secret" data-secret>{new}</code>' in shown
    assert "shown only this once" in shown
    assert "New signing secret made" in shown

    again = client.get(url).get_data(as_text=True)
    assert new not in again
    assert f"whsec_••••••••{new[-4:]}" in again
    # another manager of the organisation never sees it in full
    colleague = f.member(db_session, world.org, "manager")
    db_session.commit()
    assert new not in as_user(colleague).get(url).get_data(as_text=True)


def test_a_project_without_a_secret_gets_one_by_rotating(world: World, as_user, engine) -> None:
    client = as_user(world.manager)
    url = f"/projects/{world.project.id}/settings"
    assert "No secret yet" in client.get(url).get_data(as_text=True)
    assert _secret(engine, world.project.id) is None  # the page itself makes none
    assert client.post(f"{url}/webhook-secret").status_code == 302
    made = _secret(engine, world.project.id)
    assert made is not None
    assert made in client.get(url).get_data(as_text=True)


# --- access ---------------------------------------------------------------------------------------------------


def test_settings_are_for_the_projects_managers_only(world: World, as_user, engine) -> None:
    url = f"/projects/{world.project.id}/settings"
    before = _snapshot(engine, world.project.id)
    for who in (world.reviewer, world.org_finance, world.annotator_user):
        client = as_user(who)
        assert client.get(url).status_code == 403
        assert client.post(url, data={"name": "Mine now"}).status_code == 403
        assert client.post(f"{url}/status", data={"status": "paused"}).status_code == 403
        assert client.post(f"{url}/webhook-secret").status_code == 403
    assert _snapshot(engine, world.project.id) == before
    assert _secret(engine, world.project.id) is None

    other = f"/projects/{world.other_project.id}/settings"
    other_before = _snapshot(engine, world.other_project.id)
    manager = as_user(world.manager)
    assert manager.get(other).status_code == 404
    assert manager.post(other, data={"name": "Mine now"}).status_code == 404
    assert manager.post(f"{other}/status", data={"status": "paused"}).status_code == 404
    assert manager.post(f"{other}/webhook-secret").status_code == 404
    assert _snapshot(engine, world.other_project.id) == other_before
    assert _secret(engine, world.other_project.id) is None


def test_the_settings_forms_carry_their_csrf_token(world: World, app_config, make_app, engine) -> None:
    app = make_app({**app_config, "WTF_CSRF_ENABLED": True})
    client = login(app.test_client(), world.manager)
    url = f"/projects/{world.project.id}/settings"
    for action in (url, f"{url}/status", f"{url}/webhook-secret"):
        assert client.post(action, data={"status": "paused", "name": "No token"}).status_code == 400, action
    assert _project(engine, world.project.id).status == "active"
    assert _secret(engine, world.project.id) is None

    page = client.get(url).get_data(as_text=True)
    for action in (url, f"{url}/status", f"{url}/webhook-secret"):
        form = (
            rf'<form method="post" action="{re.escape(action)}"[^>]*>\s*'
            r'<input (?:id="csrf_token" )?name="csrf_token" type="hidden" value="[^"]+"'
        )
        assert re.search(form, page), action
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token is not None
    paused = client.post(f"{url}/status", data={"csrf_token": token.group(1), "status": "paused"})
    assert paused.status_code == 302
    assert _project(engine, world.project.id).status == "paused"
