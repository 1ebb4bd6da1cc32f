"""`flask seed-demo`: an organisation with staff, ~20 annotators and two projects with tasks, created once."""

from __future__ import annotations

import os
import random
from datetime import timedelta

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from marketplace.accounts import services as accounts
from marketplace.accounts.models import ApiToken, Organisation, User
from marketplace.annotators import services as annotators
from marketplace.annotators.models import Skill
from marketplace.db import unit_of_work, utcnow
from marketplace.projects import imports
from marketplace.projects.models import Project, ProjectStatus
from marketplace.projects.services import create_project

DEMO_PASSWORD = "labelforce-demo"  # noqa: S105  (the published demo password)
DEMO_ORG = "acme-vision"
SKILLS = {
    "image-classification": "Decide what an image shows.",
    "sentiment": "Read a short text and judge its tone.",
    "ner": "Mark people, places and organisations in text.",
}
STAFF = [
    ("admin@labelforce.test", "Ada Admin", None, "admin"),
    ("finance@labelforce.test", "Fin Ance", None, "finance"),
    ("manager@acme.test", "Mona Manager", "manager", None),
    ("reviewer@acme.test", "Rex Reviewer", "reviewer", None),
    ("orgfinance@acme.test", "Olga Finance", "finance", None),
]
FIRST = [
    "Ana",
    "Ben",
    "Chen",
    "Dara",
    "Eli",
    "Fatima",
    "Goran",
    "Hana",
    "Ivo",
    "Jae",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
]


def seed_demo(session: Session, *, rng: random.Random) -> bool:
    """Create the demo once; False if it was there already."""
    if session.scalar(select(Organisation.id).where(Organisation.slug == DEMO_ORG)) is not None:
        return False
    skills = {
        name: annotators.create_skill(session, name=name, description=desc) for name, desc in SKILLS.items()
    }
    org = accounts.create_organisation(session, name="Acme Vision", slug=DEMO_ORG)
    users: dict[str, User] = {}
    for email, name, org_role, platform_role in STAFF:
        user = accounts.create_user(
            session, email=email, name=name, password=DEMO_PASSWORD, platform_role=platform_role
        )
        if org_role:
            accounts.add_membership(session, user=user, organisation=org, role=org_role)
        users[email] = user
    for index, first in enumerate(FIRST):
        user = accounts.create_user(
            session,
            email=f"{first.lower()}@annotators.test",
            name=f"{first} Annotator",
            password=DEMO_PASSWORD,
        )
        level_img, level_text = rng.randint(1, 5), rng.randint(1, 5)
        levels = {"image-classification": level_img, "sentiment": level_text}
        if index % 3 == 0:
            levels["ner"] = rng.randint(2, 5)
        annotators.create_profile(
            session,
            user=user,
            display_name=first,
            price_minor=20 + 8 * max(levels.values()) + rng.randint(0, 6),
            currency="EUR",
            capacity=rng.randint(3, 12),
            labels_per_hour=float(rng.randint(40, 160)),
            skills=levels,
        )
    manager = users["manager@acme.test"]
    now = utcnow()
    pets = create_project(
        session,
        organisation_id=org.id,
        created_by_id=manager.id,
        fields={
            "name": "Pets in photos",
            "instructions": "Pick the animal the photo shows. If several, pick the largest.",
            "label_schema": {"type": "single_choice", "choices": ["cat", "dog", "bird", "other"]},
            "skill": "image-classification",
            "min_level": 2,
            "pay_per_label_minor": 80,
            "currency": "EUR",
            "budget_minor": 500_00,
            "labels_per_item": 3,
            "review_policy": "consensus",
            "review_params": {"gold_rate": 0.1},
            "lease_seconds": 600,
            "deadline": now + timedelta(days=3),
            "status": ProjectStatus.ACTIVE.value,
        },
    )
    reviews = create_project(
        session,
        organisation_id=org.id,
        created_by_id=manager.id,
        fields={
            "name": "Product review sentiment",
            "instructions": "Is the review positive, negative or neutral?",
            "label_schema": {"type": "single_choice", "choices": ["positive", "neutral", "negative"]},
            "skill": "sentiment",
            "min_level": 1,
            "pay_per_label_minor": 70,
            "currency": "EUR",
            "budget_minor": 300_00,
            "labels_per_item": 1,
            "review_policy": "manual",
            "lease_seconds": 900,
            "deadline": now + timedelta(days=7),
            "status": ProjectStatus.ACTIVE.value,
        },
    )
    animals = ["cat", "dog", "bird", "other"]
    pet_rows = [
        (
            i + 1,
            {
                "external_id": f"photo-{i:04d}",
                "payload": {"image_url": f"https://img.example/pets/{i:04d}.jpg"},
                **({"gold_answer": animals[i % 4]} if i % 25 == 0 else {}),
            },
        )
        for i in range(200)
    ]
    imports.import_tasks(session, project=pets, rows=pet_rows)
    texts = [
        "Arrived broken, support never answered.",
        "Does the job.",
        "Best purchase this year!",
        "Too expensive for what it is.",
        "Works as described, nothing special.",
    ]
    review_rows = [
        (
            i + 1,
            {"external_id": f"review-{i:04d}", "payload": {"text": texts[i % len(texts)]}, "priority": i % 3},
        )
        for i in range(120)
    ]
    imports.import_tasks(session, project=reviews, rows=review_rows)
    assert isinstance(skills["ner"], Skill)
    session.flush()
    _fund_demo_projects(session, [pets, reviews])
    return True


def _fund_demo_projects(session: Session, projects: list[Project]) -> None:
    from marketplace.billing.services import fund_project
    from payments.money import Money

    for project in projects:
        fund_project(
            session,
            project=project,
            amount=Money(project.budget_minor, project.currency),
            idempotency_key=f"demo-funding:{project.id}",
        )


def demo_tokens(session: Session) -> list[tuple[str, str]]:
    """Fresh tokens for the demo logins (older demo tokens are revoked: tokens are stored hashed)."""
    emails = [email for email, *_ in STAFF] + [f"{FIRST[0].lower()}@annotators.test"]
    out = []
    for email in emails:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            continue
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.name == "demo", ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        out.append((email, accounts.issue_token(session, user=user, name="demo")[1]))
    return out


@click.command("seed-demo")
@with_appcontext
@click.option("--seed", default=7, show_default=True, help="Random seed of the demo data.")
def seed_demo_command(seed: int) -> None:
    """Create the demo organisation, users, annotators and projects (once), and print logins and tokens."""
    with unit_of_work() as session:
        created = seed_demo(session, rng=random.Random(seed))
        tokens = demo_tokens(session)
    click.echo("demo created" if created else "demo already present: nothing duplicated")
    address = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
    click.echo(f"web: http://{address}/  password for every demo login: {DEMO_PASSWORD}")
    for email, token in tokens:
        click.echo(f"  {email:<28} token {token}")
    click.echo("  annotators: ana@annotators.test … tara@annotators.test (20 of them)")


def init_app(app: Flask) -> None:
    app.cli.add_command(seed_demo_command)
