from __future__ import annotations

from tests import factories as f


def _manager(db_session):
    org = f.organisation(db_session)
    f.skill(db_session)
    manager = f.member(db_session, org, "manager")
    secret = f.token(db_session, manager)
    db_session.commit()
    return org, f.auth(secret)


def test_create_read_update_project(client, db_session) -> None:
    org, headers = _manager(db_session)
    created = client.post(
        "/api/v1/projects",
        json=f.project_body(review_policy="consensus", review_params={"agreement_threshold": 0.75}),
        headers=headers,
    )
    assert created.status_code == 201, created.get_json()
    project = created.get_json()
    assert project["organisation_id"] == org.id
    assert project["status"] == "draft"
    assert project["pay_per_label"] == {"amount_minor": 80, "currency": "EUR", "display": "€0.80"}
    assert project["review_params"]["agreement_threshold"] == 0.75
    assert project["review_params"]["max_extra_labels"] == 2  # defaults are filled in
    url = f"/api/v1/projects/{project['id']}"
    patched = client.patch(url, json={"status": "active", "labels_per_item": 3}, headers=headers)
    assert patched.status_code == 200
    assert patched.get_json()["labels_per_item"] == 3
    assert client.get(url, headers=headers).get_json()["status"] == "active"


def test_status_transitions_are_checked(client, db_session) -> None:
    _, headers = _manager(db_session)
    project_id = client.post("/api/v1/projects", json=f.project_body(), headers=headers).get_json()["id"]
    url = f"/api/v1/projects/{project_id}"
    assert client.patch(url, json={"status": "completed"}, headers=headers).status_code == 200
    response = client.patch(url, json={"status": "active"}, headers=headers)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "bad_transition"


def test_consensus_needs_two_labels(client, db_session) -> None:
    _, headers = _manager(db_session)
    body = f.project_body(review_policy="consensus", labels_per_item=1)
    assert client.post("/api/v1/projects", json=body, headers=headers).status_code == 422


def test_unknown_review_parameter(client, db_session) -> None:
    _, headers = _manager(db_session)
    body = f.project_body(review_params={"gold_rat": 0.1})
    response = client.post("/api/v1/projects", json=body, headers=headers)
    assert response.status_code == 422
    assert "gold_rat" in response.get_json()["error"]["message"]


def test_manager_of_several_organisations_must_say_which(client, db_session) -> None:
    org_a, org_b = f.organisation(db_session), f.organisation(db_session)
    f.skill(db_session)
    manager = f.member(db_session, org_a, "manager")
    from marketplace.accounts.services import add_membership

    add_membership(db_session, user=manager, organisation=org_b, role="manager")
    headers = f.auth(f.token(db_session, manager))
    db_session.commit()
    assert client.post("/api/v1/projects", json=f.project_body(), headers=headers).status_code == 422
    created = client.post("/api/v1/projects", json=f.project_body(organisation_id=org_b.id), headers=headers)
    assert created.get_json()["organisation_id"] == org_b.id
    other = f.organisation(db_session)
    db_session.commit()
    assert (
        client.post(
            "/api/v1/projects", json=f.project_body(organisation_id=other.id), headers=headers
        ).status_code
        == 403
    )


def test_a_deadline_cannot_move_into_the_past(client, db_session) -> None:
    _, headers = _manager(db_session)
    project_id = client.post("/api/v1/projects", json=f.project_body(), headers=headers).get_json()["id"]
    url = f"/api/v1/projects/{project_id}"
    refused = client.patch(url, json={"deadline": "2020-01-01T00:00:00Z"}, headers=headers)
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"] == {"deadline": "2020-01-01T00:00:00+00:00"}
    assert client.get(url, headers=headers).get_json()["deadline"] != "2020-01-01T00:00:00+00:00"
