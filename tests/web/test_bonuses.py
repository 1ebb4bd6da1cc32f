"""The manager's bonuses page (grant_bonus through a form that pays once) and the bonuses on the annotator's
earnings page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.billing.models import Bonus
from marketplace.billing.services import payable_account_code, project_budget
from marketplace.db import utcnow
from marketplace.projects.models import Project
from payments import ledger
from payments.money import Money
from tests import factories as f
from tests.web.conftest import World, login

NAME = "Ada Lovelace"
REASON = "Careful work on the hard items"


def _label(client: FlaskClient, key: str = "k") -> None:
    """The logged-in annotator leases an item of the world's project and labels it."""
    leased = client.post("/work/next")
    assert leased.status_code == 302, leased.get_data(as_text=True)
    found = re.search(r"/work/assignments/(\d+)$", leased.headers["Location"])
    assert found is not None, leased.headers["Location"]
    done = client.post(
        f"/work/assignments/{found.group(1)}/submit", data={"choice": "positive", "submit_key": key}
    )
    assert done.status_code == 302


@pytest.fixture
def worked(world: World, as_user, db_session: Session) -> World:
    """The world, with its annotator (named NAME) having labelled one item of the project."""
    world.annotator.display_name = NAME
    db_session.commit()
    _label(as_user(world.annotator_user))
    return world


def _url(world: World) -> str:
    return f"/projects/{world.project.id}/bonuses"


def _bonus_key(page: str) -> str:
    found = re.search(r'name="bonus_key" type="hidden" value="([0-9a-f]{32})"', page)
    assert found is not None, page
    return found.group(1)


def _form(world: World, **overrides: str) -> dict[str, str]:
    data = {
        "annotator_id": str(world.annotator.id),
        "amount": "2.50",
        "reason": REASON,
        "bonus_key": "b" * 32,
    }
    data.update(overrides)
    return data


def _bonuses(engine: Any) -> list[Bonus]:
    with Session(engine) as check:
        return list(check.scalars(select(Bonus).order_by(Bonus.id)))


def _budget(engine: Any, project_id: int) -> Any:
    with Session(engine) as check:
        return project_budget(check, project=check.get_one(Project, project_id))


def _payable(engine: Any, annotator_id: int) -> Money:
    with Session(engine) as check:
        return ledger.balance(check, account_code=payable_account_code(annotator_id), currency="EUR").posted


def _field_error(page: str, message: str) -> bool:
    return re.search(r'<p class="field-error" role="alert">[^<]*' + re.escape(message), page) is not None


# --- the dashboard --------------------------------------------------------------------------------------------


def test_the_dashboard_links_the_bonuses_to_those_who_see_the_budget(world: World, as_user) -> None:
    url = f"/projects/{world.project.id}"
    page = as_user(world.manager).get(url).get_data(as_text=True)
    assert f'href="{url}/bonuses"' in page
    assert "pay someone who labelled in this project extra" in page
    assert "Bonuses" in page  # the budget's stat
    finance = as_user(world.org_finance).get(url).get_data(as_text=True)
    assert f'href="{url}/bonuses"' in finance  # the list, without the form
    assert "the bonuses paid from this budget" in finance
    assert f'href="{url}/bonuses"' not in as_user(world.reviewer).get(url).get_data(as_text=True)


# --- giving a bonus -------------------------------------------------------------------------------------------


def test_the_form_offers_only_the_people_who_labelled_in_the_project(
    worked: World, as_user, db_session: Session
) -> None:
    idle = f.annotator(db_session)
    db_session.commit()
    client = as_user(worked.manager)
    response = client.get(_url(worked))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'<option value="{worked.annotator.id}">{NAME} (1 label)</option>' in page
    assert f'<option value="{idle.id}"' not in page
    assert idle.display_name not in page
    assert "No bonuses yet." in page
    assert "20%" in page  # the platform's fee, paid on top
    key = _bonus_key(page)
    assert _bonus_key(client.get(_url(worked)).get_data(as_text=True)) != key  # each form has its own key


