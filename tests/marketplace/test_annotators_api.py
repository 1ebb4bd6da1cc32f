"""Annotator profiles over HTTP beyond sign-up: one profile by id (who may see it), the list for managers and
staff, signing up as an existing user, and changing one's skills."""

from __future__ import annotations

from sqlalchemy import func, select

from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile, AnnotatorSkill
from tests import factories as f


def _auth_of(db_session, profile: AnnotatorProfile) -> dict[str, str]:
    return f.auth(f.token(db_session, db_session.get_one(User, profile.user_id)))


def test_one_annotator_is_shown_to_themself_managers_and_staff_only(client, db_session) -> None:
    profile = f.annotator(db_session, price_minor=70, skills={"image-classification": 4})
    other = f.annotator(db_session)
    own = _auth_of(db_session, profile)
    other_auth = _auth_of(db_session, other)
    manager = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    reviewer = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "reviewer")))
    staff = f.auth(f.token(db_session, f.user(db_session, platform_role="finance")))
    db_session.commit()
    url = f"/api/v1/annotators/{profile.id}"
    for headers in (own, manager, staff):
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        body = response.get_json()
        assert body["id"] == profile.id
        assert body["price"]["amount_minor"] == 70
        assert [(s["skill"], s["level"]) for s in body["skills"]] == [("image-classification", 4)]
        assert "token" not in body
    for headers in (other_auth, reviewer):
        hidden = client.get(url, headers=headers)
        assert hidden.status_code == 404
        assert hidden.get_json()["error"]["code"] == "not_found"
    # the same answer as for an id that does not exist: nothing tells the two apart
    missing = client.get(f"/api/v1/annotators/{other.id + 100}", headers=other_auth)
    assert missing.status_code == 404
    assert set(missing.get_json()["error"]) == {"code", "message", "details"}
    assert client.get(url).status_code == 401


def test_managers_and_staff_browse_every_annotator(client, db_session) -> None:
    made = [f.annotator(db_session, price_minor=p) for p in (30, 40, 50)]
    manager = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    admin = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "admin")))
    staff = f.auth(f.token(db_session, f.user(db_session, platform_role="admin")))
    plain = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "finance")))
    db_session.commit()
    for headers in (manager, admin, staff):
        listed = client.get("/api/v1/annotators", headers=headers)
        assert listed.status_code == 200
        assert [(a["id"], a["price"]["amount_minor"]) for a in listed.get_json()] == [
            (p.id, p.price_minor) for p in made
        ]
    refused = client.get("/api/v1/annotators", headers=plain)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "forbidden"


def test_a_signed_in_user_becomes_an_annotator_without_a_new_account(client, db_session) -> None:
    f.skill(db_session, "image-classification")
    user = f.member(db_session, f.organisation(db_session), "reviewer")
    headers = f.auth(f.token(db_session, user))
    db_session.commit()
    body = {"price_minor": 45, "currency": "EUR", "skills": {"image-classification": 2}}
    created = client.post("/api/v1/annotators", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    data = created.get_json()
    assert "token" not in data
    assert data["display_name"] == user.name
    assert db_session.scalar(select(func.count()).select_from(User)) == 1
    profile = db_session.scalar(select(AnnotatorProfile).where(AnnotatorProfile.user_id == user.id))
    assert profile is not None
    assert profile.id == data["id"]
    assert client.get("/api/v1/annotators/me", headers=headers).get_json()["id"] == profile.id
    again = client.post("/api/v1/annotators", json=body, headers=headers)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "already_annotator"
    assert db_session.scalar(select(func.count()).select_from(AnnotatorProfile)) == 1


def test_signing_up_a_new_user_needs_email_password_and_name(client, db_session) -> None:
    f.skill(db_session, "image-classification")
    db_session.commit()
    body = {
        "email": "x@example.test",
        "price_minor": 45,
        "currency": "EUR",
        "skills": {"image-classification": 2},
    }
    response = client.post("/api/v1/annotators", json=body)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["details"] == {"password": "required", "name": "required"}
    assert db_session.scalar(select(func.count()).select_from(User)) == 0


def test_changing_skills_sets_exactly_the_given_levels(client, db_session) -> None:
    for name in ("sentiment", "audio"):
        f.skill(db_session, name)
    profile = f.annotator(db_session, skills={"image-classification": 3, "sentiment": 2})
    headers = _auth_of(db_session, profile)
    db_session.commit()
    patched = client.patch(
        "/api/v1/annotators/me",
        json={"skills": {"sentiment": 5, "audio": 1}, "status": "paused"},
        headers=headers,
    )
    assert patched.status_code == 200, patched.get_json()
    body = patched.get_json()
    assert sorted((s["skill"], s["level"]) for s in body["skills"]) == [("audio", 1), ("sentiment", 5)]
    assert body["status"] == "paused"
    rows = db_session.scalars(select(AnnotatorSkill).where(AnnotatorSkill.annotator_id == profile.id)).all()
    assert len(rows) == 2


def test_a_refused_change_changes_nothing(client, db_session) -> None:
    profile = f.annotator(db_session, price_minor=50, skills={"image-classification": 3})
    headers = _auth_of(db_session, profile)
    db_session.commit()
    refused = client.patch(
        "/api/v1/annotators/me", json={"price_minor": 10, "skills": {"telepathy": 2}}, headers=headers
    )
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"] == {"skills": ["telepathy"]}
    shown = client.get("/api/v1/annotators/me", headers=headers).get_json()
    assert shown["price"]["amount_minor"] == 50
    assert [(s["skill"], s["level"]) for s in shown["skills"]] == [("image-classification", 3)]
    bad_level = client.patch(
        "/api/v1/annotators/me", json={"skills": {"image-classification": 6}}, headers=headers
    )
    assert bad_level.status_code == 422


def test_people_without_a_profile_have_no_me(client, db_session) -> None:
    headers = f.auth(f.token(db_session, f.member(db_session, f.organisation(db_session), "manager")))
    db_session.commit()
    for response in (
        client.get("/api/v1/annotators/me", headers=headers),
        client.patch("/api/v1/annotators/me", json={"capacity": 1}, headers=headers),
    ):
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "not_an_annotator"
