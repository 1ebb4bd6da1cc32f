"""Bonuses: paid once per key from the budget to someone who worked on the project, with a reason, fee and event;
seen in the budget, the annotator's earnings and their payable balance; refused clearly otherwise."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.billing import bonuses
from marketplace.billing import services as billing
from marketplace.billing.models import Bonus
from marketplace.events.models import Event
from marketplace.projects.models import Project
from payments import ledger
from payments.integrity import check_integrity
from payments.models import LedgerTransaction
from payments.money import Money
from tests import factories as f
from tests.marketplace.test_billing import World, lease, make_world, submit


def money(amount: int, display: str) -> dict[str, Any]:
    return {"amount_minor": amount, "currency": "EUR", "display": display}


@pytest.fixture
def world(db_session: Session) -> tuple[World, dict[str, str], dict[str, str]]:
    """A funded project (€50.00) whose first annotator has one accepted, paid label; the manager's and that
    annotator's headers."""
    world = make_world(db_session, pay=100)
    billing.fund_project(db_session, project=world.project, amount=Money(5000, "EUR"), idempotency_key="f")
    worked = lease(db_session, world, world.annotators[0])
    label = submit(db_session, worked, state="accepted")
    billing.pay_for_label(db_session, assignment=worked, label_id=label.id)
    manager = f.auth(f.token(db_session, world.manager))
    worker = f.auth(f.token(db_session, db_session.get(User, world.annotators[0].user_id)))
    db_session.commit()
    return world, manager, worker


def url(world: World) -> str:
    return f"/api/v1/projects/{world.project.id}/bonuses"


def body(world: World, **overrides: Any) -> dict[str, Any]:
    return {
        "annotator_id": world.annotators[0].id,
        "amount_minor": 250,
        "currency": "EUR",
        "reason": "Careful work on the hard items",
        **overrides,
    }


def test_a_bonus_pays_the_annotator_from_the_budget_once_per_key(
    client: FlaskClient, db_session: Session, world: Any
) -> None:
    w, manager, worker = world
    first = client.post(url(w), json=body(w), headers={**manager, "Idempotency-Key": "thanks-1"})
    assert first.status_code == 201, first.get_json()
    bonus = first.get_json()
    assert bonus["amount"] == money(250, "€2.50")
    assert bonus["fee"] == money(50, "€0.50")  # the platform's 20%, paid by the budget on top
    assert bonus["reason"] == "Careful work on the hard items"
    assert bonus["idempotency_key"] == "thanks-1"
    assert bonus["granted_by_id"] == w.manager.id

    budget = client.get(f"/api/v1/projects/{w.project.id}/budget", headers=manager).get_json()
    assert budget["spent"] == money(100, "€1.00")  # the label
    assert budget["bonuses"] == money(250, "€2.50")
    assert budget["fees"] == money(70, "€0.70")  # 20 on the label, 50 on the bonus
    assert budget["remaining"] == money(5000 - 120 - 300, "€45.80")
    assert budget["available"] == money(4580, "€45.80")
    assert billing.available_budget(db_session, project=w.project) == Money(4580, "EUR")  # the cached balance

    retry = client.post(url(w), json=body(w), headers={**manager, "Idempotency-Key": "thanks-1"})
    assert retry.status_code == 200
    assert retry.get_json() == bonus
    in_body = client.post(url(w), json=body(w, idempotency_key="thanks-1"), headers=manager)
    assert in_body.status_code == 200
    assert in_body.get_json()["id"] == bonus["id"]
    other = client.post(
        url(w), json=body(w, amount_minor=999), headers={**manager, "Idempotency-Key": "thanks-1"}
    )
    assert other.status_code == 409
    assert other.get_json()["error"]["code"] == "idempotency_conflict"
    assert other.get_json()["error"]["details"]["bonus_id"] == bonus["id"]
    assert db_session.scalar(select(func.count()).select_from(Bonus)) == 1
    assert db_session.scalar(select(func.count()).where(LedgerTransaction.kind == "bonus")) == 1

    earnings = client.get("/api/v1/me/earnings", headers=worker).get_json()
    assert earnings["bonuses"] == money(250, "€2.50")
    assert earnings["accepted"] == money(100, "€1.00")
    assert earnings["payable"] == money(350, "€3.50")  # the next payout run pays both
    assert earnings["bonus_items"] == [
        {
            "bonus_id": bonus["id"],
            "project_id": w.project.id,
            "granted_at": bonus["created_at"],
            "amount": money(250, "€2.50"),
            "reason": "Careful work on the hard items",
        }
    ]
    assert [d["bonuses"] for d in earnings["days"]] == [money(250, "€2.50")]
    balance = ledger.balance(
        db_session, account_code=f"annotator:{w.annotators[0].id}:payable", currency="EUR"
    )
    assert balance.available == Money(350, "EUR")

    events = db_session.scalars(select(Event).where(Event.type == "bonus.granted")).all()
    assert [e.data for e in events] == [
        {
            "bonus_id": bonus["id"],
            "annotator_id": w.annotators[0].id,
            "amount": money(250, "€2.50"),
            "reason": "Careful work on the hard items",
        }
    ]
    assert check_integrity(db_session) == []