def test_two_people_of_the_same_name_are_told_apart_by_their_number(
    worked: World, as_user, db_session: Session
) -> None:
    namesake = f.annotator(db_session)
    namesake.display_name = NAME
    db_session.commit()
    namesake_client = as_user(db_session.get_one(User, namesake.user_id))
    _label(namesake_client, "n1")
    _label(namesake_client, "n2")
    page = as_user(worked.manager).get(_url(worked)).get_data(as_text=True)
    assert f'<option value="{worked.annotator.id}">{NAME} (#{worked.annotator.id}, 1 label)</option>' in page
    assert f'<option value="{namesake.id}">{NAME} (#{namesake.id}, 2 labels)</option>' in page


def test_without_labels_there_is_nobody_to_give_a_bonus_to(world: World, as_user) -> None:
    page = as_user(world.manager).get(_url(world)).get_data(as_text=True)
    assert "Nobody has labelled in this project yet" in page
    assert 'name="amount"' not in page


def test_a_manager_gives_a_bonus_once_per_form(worked: World, as_user, engine) -> None:
    client = as_user(worked.manager)
    url = _url(worked)
    key = _bonus_key(client.get(url).get_data(as_text=True))
    before = _budget(engine, worked.project.id)
    form = _form(worked, bonus_key=key, reason=f"  {REASON},\r\nand quick.  ")

    first = client.post(url, data=form)
    assert first.status_code == 302
    assert first.headers["Location"] == url
    page = client.get(url).get_data(as_text=True)
    after = _budget(engine, worked.project.id)
    assert (
        f"Gave {NAME} a bonus of €2.50; the budget paid €3.00 with the platform&#39;s fee and has "
        f"{after.available.format()} available."
    ) in page
    assert after.available == before.available - Money(300, "EUR")
    assert after.bonuses == Money(250, "EUR")
    (bonus,) = _bonuses(engine)
    assert (bonus.annotator_id, bonus.amount_minor, bonus.fee_minor, bonus.currency) == (
        worked.annotator.id,
        250,
        50,
        "EUR",
    )
    assert bonus.reason == f"{REASON},\nand quick."  # trimmed, one line break as written
    assert bonus.client_key == key
    assert bonus.granted_by_id == worked.manager.id
    assert _payable(engine, worked.annotator.id) == Money(250, "EUR")  # the label is still in review
    # the list: who, how much, the fee, why, who gave it, when
    row = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
    assert row is not None
    for text in (NAME, "€2.50", "€0.50", f"{REASON},\nand quick.", worked.manager.name, "<time"):
        assert text in row.group(1), text
    assert "1 bonus" in page

    again = client.post(url, data=form, follow_redirects=True)
    assert again.status_code == 200
    assert "That bonus was already given: nothing was paid twice." in again.get_data(as_text=True)
    assert len(_bonuses(engine)) == 1
    assert _budget(engine, worked.project.id) == after
    assert _payable(engine, worked.annotator.id) == Money(250, "EUR")

    other = client.post(url, data={**form, "amount": "3"})
    assert other.status_code == 409
    refused = other.get_data(as_text=True)
    assert "This form already gave a bonus" in refused
    assert "nothing more was paid" in refused
    assert _bonus_key(refused) != key  # a new form: sending it gives a second bonus
    assert 'value="3"' in refused  # what was typed is kept
    assert len(_bonuses(engine)) == 1
    assert _budget(engine, worked.project.id) == after

    second = client.post(url, data={**form, "amount": "3", "bonus_key": _bonus_key(refused)})
    assert second.status_code == 302
    assert [b.amount_minor for b in _bonuses(engine)] == [250, 300]
    listed = client.get(url).get_data(as_text=True)
    assert listed.index("€3.00") < listed.index("€2.50")  # newest first
    assert "2 bonuses" in listed


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"amount": ""}, "amount", "Enter an amount."),
        ({"amount": "lots"}, "amount", "Write the amount in EUR with at most 2 decimals after a point"),
        ({"amount": "1.001"}, "amount", "Write the amount in EUR with at most 2 decimals after a point"),
        ({"amount": "1,000"}, "amount", "no thousands separators"),
        ({"amount": "NaN"}, "amount", "Write the amount in EUR"),
        ({"amount": "\u0663"}, "amount", "Write the amount in EUR"),  # an Arabic-Indic 3
        ({"amount": "\uff11"}, "amount", "Write the amount in EUR"),  # a fullwidth 1
        ({"amount": "9" * 5000}, "amount", "Write the amount in EUR"),  # not Python's limit on digits
        ({"amount": "0"}, "amount", "Enter an amount from €0.01 to €100,000,000,000.00."),
        ({"amount": "-5"}, "amount", "Enter an amount from €0.01 to €100,000,000,000.00."),
        ({"amount": "100000000000.01"}, "amount", "Enter an amount from €0.01 to €100,000,000,000.00."),
        ({"reason": ""}, "reason", "Say why: the annotator reads the reason."),
        ({"reason": "  \r\n\t "}, "reason", "Say why: the annotator reads the reason."),
        ({"reason": "x" * 1001}, "reason", "A reason has at most 1,000 characters."),
        ({"annotator_id": ""}, "annotator_id", "Choose who gets the bonus."),
        ({"annotator_id": "someone"}, "annotator_id", "Choose someone who labelled in this project"),
        ({"annotator_id": "²"}, "annotator_id", "Choose someone who labelled in this project"),
        ({"annotator_id": str(2**63)}, "annotator_id", "Choose someone who labelled in this project"),
    ],
)
def test_a_mistake_is_shown_on_its_field_and_pays_nothing(
    worked: World, as_user, engine, overrides: dict[str, str], field: str, message: str
) -> None:
    response = as_user(worked.manager).post(_url(worked), data=_form(worked, **overrides))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert _field_error(page, message), page
    assert "Nothing was paid" in page
    assert _bonus_key(page) == "b" * 32  # the same form: sending it corrected still pays once
    assert _bonuses(engine) == []
    assert _budget(engine, worked.project.id).bonuses == Money(0, "EUR")


