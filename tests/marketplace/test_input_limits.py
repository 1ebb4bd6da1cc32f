"""Values that used to reach the database or the standard library unchecked: ids past the integer column, amounts
past any price, dates at the ends of the calendar, JSON that Python parses but no database stores (or that
crashes the parser), and bodies that are not JSON at all. Each is a 4xx problem, and nothing is written."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile, Skill
from marketplace.projects.models import Task
from payments.payout_models import PayoutRun
from tests import factories as f

BIG = 2**63  # past SQLite's and PostgreSQL's bigint
INT = 2**31  # past PostgreSQL's integer


@pytest.fixture
def world(db_session):
    org = f.organisation(db_session)
    manager = f.member(db_session, org, "manager")
    project = f.project(db_session, org, creator=manager)
    worker = f.annotator(db_session)
    admin = f.user(db_session, platform_role="admin")
    finance = f.user(db_session, platform_role="finance")
    out = {
        "project": project.id,
        "manager": f.auth(f.token(db_session, manager)),
        "annotator": f.auth(f.token(db_session, db_session.get(User, worker.user_id))),
        "admin": f.auth(f.token(db_session, admin)),
        "finance": f.auth(f.token(db_session, finance)),
    }
    db_session.commit()
    return out


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/projects/{big}"),
        ("get", "/api/v1/projects/{int}/tasks"),
        ("post", "/api/v1/assignments/{big}/submit"),
        ("post", "/api/v1/assignments/{int}/heartbeat"),
        ("get", "/api/v1/annotators/{int}"),
        ("post", "/api/v1/labels/{big}/review"),
    ],
)
def test_an_id_past_the_integer_column_is_not_found(client, world, method, path) -> None:
    headers = world["manager"] if "projects" in path else world["annotator"]
    response = getattr(client, method)(path.format(big=BIG, int=INT), headers=headers)
    problem(response, 404)


@pytest.mark.parametrize(
    ("who", "path", "field"),
    [
        ("manager", "/api/v1/projects/{project}/tasks?after={int}", "after"),
        ("annotator", "/api/v1/work/assignments?after={int}", "after"),
        ("manager", "/api/v1/events?project_id={project}&after={big}", "after"),
        ("manager", "/api/v1/review/next?project_id={int}", "project_id"),
        ("finance", "/api/v1/payouts?offset={int}", "offset"),
        ("annotator", "/api/v1/me/earnings?until=0001-01-01T00:00:00Z", "until"),
        ("annotator", "/api/v1/me/earnings?since=0001-01-01T00:00:00%2B14:00", "since"),
        ("finance", "/api/v1/finance/reconciliation?from=9999-12-31&to=9999-12-31", "from"),
    ],
)
def test_query_values_out_of_range_are_invalid_input(client, world, who, path, field) -> None:
    url = path.format(project=world["project"], int=INT, big=BIG)
    error = problem(client.get(url, headers=world[who]), 422)
    assert field in error["details"]


def test_body_values_out_of_range_are_invalid_input_and_write_nothing(client, world, db_session) -> None:
    before = db_session.scalar(select(AnnotatorProfile.price_minor).where(AnnotatorProfile.id.is_not(None)))
    cases = [
        ("patch", "/api/v1/annotators/me", "annotator", {"price_minor": BIG}, "price_minor"),
        ("patch", "/api/v1/annotators/me", "annotator", {"price_minor": 2**53}, "price_minor"),
        ("post", "/api/v1/work/next", "annotator", {"project_id": INT}, "project_id"),
        ("post", "/api/v1/payouts/runs", "finance", {"min_amount_minor": 10**21}, "min_amount_minor"),
        (
            "post",
            f"/api/v1/projects/{world['project']}/funding",
            "manager",
            {"amount_minor": BIG},
            "amount_minor",
        ),
        (
            "patch",
            f"/api/v1/projects/{world['project']}",
            "manager",
            {"deadline": "9999-12-31T23:59:59-14:00"},
            "deadline",
        ),
        ("post", "/api/v1/projects", "admin", f.project_body(organisation_id=INT), "organisation_id"),
    ]
    for method, url, who, body, field in cases:
        error = problem(getattr(client, method)(url, json=body, headers=world[who]), 422)
        assert field in error["details"], (url, error)
    db_session.expire_all()
    assert (
        db_session.scalar(select(AnnotatorProfile.price_minor).where(AnnotatorProfile.id.is_not(None)))
        == before
    )
    assert db_session.scalar(select(func.count()).select_from(PayoutRun)) == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"email": "a@b.test", "password": ' + "1" * 5000 + "}", "digits"),
        ('{"email": "a@b.test", "password": NaN}', "NaN is not a JSON number"),
        ('{"email": "a@b.test", "password": "\\ud800"}', "lone surrogate"),
        ('{"email": "a@b.test\\u0000", "password": "x"}', "NUL"),
    ],
)
def test_json_that_python_parses_but_no_database_stores_is_a_bad_request(client, body, says) -> None:
    error = problem(client.post("/api/v1/tokens", data=body, content_type="application/json"), 400)
    assert says in json.dumps(error["details"])


def test_a_paired_surrogate_escape_is_an_ordinary_character(client, world, db_session) -> None:
    response = client.patch(
        "/api/v1/annotators/me", json={"display_name": "Ana \U0001f600"}, headers=world["annotator"]
    )
    assert response.status_code == 200, response.get_json()
    escaped = client.patch(
        "/api/v1/annotators/me",
        data='{"display_name": "Ana \\ud83d\\ude00"}',
        content_type="application/json",
        headers=world["annotator"],
    )
    assert escaped.status_code == 200, escaped.get_json()
    assert escaped.get_json()["display_name"] == "Ana \U0001f600"


def test_a_body_that_is_not_json_is_refused_not_read_as_no_arguments(client, world, db_session) -> None:
    """A payout run asked for in a form, or as text, used to start a real (not dry) run with the defaults."""
    response = client.post(
        "/api/v1/payouts/runs", data="dry_run=true", content_type="text/plain", headers=world["finance"]
    )
    assert problem(response, 415)["code"] == "unsupported_media_type"
    form = client.post("/api/v1/payouts/runs", data={"dry_run": "true"}, headers=world["finance"])
    problem(form, 415)
    assert db_session.scalar(select(func.count()).select_from(PayoutRun)) == 0
    # no body at all is still no arguments: `POST /work/next` needs none
    assert client.post("/api/v1/work/next", headers=world["annotator"]).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("application/json", '[{"external_id": "n1", "payload": {"x": NaN}}]', "NaN"),
        ("application/json", '[{"external_id": "n1\\u0000", "payload": {}}]', "NUL"),
        ("application/x-ndjson", '{"external_id": "n1", "payload": {"x": "\\ud800"}}\n', "lone surrogate"),
        ("application/x-ndjson", "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
        ("text/csv", "external_id,text\nc1,a\x00b\n", "NUL"),
        ("text/csv", 'external_id,gold_answer\nc1,"' + "[" * 50_000 + '"\n', "nested too deeply"),
    ],
)
def test_an_import_refuses_what_no_database_stores(
    client, world, db_session, content_type, body, says
) -> None:
    response = client.post(
        f"/api/v1/projects/{world['project']}/tasks",
        data=body.encode(),
        content_type=content_type,
        headers=world["manager"],
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
    assert says in json.dumps(response.get_json()["error"])
    assert db_session.scalar(select(func.count()).select_from(Task)) == 0


def test_a_skill_name_with_a_nul_is_refused_on_every_database(client, world, db_session) -> None:
    response = client.post(
        "/api/v1/skills",
        data='{"name": "a\\u0000b"}',
        content_type="application/json",
        headers=world["admin"],
    )
    problem(response, 400)
    assert db_session.scalar(select(func.count()).select_from(Skill).where(Skill.name.like("a%b"))) == 0


def test_the_openapi_document_describes_the_errors_the_api_answers(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    default = spec["components"]["responses"]["DEFAULT_ERROR"]["content"]["application/json"]["schema"]
    name = default["$ref"].rsplit("/", 1)[-1]
    problem_schema = spec["components"]["schemas"][name]
    assert set(problem_schema["properties"]) == {"error"}
    body_name = problem_schema["properties"]["error"]["$ref"].rsplit("/", 1)[-1]
    assert set(spec["components"]["schemas"][body_name]["properties"]) == {"code", "message", "details"}


def test_an_admin_naming_an_unknown_organisation_gets_a_404(client, world, db_session) -> None:
    body = f.project_body(organisation_id=999_999)
    assert (
        problem(client.post("/api/v1/projects", json=body, headers=world["admin"]), 404)["code"]
        == "not_found"
    )


@pytest.mark.postgres
def test_a_value_the_database_refuses_is_invalid_input_not_a_server_error(app, client) -> None:
    """The last line behind the schemas' bounds: PostgreSQL's "data exception" errors are the client's input."""
    from sqlalchemy import text

    from marketplace.api import public
    from marketplace.db import get_session

    @app.get("/api/v1/probe-out-of-range")
    @public
    def probe() -> dict:
        get_session().execute(text("SELECT CAST(:value AS integer)"), {"value": INT})
        return {}

    error = problem(client.get("/api/v1/probe-out-of-range"), 422)
    assert error["code"] == "invalid_input"


