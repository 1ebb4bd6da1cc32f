"""Test data builders: real rows through the real services, committed like the edge would."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from marketplace.accounts import services as accounts
from marketplace.accounts.models import Organisation, User
from marketplace.annotators import services as annotators
from marketplace.annotators.models import AnnotatorProfile, Skill
from marketplace.db import utcnow
from marketplace.projects.models import Project
from marketplace.projects.services import create_project

_seq = itertools.count(1)
PASSWORD = "correct horse battery"


def skill(session: Session, name: str = "image-classification") -> Skill:
    from sqlalchemy import select

    existing = session.scalar(select(Skill).where(Skill.name == name))
    return existing or annotators.create_skill(session, name=name)


def organisation(session: Session, slug: str | None = None) -> Organisation:
    slug = slug or f"org-{next(_seq)}"
    return accounts.create_organisation(session, name=slug.title(), slug=slug)


def user(session: Session, *, email: str | None = None, platform_role: str | None = None) -> User:
    n = next(_seq)
    return accounts.create_user(
        session,
        email=email or f"user{n}@example.test",
        name=f"User {n}",
        password=PASSWORD,
        platform_role=platform_role,
    )


def member(session: Session, org: Organisation, role: str = "manager") -> User:
    u = user(session)
    accounts.add_membership(session, user=u, organisation=org, role=role)
    return u


def token(session: Session, u: User) -> str:
    return accounts.issue_token(session, user=u, name="test")[1]


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def annotator(
    session: Session,
    *,
    skills: dict[str, int] | None = None,
    price_minor: int = 50,
    currency: str = "EUR",
    capacity: int = 5,
    labels_per_hour: float = 60.0,
) -> AnnotatorProfile:
    skills = skills or {"image-classification": 3}
    for name in skills:
        skill(session, name)
    u = user(session)
    return annotators.create_profile(
        session,
        user=u,
        display_name=u.name,
        price_minor=price_minor,
        currency=currency,
        capacity=capacity,
        labels_per_hour=labels_per_hour,
        skills=skills,
    )


def project(session: Session, org: Organisation, creator: User | None = None, **overrides: Any) -> Project:
    skill(session, overrides.get("skill", "image-classification"))
    fields: dict[str, Any] = {
        "name": f"Project {next(_seq)}",
        "label_schema": {"type": "single_choice", "choices": ["cat", "dog", "other"]},
        "skill": "image-classification",
        "min_level": 1,
        "pay_per_label_minor": 100,
        "currency": "EUR",
        "labels_per_item": 1,
        "review_policy": "manual",
        "deadline": utcnow() + timedelta(days=2),
        "status": "active",
    }
    fields.update(overrides)
    creator = creator or member(session, org, "manager")
    return create_project(session, organisation_id=org.id, created_by_id=creator.id, fields=fields)


def project_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Cats and dogs",
        "label_schema": {"type": "single_choice", "choices": ["cat", "dog"]},
        "skill": "image-classification",
        "pay_per_label_minor": 80,
        "currency": "EUR",
        "labels_per_item": 2,
        "deadline": (utcnow() + timedelta(days=5)).isoformat(),
    }
    body.update(overrides)
    return body
