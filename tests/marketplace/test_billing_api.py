"""The billing API: funding (idempotent, strict integers, tenant-checked), budget summaries and earnings."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.billing import services as billing
from payments import ledger
from payments.money import Money
from tests import factories as f
from tests.marketplace.test_billing import lease, make_world, submit


def money(amount: int, display: str) -> dict[str, Any]:
    return {"amount_minor": amount, "currency": "EUR", "display": display}


@pytest.fixture
def manager_world(db_session: Session) -> tuple[Any, dict[str, str]]:
    world = make_world(db_session, pay=100)
    headers = f.auth(f.token(db_session, world.manager))
    db_session.commit()
    return world, headers


def test_funding_returns_the_budget_and_is_idempotent(client: FlaskClient, manager_world: Any) -> None:
    world, headers = manager_world
    url = f"/api/v1/projects/{world.project.id}/funding"
    body = {"amount_minor": 12_000, "currency": "EUR"}
    first = client.post(url, json=body, headers={**headers, "Idempotency-Key": "order-77"})
    assert first.status_code == 201, first.get_json()
    data = first.get_json()
    assert data["funded"] == money(12_000, "€120.00")
    assert data["available"] == money(12_000, "€120.00")
    assert data["label_cost"] == money(120, "€1.20")
    assert data["affordable_labels"] == 100
    assert data["funding"]["idempotency_key"] == "order-77"
    assert data["funding"]["amount"] == money(12_000, "€120.00")

    retry = client.post(url, json=body, headers={**headers, "Idempotency-Key": "order-77"})
    assert retry.status_code == 201
    assert retry.get_json()["funding"]["transaction_id"] == data["funding"]["transaction_id"]
    assert retry.get_json()["funded"] == money(12_000, "€120.00")
    in_body = client.post(url, json={**body, "idempotency_key": "order-77"}, headers=headers)
    assert in_body.get_json()["funding"]["transaction_id"] == data["funding"]["transaction_id"]

    other_amount = client.post(
        url, json={**body, "amount_minor": 1}, headers={**headers, "Idempotency-Key": "order-77"}
    )
    assert other_amount.status_code == 409
    assert other_amount.get_json()["error"]["code"] == "idempotency_conflict"
    both = client.post(
        url, json={**body, "idempotency_key": "a"}, headers={**headers, "Idempotency-Key": "b"}
    )
    assert both.status_code == 422

    without_key = client.post(url, json={"amount_minor": 500, "currency": "EUR"}, headers=headers)
    assert without_key.status_code == 201
    assert without_key.get_json()["funded"] == money(12_500, "€125.00")


BAD_FUNDING_BODIES: list[dict[str, Any]] = [
    {"amount_minor": 12.5, "currency": "EUR"},
    {"amount_minor": 1200.0, "currency": "EUR"},
    {"amount_minor": True, "currency": "EUR"},
    {"amount_minor": "1200", "currency": "EUR"},
    {"amount_minor": None, "currency": "EUR"},
    {"amount_minor": 0, "currency": "EUR"},
    {"amount_minor": -100, "currency": "EUR"},
    {"amount_minor": 100, "currency": "eur"},
    {"amount_minor": 100, "currency": "USD"},
    {"amount_minor": 100},
    {"currency": "EUR"},
    {"amount_minor": 100, "currency": "EUR", "idempotency_key": "bad key with spaces"},
    {"amount_minor": 100, "currency": "EUR", "idempotency_key": "x\n"},
    {"amount_minor": 100, "currency": "EUR", "idempotency_key": 7},
]


def test_funding_refuses_anything_but_a_positive_integer_in_the_projects_currency(
    client: FlaskClient, db_session: Session, manager_world: Any
) -> None:
    world, headers = manager_world
    url = f"/api/v1/projects/{world.project.id}/funding"
    for body in BAD_FUNDING_BODIES:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["error"]["code"] == "invalid_input"
    bad_header = client.post(
        url,
        json={"amount_minor": 100, "currency": "EUR"},
        headers={**headers, "Idempotency-Key": "no spaces"},
    )
    assert bad_header.status_code == 422
    assert billing.project_budget(db_session, project=world.project).funded == Money(0, "EUR")


def test_funding_and_budget_are_for_the_projects_organisation_only(
    client: FlaskClient, db_session: Session, manager_world: Any
) -> None:
    world, headers = manager_world
    outsider_org = f.organisation(db_session)
    outsider = f.auth(f.token(db_session, f.member(db_session, outsider_org, "manager")))
    reviewer = f.auth(f.token(db_session, f.member(db_session, world.org, "reviewer")))
    finance = f.auth(f.token(db_session, f.member(db_session, world.org, "finance")))
    db_session.commit()
    funding = f"/api/v1/projects/{world.project.id}/funding"
    budget = f"/api/v1/projects/{world.project.id}/budget"
    body = {"amount_minor": 100, "currency": "EUR"}
    assert client.post(funding, json=body, headers=outsider).status_code == 404
    assert client.get(budget, headers=outsider).status_code == 404
    assert client.post(funding, json=body, headers=reviewer).status_code == 403
    assert client.get(budget, headers=reviewer).status_code == 403
    assert client.post(funding, json=body, headers=finance).status_code == 403
    assert client.get(budget, headers=finance).status_code == 200
    assert client.post(funding, json=body).status_code == 401
    assert client.post("/api/v1/projects/999999/funding", json=body, headers=headers).status_code == 404


def test_budget_summary_numbers(client: FlaskClient, db_session: Session, manager_world: Any) -> None:
    world, headers = manager_world
    billing.fund_project(db_session, project=world.project, amount=Money(1000, "EUR"), idempotency_key="f")
    paid = lease(db_session, world, world.annotators[0])
    label = submit(db_session, paid, state="accepted")
    billing.pay_for_label(db_session, assignment=paid, label_id=label.id)
    lease(db_session, world, world.annotators[1])
    db_session.commit()
    response = client.get(f"/api/v1/projects/{world.project.id}/budget", headers=headers)
    assert response.status_code == 200
    data = response.get_json()
    assert data["project_id"] == world.project.id
    assert data["funded"] == money(1000, "€10.00")
    assert data["held"] == money(120, "€1.20")
    assert data["spent"] == money(100, "€1.00")
    assert data["fees"] == money(20, "€0.20")
    assert data["remaining"] == money(880, "€8.80")
    assert data["available"] == money(760, "€7.60")
    assert data["affordable_labels"] == 6
    assert "funding" not in data


def test_my_earnings(client: FlaskClient, db_session: Session) -> None:
    world = make_world(db_session, pay=100, annotators=1)
    (ann,) = world.annotators
    billing.fund_project(db_session, project=world.project, amount=Money(1000, "EUR"), idempotency_key="f")
    accepted = submit(db_session, lease(db_session, world, ann), state="accepted")
    billing.pay_for_label(db_session, assignment=accepted.assignment, label_id=accepted.id)
    submit(db_session, lease(db_session, world, ann))
    annotator_token = f.auth(f.token(db_session, db_session.get_one(User, ann.user_id)))
    manager_token = f.auth(f.token(db_session, world.manager))
    db_session.commit()

    response = client.get("/api/v1/me/earnings", headers=annotator_token)
    assert response.status_code == 200, response.get_json()
    data = response.get_json()
    assert data["annotator_id"] == ann.id
    assert data["accepted"] == money(100, "€1.00")
    assert data["pending"] == money(100, "€1.00")
    assert data["payable"] == money(100, "€1.00")
    assert data["paid_out"] == money(0, "€0.00")
    assert len(data["days"]) == 1
    assert data["days"][0]["accepted"] == money(100, "€1.00")
    assert {item["review_state"] for item in data["labels"]} == {"accepted", "pending"}
    assert ledger.check_integrity(db_session) == []

    window = client.get(
        "/api/v1/me/earnings",
        query_string={"since": "2020-01-01T00:00:00+00:00", "until": "2020-02-01T00:00:00+00:00"},
        headers=annotator_token,
    )
    assert window.status_code == 200
    assert window.get_json()["labels"] == []
    assert (
        client.get(
            "/api/v1/me/earnings", query_string={"since": "yesterday"}, headers=annotator_token
        ).status_code
        == 422
    )
    assert client.get("/api/v1/me/earnings", headers=manager_token).status_code == 403
    assert client.get("/api/v1/me/earnings").status_code == 401


def test_billing_is_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "post" in paths["/api/v1/projects/{project_id}/funding"]
    assert "get" in paths["/api/v1/projects/{project_id}/budget"]
    assert "get" in paths["/api/v1/me/earnings"]