def test_a_reason_of_exactly_the_longest_length_counts_a_line_break_once(
    worked: World, as_user, engine
) -> None:
    reason = "x" * 499 + "\r\n" + "y" * 500  # 1,001 characters as sent, 1,000 as stored
    response = as_user(worked.manager).post(_url(worked), data=_form(worked, reason=reason))
    assert response.status_code == 302
    (bonus,) = _bonuses(engine)
    assert len(bonus.reason) == 1000


def test_someone_who_did_not_label_in_the_project_gets_nothing(
    worked: World, as_user, db_session: Session, engine
) -> None:
    idle = f.annotator(db_session)
    db_session.commit()
    response = as_user(worked.manager).post(_url(worked), data=_form(worked, annotator_id=str(idle.id)))
    assert response.status_code == 422
    assert _field_error(
        response.get_data(as_text=True),
        "Choose someone who labelled in this project: only they can get a bonus.",
    )
    assert _bonuses(engine) == []


def test_more_than_the_available_budget_is_refused_with_what_is_available(
    worked: World, as_user, engine
) -> None:
    before = _budget(engine, worked.project.id)
    response = as_user(worked.manager).post(_url(worked), data=_form(worked, amount="900"))
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert _field_error(
        page,
        f"The budget has {before.available.format()} available and this bonus costs it €1,080.00 with the "
        "platform&#39;s fee: fund the budget or give less.",
    ), page
    assert _bonus_key(page) == "b" * 32
    assert _bonuses(engine) == []
    assert _budget(engine, worked.project.id) == before

    # the same form, corrected, pays once
    assert as_user(worked.manager).post(_url(worked), data=_form(worked, amount="9")).status_code == 302
    assert [b.amount_minor for b in _bonuses(engine)] == [900]


@pytest.mark.parametrize("key", ["", "not a key!", "k" * 121])
def test_a_missing_or_tampered_key_is_refused(worked: World, as_user, engine, key: str) -> None:
    response = as_user(worked.manager).post(_url(worked), data=_form(worked, bonus_key=key))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "The form expired; please send it again." in page
    assert _bonus_key(page) != key  # a fresh form
    assert _bonuses(engine) == []


def test_a_reason_is_shown_as_text_never_as_markup(worked: World, as_user, engine) -> None:
    reason = '<script>alert("hi")</script> & thanks'
    client = as_user(worked.manager)
    assert client.post(_url(worked), data=_form(worked, reason=reason)).status_code == 302
    for page in (
        client.get(_url(worked)).get_data(as_text=True),
        as_user(worked.annotator_user).get("/work/earnings").get_data(as_text=True),
    ):
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt; &amp; thanks" in page