def test_an_unknown_email_costs_the_same_password_check_as_a_wrong_password(
    client, world, monkeypatch
) -> None:
    """Otherwise the time of the answer tells whether an account exists (argon2 takes ~0.1 s, a lookup ~2 ms)."""
    from marketplace.accounts import services

    checked: list[str] = []
    real = services.verify_password

    def counting(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(services, "verify_password", counting)
    body = {"email": "nobody@nowhere.test", "password": "not-a-password"}
    assert problem(client.post("/api/v1/tokens", json=body), 401)["code"] == "bad_credentials"
    assert len(checked) == 1
    assert checked[0].startswith("$argon2id$")


def test_the_payout_account_schema_allows_what_it_answers(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    account = next(
        schema
        for name, schema in spec["components"]["schemas"].items()
        if "onboarding_url" in schema.get("properties", {})
    )
    for field in ("onboarding_url", "onboarding_expires_at"):
        assert account["properties"][field].get("nullable") is True, field


def test_a_blank_skill_name_and_a_label_schema_that_admits_only_the_empty_answer_are_refused(
    client, world, db_session
) -> None:
    problem(client.post("/api/v1/skills", json={"name": "   "}, headers=world["admin"]), 422)
    assert db_session.scalar(select(func.count()).select_from(Skill).where(Skill.name == "")) == 0
    schema = {"type": "multi_choice", "choices": ["a", "b"], "min": 0, "max": 0}
    body = f.project_body(label_schema=schema)
    assert (
        "max ≥ 1"
        in problem(client.post("/api/v1/projects", json=body, headers=world["manager"]), 422)["message"]
    )


def test_every_operation_but_the_public_ones_asks_for_a_token_before_reading_its_arguments(client) -> None:
    """Walks the OpenAPI document: without a token, each operation that documents a security requirement answers
    401 — whatever body it was sent — and the ones documented as public (`security: []`) do not."""
    spec = client.get("/api/v1/openapi.json").get_json()
    public = []
    for path, operations in spec["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            response = getattr(client, method)(url, json={"nonsense": [1, 2, 3]})
            if operation.get("security") == []:
                public.append(f"{method.upper()} {path}")
                assert response.status_code != 401, (method, path)
            else:
                assert response.status_code == 401, (method, path, response.get_json())
    assert sorted(public) == ["POST /api/v1/annotators", "POST /api/v1/tokens"]


def test_a_json_body_that_is_not_utf8_is_a_bad_request_not_an_empty_one(client, world) -> None:
    response = client.patch(
        "/api/v1/annotators/me", data=b"\xff\xfe", content_type="application/json", headers=world["annotator"]
    )
    assert "not UTF-8" in json.dumps(problem(response, 400)["details"])


def test_an_id_written_with_other_digits_than_ascii_is_not_found(client, world) -> None:
    response = client.get(f"/api/v1/projects/%EF%BC%91{world['project']}", headers=world["manager"])  # "１"
    problem(response, 404)


@pytest.mark.parametrize(
    ("who", "path", "field"),
    [
        ("manager", "/api/v1/projects/{project}/tasks?limit=%EF%BC%95", "limit"),  # a fullwidth 5
        ("manager", "/api/v1/projects/{project}/tasks?after=1_0", "after"),
        ("annotator", "/api/v1/work/assignments?after=%D9%A3", "after"),  # an Arabic-Indic 3
        ("manager", "/api/v1/events?project_id={project}&limit=%205", "limit"),
        ("manager", "/api/v1/projects/{project}/bonuses?after=2.0", "after"),
        ("manager", "/api/v1/review/next?project_id=%EF%BC%91", "project_id"),
        ("finance", "/api/v1/payouts?offset=+1", "offset"),
    ],
)
def test_query_integers_are_ascii_digits_only(client, world, who, path, field) -> None:
    """Python's int() reads "５", "٣", "1_0" and " 5" as numbers; a query string's integer is plain digits."""
    error = problem(client.get(path.format(project=world["project"]), headers=world[who]), 422)
    assert field in error["details"]
