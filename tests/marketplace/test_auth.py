from __future__ import annotations

from sqlalchemy import select

from marketplace.accounts.models import ApiToken
from tests import factories as f


def test_token_for_password_then_me(client, db_session) -> None:
    org = f.organisation(db_session)
    user = f.member(db_session, org, "manager")
    db_session.commit()
    response = client.post("/api/v1/tokens", json={"email": user.email.upper(), "password": f.PASSWORD})
    assert response.status_code == 201
    secret = response.get_json()["token"]
    assert secret.startswith("lf_")
    stored = db_session.scalar(select(ApiToken.token_hash).where(ApiToken.user_id == user.id))
    assert stored is not None
    assert secret not in stored
    me = client.get("/api/v1/me", headers=f.auth(secret)).get_json()
    assert me["email"] == user.email
    assert me["memberships"] == [{"organisation_id": org.id, "organisation": org.name, "role": "manager"}]
    assert me["annotator_id"] is None


def test_wrong_password_and_unknown_email_look_the_same(client, db_session) -> None:
    user = f.user(db_session)
    db_session.commit()
    wrong = client.post("/api/v1/tokens", json={"email": user.email, "password": "nope-nope"})
    unknown = client.post("/api/v1/tokens", json={"email": "ghost@example.test", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()


def test_revoked_token_stops_working(client, db_session) -> None:
    user = f.user(db_session)
    secret = f.token(db_session, user)
    db_session.commit()
    token_id = db_session.scalar(select(ApiToken.id).where(ApiToken.user_id == user.id))
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=f.auth(secret)).status_code == 204
    response = client.get("/api/v1/me", headers=f.auth(secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_token"


def test_cannot_revoke_someone_elses_token(client, db_session) -> None:
    alice, bob = f.user(db_session), f.user(db_session)
    alice_secret = f.token(db_session, alice)
    f.token(db_session, bob)
    db_session.commit()
    bob_token = db_session.scalar(select(ApiToken.id).where(ApiToken.user_id == bob.id))
    assert client.delete(f"/api/v1/tokens/{bob_token}", headers=f.auth(alice_secret)).status_code == 404


def test_missing_or_malformed_credentials_are_401(client) -> None:
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/api/v1/me", headers=f.auth("lf_not-a-real-token")).status_code == 401


def test_another_tenants_project_is_404_not_403(client, db_session) -> None:
    mine, theirs = f.organisation(db_session), f.organisation(db_session)
    manager = f.member(db_session, mine, "manager")
    their_project = f.project(db_session, theirs)
    my_project = f.project(db_session, mine, creator=manager)
    secret = f.token(db_session, manager)
    db_session.commit()
    assert client.get(f"/api/v1/projects/{my_project.id}", headers=f.auth(secret)).status_code == 200
    for method, url in [
        ("get", f"/api/v1/projects/{their_project.id}"),
        ("patch", f"/api/v1/projects/{their_project.id}"),
        ("get", f"/api/v1/projects/{their_project.id}/tasks"),
        ("get", f"/api/v1/projects/{their_project.id}/export"),
    ]:
        kwargs = {"json": {"name": "mine now"}} if method == "patch" else {}
        response = getattr(client, method)(url, headers=f.auth(secret), **kwargs)
        assert response.status_code == 404, (method, url)
    listed = client.get("/api/v1/projects", headers=f.auth(secret)).get_json()
    assert [p["id"] for p in listed] == [my_project.id]


def test_reviewer_can_read_but_not_change_a_project(client, db_session) -> None:
    org = f.organisation(db_session)
    project = f.project(db_session, org)
    reviewer = f.member(db_session, org, "reviewer")
    secret = f.token(db_session, reviewer)
    db_session.commit()
    assert client.get(f"/api/v1/projects/{project.id}", headers=f.auth(secret)).status_code == 200
    response = client.patch(f"/api/v1/projects/{project.id}", headers=f.auth(secret), json={"name": "x"})
    assert response.status_code == 403


def test_annotator_signup_and_profile(client, db_session) -> None:
    f.skill(db_session, "sentiment")
    db_session.commit()
    body = {
        "email": "new@annotators.test",
        "password": "long enough pw",
        "name": "New Person",
        "price_minor": 35,
        "currency": "EUR",
        "capacity": 4,
        "skills": {"sentiment": 3},
    }
    created = client.post("/api/v1/annotators", json=body)
    assert created.status_code == 201, created.get_json()
    data = created.get_json()
    secret = data["token"]
    assert data["price"] == {"amount_minor": 35, "currency": "EUR", "display": "€0.35"}
    assert data["skills"] == [{"skill": "sentiment", "level": 3, "accuracy": 0.6667, "gold_seen": 0}]
    again = client.post("/api/v1/annotators", json=body)
    assert again.status_code == 409
    patched = client.patch(
        "/api/v1/annotators/me", headers=f.auth(secret), json={"price_minor": 40, "capacity": 2}
    )
    assert patched.status_code == 200
    assert patched.get_json()["price"]["amount_minor"] == 40
    assert client.get("/api/v1/annotators/me", headers=f.auth(secret)).get_json()["capacity"] == 2
    # an annotator cannot browse other annotators
    assert client.get("/api/v1/annotators", headers=f.auth(secret)).status_code == 403


def test_annotator_signup_with_unknown_skill_writes_nothing(client, db_session) -> None:
    body = {
        "email": "a@b.test",
        "password": "long enough pw",
        "name": "A",
        "price_minor": 1,
        "currency": "EUR",
        "skills": {"telepathy": 2},
    }
    response = client.post("/api/v1/annotators", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == {"skills": ["telepathy"]}
    assert (
        client.post("/api/v1/tokens", json={"email": "a@b.test", "password": "long enough pw"}).status_code
        == 401
    )


def test_only_platform_admin_creates_skills(client, db_session) -> None:
    admin = f.user(db_session, platform_role="admin")
    plain = f.user(db_session)
    admin_secret, plain_secret = f.token(db_session, admin), f.token(db_session, plain)
    db_session.commit()
    assert (
        client.post("/api/v1/skills", json={"name": "audio"}, headers=f.auth(plain_secret)).status_code == 403
    )
    assert (
        client.post("/api/v1/skills", json={"name": "audio"}, headers=f.auth(admin_secret)).status_code == 201
    )
    assert (
        client.post("/api/v1/skills", json={"name": "audio"}, headers=f.auth(admin_secret)).status_code == 409
    )
    names = [s["name"] for s in client.get("/api/v1/skills", headers=f.auth(plain_secret)).get_json()]
    assert names == ["audio"]


def test_password_logins_are_rate_limited(app_config, make_app, db_session) -> None:
    user = f.user(db_session)
    db_session.commit()
    client = make_app({**app_config, "RATELIMIT_ENABLED": True}).test_client()
    statuses = [
        client.post("/api/v1/tokens", json={"email": user.email, "password": "wrong-password"}).status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    limited = client.post("/api/v1/tokens", json={"email": user.email, "password": f.PASSWORD})
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert "Retry-After" in limited.headers