def test_a_reason_with_a_nul_character_is_a_bad_request_and_pays_nothing(
    worked: World, as_user, engine
) -> None:
    response = as_user(worked.manager).post(_url(worked), data=_form(worked, reason="a\x00b"))
    assert response.status_code == 400
    assert _bonuses(engine) == []


# --- who may give and see -------------------------------------------------------------------------------------


def test_only_the_projects_admins_and_managers_give_bonuses(
    worked: World, as_user, db_session: Session, engine
) -> None:
    url = _url(worked)
    form = _form(worked)
    for who in (worked.reviewer, worked.annotator_user, worked.platform_finance):
        assert as_user(who).get(url).status_code == 403
        assert as_user(who).post(url, data=form).status_code == 403
    finance = as_user(worked.org_finance)
    assert finance.post(url, data=form).status_code == 403
    outsider = as_user(worked.other_manager)
    assert outsider.get(url).status_code == 404
    assert outsider.post(url, data=form).status_code == 404
    manager = as_user(worked.manager)
    assert manager.get(f"/projects/{worked.other_project.id}/bonuses").status_code == 404
    assert manager.post(f"/projects/{worked.other_project.id}/bonuses", data=form).status_code == 404
    assert _bonuses(engine) == []

    admin = f.member(db_session, worked.org, "admin")
    platform_admin = f.user(db_session, platform_role="admin")
    db_session.commit()
    assert as_user(admin).post(url, data=_form(worked, bonus_key="a" * 32)).status_code == 302
    assert as_user(platform_admin).post(url, data=_form(worked, bonus_key="p" * 32)).status_code == 302
    assert [b.granted_by_id for b in _bonuses(engine)] == [admin.id, platform_admin.id]


def test_finance_reads_the_list_without_the_form(worked: World, as_user) -> None:
    assert as_user(worked.manager).post(_url(worked), data=_form(worked)).status_code == 302
    response = as_user(worked.org_finance).get(_url(worked))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert REASON in page
    assert "€2.50" in page
    assert 'name="amount"' not in page
    assert "Give a bonus" not in page


def test_the_form_carries_its_csrf_token(worked: World, app_config, make_app, engine) -> None:
    app = make_app({**app_config, "WTF_CSRF_ENABLED": True})
    client = login(app.test_client(), worked.manager)
    url = _url(worked)
    assert client.post(url, data=_form(worked)).status_code == 400
    assert _bonuses(engine) == []
    page = client.get(url).get_data(as_text=True)
    assert re.search(
        r'<form method="post"[^>]*>\s*<input id="csrf_token" name="csrf_token" type="hidden"', page
    )
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token is not None
    given = client.post(url, data={**_form(worked, bonus_key=_bonus_key(page)), "csrf_token": token.group(1)})
    assert given.status_code == 302
    assert len(_bonuses(engine)) == 1


# --- the annotator's earnings ---------------------------------------------------------------------------------


def test_the_annotator_sees_the_bonus_its_project_and_reason_in_earnings(worked: World, as_user) -> None:
    assert as_user(worked.manager).post(_url(worked), data=_form(worked)).status_code == 302
    client = as_user(worked.annotator_user)
    response = client.get("/work/earnings?days=7")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    stat = re.search(r'<div class="stat-label">Bonuses</div><div class="stat-value">([^<]*)</div>', page)
    assert stat is not None, page
    assert stat.group(1) == "€2.50"
    per_day = re.search(r"<h2 class=\"pad\">Per day</h2>(.*?)</table>", page, re.S)
    assert per_day is not None
    assert '<th class="num">Bonuses</th>' in per_day.group(1)
    assert utcnow().strftime("%d %b %Y") in per_day.group(1)
    assert '<td class="num">€2.50</td>' in per_day.group(1)
    listed = re.search(r"<h2 class=\"pad\">Bonuses</h2>(.*?)</section>", page, re.S)
    assert listed is not None
    for text in ("Product reviews", "€2.50", REASON, "<time"):
        assert text in listed.group(1), text


def test_earnings_without_bonuses_say_so(world: World, as_user) -> None:
    page = as_user(world.annotator_user).get("/work/earnings").get_data(as_text=True)
    assert "No bonuses in this period." in page
    assert "No labels or bonuses in this period yet." in page
