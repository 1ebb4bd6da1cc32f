"""Logging in and out through the form."""

from __future__ import annotations

from tests import factories as f
from tests.web.conftest import World


def test_login_with_the_right_password_opens_the_users_area(world: World, client) -> None:
    response = client.post(
        "/login", data={"email": world.annotator_user.email.upper(), "password": f.PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get("/", follow_redirects=True).request.path == "/work"


def test_a_wrong_password_says_so_without_telling_which_part_was_wrong(world: World, client) -> None:
    response = client.post("/login", data={"email": world.manager.email, "password": "nope-nope"})
    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    unknown = client.post("/login", data={"email": "nobody@example.test", "password": "nope-nope"})
    assert "Wrong email or password." in unknown.get_data(as_text=True)


def test_login_returns_to_the_page_that_asked(world: World, client) -> None:
    first = client.get("/projects")
    response = client.post(
        first.headers["Location"], data={"email": world.manager.email, "password": f.PASSWORD}
    )
    assert response.headers["Location"] == "/projects"


def test_login_never_redirects_to_another_site(world: World, client) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        response = client.post(
            "/login",
            query_string={"next": target},
            data={"email": world.manager.email, "password": f.PASSWORD},
        )
        assert response.headers["Location"] == "/", target
        client.post("/logout")


def test_logout_ends_the_session(world: World, client) -> None:
    client.post("/login", data={"email": world.manager.email, "password": f.PASSWORD})
    assert client.get("/projects").status_code == 200
    response = client.post("/logout", follow_redirects=True)
    assert "You are logged out." in response.get_data(as_text=True)
    assert client.get("/projects").status_code == 302


def test_a_logged_in_user_is_sent_home_from_the_login_page(world: World, client) -> None:
    client.post("/login", data={"email": world.manager.email, "password": f.PASSWORD})
    assert client.get("/login").headers["Location"] == "/"


def test_an_empty_form_is_refused_with_field_errors(client) -> None:
    response = client.post("/login", data={})
    assert response.status_code == 422
    assert "This field is required." in response.get_data(as_text=True)
