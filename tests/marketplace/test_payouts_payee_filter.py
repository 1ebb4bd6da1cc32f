"""`GET /api/v1/payouts?payee=`: platform finance lists one payee's payouts (exact reference, newest first, with
the state and paging filters); an unknown payee lists nothing; annotators never reach another payee's payouts."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from marketplace.accounts.models import User
from marketplace.payouts import services
from payments import payout_runs, payouts
from payments.money import Money
from payments.throttle import LocalTokenBucket, Throttle
from tests import factories as f
from tests.payments.conftest import earn


def _pay(app: Flask, payee: str, amount_minor: int) -> int:
    """Give `payee` a balance and pay it out through a run on the app's (local) gateway; the payout's id."""
    scope = services.session_scope(app)
    gateway = services.get_gateway(app)
    earn(scope, payee, Money(amount_minor, "EUR"))
    with scope() as session:
        payouts.open_payout_account(session, gateway=gateway, reference=payee, country="DE", currency="EUR")
    report = payout_runs.run_payouts(
        scope,
        gateway=gateway,
        throttle=Throttle(LocalTokenBucket(rate=100_000)),
        worker="test",
        min_amount_minor=1000,
        requested_by="test",
    )
    assert report.submit.settled == report.requested
    (payout_id,) = report.requested
    return payout_id


def _listed(client: FlaskClient, headers: dict[str, str], query: str) -> list[tuple[int, str]]:
    response = client.get(f"/api/v1/payouts{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return [(p["id"], p["payee"]) for p in response.get_json()["items"]]


@pytest.fixture
def people(db_session: Session) -> dict[str, Any]:
    first, second = f.annotator(db_session), f.annotator(db_session)
    people = {
        "first": f"annotator:{first.id}",
        "second": f"annotator:{second.id}",
        # a payee whose reference starts with the first one's
        "longer": f"annotator:{first.id}0",
        "first_headers": f.auth(f.token(db_session, db_session.get_one(User, first.user_id))),
        "second_headers": f.auth(f.token(db_session, db_session.get_one(User, second.user_id))),
        "finance": f.auth(f.token(db_session, f.user(db_session, platform_role="finance"))),
        "admin": f.auth(f.token(db_session, f.user(db_session, platform_role="admin"))),
        "org_finance": f.auth(
            f.token(db_session, f.member(db_session, f.organisation(db_session), "finance"))
        ),
    }
    db_session.commit()
    return people


def test_the_payee_filter_lists_that_payee_only_newest_first(
    app: Flask, client: FlaskClient, people: dict[str, Any]
) -> None:
    first_old = _pay(app, people["first"], 1500)
    second = _pay(app, people["second"], 2000)
    longer = _pay(app, people["longer"], 3000)
    first_new = _pay(app, people["first"], 1200)
    finance = people["finance"]

    assert _listed(client, finance, f"?payee={people['first']}") == [
        (first_new, people["first"]),
        (first_old, people["first"]),
    ]
    assert _listed(client, finance, f"?payee={people['second']}") == [(second, people["second"])]
    assert _listed(client, finance, f"?payee={people['longer']}") == [(longer, people["longer"])]
    assert _listed(client, people["admin"], f"?payee={people['first']}") == [
        (first_new, people["first"]),
        (first_old, people["first"]),
    ]
    everyone = _listed(client, finance, "")
    assert [payout_id for payout_id, _ in everyone] == [first_new, longer, second, first_old]
    # the reference is matched exactly, not as a prefix or pattern
    assert _listed(client, finance, "?payee=annotator:") == []
    assert _listed(client, finance, "?payee=annotator:%25") == []
    assert _listed(client, finance, f"?payee={people['first'].upper()}") == []


def test_the_payee_filter_combines_with_state_and_paging(
    app: Flask, client: FlaskClient, people: dict[str, Any]
) -> None:
    ids = [_pay(app, people["first"], 1000 + n) for n in range(3)]
    _pay(app, people["second"], 5000)
    finance, payee = people["finance"], people["first"]

    response = client.get(f"/api/v1/payouts?payee={payee}&state=settled", headers=finance)
    items = response.get_json()["items"]
    assert [(p["id"], p["state"], p["amount"]["amount_minor"]) for p in items] == [
        (ids[2], "settled", 1002),
        (ids[1], "settled", 1001),
        (ids[0], "settled", 1000),
    ]
    assert _listed(client, finance, f"?payee={payee}&state=failed") == []
    assert _listed(client, finance, f"?payee={payee}&limit=2") == [(ids[2], payee), (ids[1], payee)]
    assert _listed(client, finance, f"?payee={payee}&limit=2&offset=2") == [(ids[0], payee)]
    assert _listed(client, finance, f"?payee={payee}&offset=3") == []


def test_an_unknown_payee_lists_nothing_and_an_empty_one_does_not_filter(
    app: Flask, client: FlaskClient, people: dict[str, Any]
) -> None:
    paid = _pay(app, people["first"], 1500)
    finance = people["finance"]

    assert _listed(client, finance, "?payee=annotator:999999") == []
    assert _listed(client, finance, "?payee=project:1") == []
    # an empty value is no filter at all (as if the parameter were absent)
    assert _listed(client, finance, "?payee=") == [(paid, people["first"])]
    too_long = client.get(f"/api/v1/payouts?payee={'x' * 201}", headers=finance)
    assert too_long.status_code == 422
    assert "payee" in too_long.get_json()["error"]["details"]


def test_annotators_cannot_list_another_payees_payouts(
    app: Flask, client: FlaskClient, people: dict[str, Any]
) -> None:
    first = _pay(app, people["first"], 1500)
    second = _pay(app, people["second"], 2500)

    for outsider in (people["first_headers"], people["second_headers"], people["org_finance"]):
        refused = client.get(f"/api/v1/payouts?payee={people['first']}", headers=outsider)
        assert refused.status_code == 403
    assert client.get(f"/api/v1/payouts?payee={people['first']}").status_code == 401
    # their own list ignores a payee they pass: it is always theirs
    own = client.get(f"/api/v1/me/payouts?payee={people['first']}", headers=people["second_headers"])
    assert [p["id"] for p in own.get_json()["items"]] == [second]
    mine = client.get("/api/v1/me/payouts", headers=people["first_headers"])
    assert [p["id"] for p in mine.get_json()["items"]] == [first]