def test_a_bonus_needs_a_key_a_reason_and_someone_who_worked_on_the_project(
    client: FlaskClient, db_session: Session, world: Any
) -> None:
    w, manager, _ = world
    keyed = {**manager, "Idempotency-Key": "k"}
    no_key = client.post(url(w), json=body(w), headers=manager)
    assert no_key.status_code == 422
    assert no_key.get_json()["error"]["details"] == {"Idempotency-Key": "required"}
    for bad in (
        body(w, reason=""),
        body(w, reason="   "),
        body(w, reason="x" * 1001),
        body(w, amount_minor=0),
        body(w, amount_minor=2.5),
        body(w, amount_minor="250"),
        body(w, currency="USD"),
        body(w, annotator_id=0),
        body(w, annotator_id=w.annotators[0].id + 0.9),  # not rounded down to someone else
        body(w, annotator_id=str(w.annotators[0].id)),
        body(w, annotator_id=float(w.annotators[0].id)),
        {"amount_minor": 250, "currency": "EUR", "reason": "r"},
        body(w, idempotency_key="has spaces"),
    ):
        response = client.post(url(w), json=bad, headers=keyed)
        assert response.status_code == 422, (bad, response.get_json())
    # someone who never labelled here, and someone who does not exist, get the same answer
    for annotator_id in (w.annotators[1].id, 999_999):
        response = client.post(url(w), json=body(w, annotator_id=annotator_id), headers=keyed)
        assert response.status_code == 422
        assert response.get_json()["error"]["code"] == "not_a_worker"
    assert db_session.scalar(select(func.count()).select_from(Bonus)) == 0


