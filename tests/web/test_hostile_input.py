"""What the web UI is sent that no page should fail on: text no database stores, dates at the ends of the
calendar, ids past the integer column in query strings, and a session cookie holding what the service wrote."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from marketplace.projects.models import Project
from tests import factories as f
from tests.web.conftest import World


def test_a_form_field_with_a_nul_character_is_a_bad_request_and_creates_nothing(
    world: World, as_user, engine
) -> None:
    client = as_user(world.manager)
    with engine.connect() as conn:
        before = conn.scalar(select(func.count()).select_from(Project))
    response = client.post("/projects/new", data={"name": "a\x00b"})
    assert response.status_code == 400
    assert "cannot be stored" in response.get_data(as_text=True)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Project)) == before


def test_a_query_parameter_with_a_nul_character_is_a_bad_request(world: World, as_user) -> None:
    response = as_user(world.platform_finance).get("/finance/payouts?payee=a%00b")
    assert response.status_code == 400
    assert "cannot be stored" in response.get_data(as_text=True)


def test_finance_periods_at_the_ends_of_the_calendar_are_refused_not_a_server_error(
    world: World, as_user
) -> None:
    client = as_user(world.platform_finance)
    for query in ("until=0001-01-01", "since=9999-12-31&until=9999-12-31"):
        for page in ("/finance", "/finance/payouts.csv", "/finance/reconciliation.csv"):
            response = client.get(f"{page}?{query}")
            assert response.status_code == 422, (page, query, response.status_code)


def test_ids_in_query_strings_past_the_integer_column_are_ignored(world: World, as_user) -> None:
    annotator = as_user(world.annotator_user)
    reviewer = as_user(world.reviewer)
    big = 2**63
    assert annotator.get(f"/work/history?before={big}").status_code == 200
    assert annotator.get(f"/work/payouts?before={big}").status_code == 200
    assert reviewer.get(f"/review?project_id={big}").status_code == 200
    assert reviewer.get(f"/review/appeals?project_id={big}").status_code == 200


def test_the_session_cookie_reads_back_whatever_the_service_wrote_into_it(world: World, as_user) -> None:
    """Flask reads its cookie with the app's JSON: the strict reading of client documents must not apply there,
    or a flash message quoting an unusual name would lock its reader out of every page."""
    client = as_user(world.manager)
    with client.session_transaction() as session:
        session["_flashes"] = [("message", "Project “a\x00b” created")]
    assert client.get("/healthz").status_code == 200
    assert client.get("/projects").status_code == 200


def test_a_login_whose_next_holds_a_line_break_goes_home(world: World, client) -> None:
    """A CR or LF in `next` would end the Location header: the redirect failed after the login had happened."""
    for target in ("/projects\r\nX: y", "/projects\n", "/projects\rx"):
        response = client.post(
            "/login",
            query_string={"next": target},
            data={"email": world.manager.email, "password": f.PASSWORD},
        )
        assert response.status_code == 302, target
        assert response.headers["Location"] == "/", target
        client.post("/logout")


def test_asking_for_work_in_a_project_that_could_be_no_id_is_asking_without_one(
    world: World, as_user
) -> None:
    client = as_user(world.annotator_user)
    for project_id in ("²", "¹²", str(2**63), str(10**100), "0"):
        response = client.post("/work/next", data={"project_id": project_id})
        assert response.status_code in (302, 303), (project_id, response.status_code)


def test_an_import_with_a_number_too_large_for_a_float_lists_the_line(world: World, as_user, engine) -> None:
    body = b'{"external_id": "inf", "payload": {"x": 1e999999}}\n{"external_id": "ok", "payload": {"x": 1}}\n'
    response = as_user(world.manager).post(
        f"/projects/{world.project.id}/import",
        data={"file": (io.BytesIO(body), "tasks.jsonl"), "format": "auto"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Nothing was imported" in page
    assert "too large" in page
