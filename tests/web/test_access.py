"""Who may open what: login required, areas by role, other tenants' objects hidden, CSRF on every POST."""

from __future__ import annotations

import re

from tests.web.conftest import World, login

PAGES = [
    "/",
    "/work",
    "/work/history",
    "/work/earnings",
    "/work/assignments/1",
    "/work/payouts",
    "/projects",
    "/projects/new",
    "/projects/1",
    "/projects/1/import",
    "/projects/1/funding",
    "/review",
    "/review/appeals",
    "/finance",
    "/finance/payouts.csv",
    "/finance/reconciliation.csv",
]
ACTIONS = [
    "/logout",
    "/work/next",
    "/work/assignments/1/submit",
    "/work/assignments/1/release",
    "/work/assignments/1/heartbeat",
    "/projects/1/import",
    "/projects/new",
    "/projects/1/funding",
    "/work/payouts/account",
    "/review/labels/1",
    "/review/appeals/1",
    "/work/labels/1/appeal",
]


def test_pages_and_actions_send_strangers_to_the_login_page(client) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next="), path
    for path in ACTIONS:
        response = client.post(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login"), path


REFUSED = [
    ("annotator_user", "/projects"),
    ("annotator_user", "/review"),
    ("annotator_user", "/review/appeals"),
    ("annotator_user", "/finance"),
    ("manager", "/work"),
    ("manager", "/work/payouts"),
    ("annotator_user", "/projects/new"),
    ("reviewer", "/projects/new"),
    ("org_finance", "/projects/1/funding"),
    ("manager", "/finance"),
    ("reviewer", "/work/history"),
    ("reviewer", "/finance/payouts.csv"),
    ("org_finance", "/review"),
    ("platform_finance", "/projects"),
    ("platform_finance", "/work/earnings"),
]


def test_each_area_is_refused_to_other_roles(world: World, as_user) -> None:
    for who, path in REFUSED:
        response = as_user(getattr(world, who)).get(path)
        assert response.status_code == 403, (who, path)
        assert response.mimetype == "text/html"
        assert "Not allowed" in response.get_data(as_text=True)


def test_a_project_of_another_tenant_is_not_found(world: World, as_user) -> None:
    client = as_user(world.manager)
    other = world.other_project.id
    assert client.get(f"/projects/{other}").status_code == 404
    assert client.get(f"/projects/{other}/import").status_code == 404
    assert client.post(f"/projects/{other}/import").status_code == 404
    assert client.get(f"/projects/{other}/funding").status_code == 404
    assert client.post(f"/projects/{other}/funding").status_code == 404
    assert client.get("/projects/999999").status_code == 404
    listing = client.get("/projects").get_data(as_text=True)
    assert "Product reviews" in listing
    assert "Globex secrets" not in listing
    # and the other way round
    assert as_user(world.other_manager).get(f"/projects/{world.project.id}").status_code == 404


def test_import_is_for_managers_only(world: World, as_user) -> None:
    pid = world.project.id
    assert as_user(world.reviewer).get(f"/projects/{pid}/import").status_code == 403
    assert as_user(world.org_finance).get(f"/projects/{pid}/import").status_code == 403
    assert as_user(world.manager).get(f"/projects/{pid}/import").status_code == 200


def test_budget_is_shown_to_money_roles_only(world: World, as_user) -> None:
    pid = world.project.id
    assert "Budget" in as_user(world.org_finance).get(f"/projects/{pid}").get_data(as_text=True)
    reviewer_view = as_user(world.reviewer).get(f"/projects/{pid}").get_data(as_text=True)
    assert "Progress" in reviewer_view
    assert "Funded" not in reviewer_view


def test_home_sends_a_single_role_to_its_area(world: World, as_user) -> None:
    for who, where in (
        ("annotator_user", "/work"),
        ("platform_finance", "/finance"),
        ("org_finance", "/projects"),
    ):
        response = as_user(getattr(world, who)).get("/")
        assert response.status_code == 302, who
        assert response.headers["Location"] == where, who


def test_home_offers_a_choice_to_several_roles(world: World, as_user) -> None:
    page = as_user(world.manager).get("/").get_data(as_text=True)
    assert 'href="/projects"' in page
    assert 'href="/review"' in page


def test_pages_carry_security_headers(world: World, as_user) -> None:
    response = as_user(world.annotator_user).get("/work")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_with_csrf_on_a_post_without_the_token_is_refused(world: World, app_config, make_app) -> None:

    app = make_app({**app_config, "WTF_CSRF_ENABLED": True})
    client = app.test_client()
    refused = client.post("/login", data={"email": world.manager.email, "password": "correct horse battery"})
    assert refused.status_code == 400
    assert "CSRF" in refused.get_data(as_text=True)

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token is not None
    accepted = client.post(
        "/login",
        data={
            "email": world.manager.email,
            "password": "correct horse battery",
            "csrf_token": token.group(1),
        },
    )
    assert accepted.status_code == 302

    annotator = login(app.test_client(), world.annotator_user)
    assert annotator.post("/work/next").status_code == 400
    assert (
        annotator.post("/work/assignments/1/heartbeat", headers={"Accept": "application/json"}).status_code
        == 400
    )


def test_the_new_forms_carry_their_csrf_token(world: World, app_config, make_app) -> None:
    app = make_app({**app_config, "WTF_CSRF_ENABLED": True})
    manager = login(app.test_client(), world.manager)
    annotator = login(app.test_client(), world.annotator_user)
    funding = f"/projects/{world.project.id}/funding"
    forms = [
        (manager, "/projects/new", "/projects/new"),
        (manager, funding, funding),
        (annotator, "/work/payouts", "/work/payouts/account"),
    ]
    for client, path, action in forms:
        assert client.post(action).status_code == 400, action
        page = client.get(path).get_data(as_text=True)
        form = r'<form method="post"[^>]*>\s*<input id="csrf_token" name="csrf_token" type="hidden"'
        assert re.search(form, page), path

    page = manager.get(funding).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    key = re.search(r'name="funding_key" type="hidden" value="([^"]+)"', page)
    assert token is not None
    assert key is not None
    funded = manager.post(
        funding, data={"csrf_token": token.group(1), "funding_key": key.group(1), "amount": "10"}
    )
    assert funded.status_code == 302