def test_a_bonus_cannot_take_money_held_for_live_leases(
    client: FlaskClient, db_session: Session, world: Any
) -> None:
    w, manager, _ = world
    lease(db_session, w, w.annotators[1])  # holds €1.20 of the €48.80 left
    db_session.commit()
    available = billing.project_budget(db_session, project=w.project).available.amount
    assert available == 5000 - 120 - 120
    too_much = body(w, amount_minor=available)  # + the fee: more than is available
    response = client.post(url(w), json=too_much, headers={**manager, "Idempotency-Key": "big"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "insufficient_funds"
    assert db_session.scalar(select(func.count()).select_from(Bonus)) == 0
    fits = body(w, amount_minor=available * 10_000 // 12_000)  # the bonus and its 20% fit exactly
    response = client.post(url(w), json=fits, headers={**manager, "Idempotency-Key": "fits"})
    assert response.status_code == 201, response.get_json()
    assert billing.project_budget(db_session, project=w.project).available.amount >= 0


def test_bonuses_belong_to_the_projects_organisation(
    client: FlaskClient, db_session: Session, world: Any
) -> None:
    w, manager, worker = world
    outsider = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    reviewer = f.auth(f.token(db_session, f.member(db_session, w.org, "reviewer")))
    finance = f.auth(f.token(db_session, f.member(db_session, w.org, "finance")))
    db_session.commit()
    keyed = {"Idempotency-Key": "k"}
    assert client.post(url(w), json=body(w), headers={**outsider, **keyed}).status_code == 404
    assert client.get(url(w), headers=outsider).status_code == 404
    assert client.post(url(w), json=body(w), headers={**worker, **keyed}).status_code == 404
    assert client.post(url(w), json=body(w), headers={**reviewer, **keyed}).status_code == 403
    assert client.post(url(w), json=body(w), headers={**finance, **keyed}).status_code == 403
    assert client.post(url(w), json=body(w), headers=keyed).status_code == 401
    assert client.get(url(w), headers=finance).status_code == 200
    assert db_session.scalar(select(func.count()).select_from(Bonus)) == 0
    assert client.post(url(w), json=body(w), headers={**manager, **keyed}).status_code == 201


def test_bonuses_are_listed_page_by_page(client: FlaskClient, db_session: Session, world: Any) -> None:
    w, manager, _ = world
    for n in range(5):
        response = client.post(
            url(w), json=body(w, amount_minor=10 + n), headers={**manager, "Idempotency-Key": f"b{n}"}
        )
        assert response.status_code == 201
    first = client.get(url(w), query_string={"limit": 3}, headers=manager).get_json()
    assert [b["amount"]["amount_minor"] for b in first["items"]] == [10, 11, 12]
    rest = client.get(
        url(w), query_string={"limit": 3, "after": first["next_after"]}, headers=manager
    ).get_json()
    assert [b["amount"]["amount_minor"] for b in rest["items"]] == [13, 14]
    assert rest["next_after"] is None


@pytest.mark.postgres
def test_the_same_bonus_sent_many_times_at_once_pays_once(app_config, make_app, db_session, world) -> None:
    w, manager, _ = world
    app = make_app({**app_config, "DATABASE_POOL_SIZE": 12})
    requests = 12
    start = threading.Barrier(requests)
    answers: list[tuple[int, Any]] = []

    def send() -> None:
        client = app.test_client()
        start.wait()
        response = client.post(url(w), json=body(w), headers={**manager, "Idempotency-Key": "once"})
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=send) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (requests - 1) + [201], answers
    assert len({answer["id"] for _, answer in answers}) == 1
    db_session.expire_all()
    assert db_session.scalar(select(func.count()).select_from(Bonus)) == 1
    assert billing.project_budget(db_session, project=w.project).bonuses == Money(250, "EUR")
    assert check_integrity(db_session) == []


@pytest.mark.postgres
def test_a_retry_racing_the_first_request_waits_for_it_and_answers_its_bonus(
    engine, db_session, world
) -> None:
    """The second request finds no bonus yet, waits on the ledger's key while the first is uncommitted, and then
    answers with the first's bonus instead of failing on the bonuses table's unique key."""
    w, _, _ = world
    args = {
        "annotator_id": w.annotators[0].id,
        "amount": Money(250, "EUR"),
        "reason": "Careful work",
        "client_key": "race",
        "granted_by_id": w.manager.id,
        "fee_bps": 2000,
    }
    first = Session(engine, expire_on_commit=False)
    granted = bonuses.grant_bonus(first, project=first.get(Project, w.project.id), **args)
    second_answer: list[Any] = []

    def second() -> None:
        with Session(engine, expire_on_commit=False) as session:
            second_answer.append(
                bonuses.grant_bonus(session, project=session.get(Project, w.project.id), **args)
            )
            session.commit()

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive()  # waiting for the first's ledger transaction
    first.commit()
    first.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert granted.created
    assert not second_answer[0].created
    assert second_answer[0].bonus.id == granted.bonus.id
    assert db_session.scalar(select(func.count()).select_from(Bonus)) == 1
