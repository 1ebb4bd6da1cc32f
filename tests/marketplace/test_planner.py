"""The planner: open slots and available annotators in, ranked offers out, by the routing engine's rules."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from marketplace.accounts.models import User
from marketplace.billing.services import fund_project
from marketplace.db import utcnow
from marketplace.planning.models import Offer, PlanRun
from marketplace.planning.planner import plan_offers
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Task
from marketplace.work import leasing
from payments.money import Money
from tests import factories as f

FEE_BPS = 2000


def make_project(db_session, *, items: int, budget_minor: int = 1_000_00, **overrides):
    org = f.organisation(db_session)
    project = f.project(db_session, org, **overrides)
    import_tasks(
        db_session,
        project=project,
        rows=[(i, {"external_id": f"i{i}", "payload": {"i": i}}) for i in range(items)],
    )
    if budget_minor:
        fund_project(
            db_session, project=project, amount=Money(budget_minor, "EUR"), idempotency_key=f"f{project.id}"
        )
    return project


def plan(db_session, **kwargs):
    run, _ = plan_offers(db_session, now=utcnow(), fee_bps=FEE_BPS, **kwargs)
    db_session.commit()
    return run


def offers(db_session) -> list[Offer]:
    return list(db_session.scalars(select(Offer).order_by(Offer.annotator_id, Offer.rank)))


def test_offers_respect_redundancy_capacity_and_prefer_the_cheapest(db_session) -> None:
    make_project(db_session, items=3, labels_per_item=2, pay_per_label_minor=100)
    cheap = [f.annotator(db_session, price_minor=30, capacity=2) for _ in range(2)]
    dear = f.annotator(db_session, price_minor=90, capacity=10)
    db_session.commit()
    run = plan(db_session)
    assert (run.status, run.slots_open, run.slots_filled) == ("optimal", 6, 6)
    by_task = Counter(o.task_id for o in offers(db_session))
    assert set(by_task.values()) == {2}  # two distinct annotators for each item
    by_annotator = Counter(o.annotator_id for o in offers(db_session))
    assert by_annotator == {cheap[0].id: 2, cheap[1].id: 2, dear.id: 2}  # cheap ones full, the rest to dear
    assert run.cost == {"EUR": 4 * 30 + 2 * 90}
    pairs = [(o.task_id, o.annotator_id) for o in offers(db_session)]
    assert len(pairs) == len(set(pairs))
    ranks = [o.rank for o in offers(db_session) if o.annotator_id == dear.id]
    assert ranks == [1, 2]


def test_offers_respect_skill_level_price_paused_and_unseen_annotators(db_session) -> None:
    make_project(db_session, items=2, min_level=3, pay_per_label_minor=100)
    ok = f.annotator(db_session, skills={"image-classification": 3})
    junior = f.annotator(db_session, skills={"image-classification": 2})
    pricey = f.annotator(db_session, skills={"image-classification": 5}, price_minor=101)
    paused = f.annotator(db_session, skills={"image-classification": 5})
    paused.status = "paused"
    away = f.annotator(db_session, skills={"image-classification": 5})
    away.last_seen_at = utcnow() - timedelta(days=2)
    db_session.commit()
    plan(db_session)
    assert {o.annotator_id for o in offers(db_session)} == {ok.id}
    assert not {junior.id, pricey.id, paused.id, away.id} & {o.annotator_id for o in offers(db_session)}


def test_live_leases_take_their_slots_and_their_annotator_out(db_session) -> None:
    project = make_project(db_session, items=1, labels_per_item=2)
    first, second, third = (f.annotator(db_session) for _ in range(3))
    db_session.commit()
    leased = leasing.lease_next_assignment(
        db_session, annotator=first, now=utcnow(), fee_bps=FEE_BPS
    ).assignment
    db_session.commit()
    run = plan(db_session)
    assert run.slots_open == 1
    planned = offers(db_session)
    assert len(planned) == 1
    assert planned[0].task_id == leased.task_id
    assert planned[0].annotator_id in {second.id, third.id}  # never the annotator who already has the item
    assert db_session.get(Task, leased.task_id).project_id == project.id


def test_budget_limits_the_slots_offered(db_session) -> None:
    # the budget covers three labels at the project's pay rate (100 + 20 fee): routing counts what the project
    # could owe, whoever takes the slots
    make_project(db_session, items=10, budget_minor=3 * 120, pay_per_label_minor=100)
    for _ in range(3):
        f.annotator(db_session, price_minor=50, capacity=10)
    db_session.commit()
    run = plan(db_session)
    assert run.slots_open == 10
    assert run.slots_filled == 3


def test_deadline_limits_what_an_annotator_is_offered(db_session) -> None:
    make_project(db_session, items=10, deadline=utcnow() + timedelta(minutes=31))
    slow = f.annotator(db_session, capacity=10, labels_per_hour=6.0)  # one label per 10 minutes: 3 fit
    db_session.commit()
    run = plan(db_session)
    assert run.slots_filled == 3
    assert {o.annotator_id for o in offers(db_session)} == {slow.id}


def test_a_new_plan_replaces_the_offers_and_next_task_uses_them(db_session) -> None:
    make_project(db_session, items=4)
    worker = f.annotator(db_session, capacity=2)
    db_session.commit()
    first_run = plan(db_session)
    assert first_run.slots_filled == 2
    second_run = plan(db_session)
    assert {o.plan_run_id for o in offers(db_session)} == {second_run.id}
    planned = [o.task_id for o in offers(db_session)]
    got = leasing.lease_next_assignment(
        db_session, annotator=worker, now=utcnow(), fee_bps=FEE_BPS
    ).assignment
    db_session.commit()
    assert got.source == "plan"
    assert got.task_id == planned[0]
    assert len(offers(db_session)) == 1


@pytest.mark.parametrize("method", ["flow", "greedy", "cpsat"])
def test_every_method_plans(db_session, method) -> None:
    make_project(db_session, items=5, labels_per_item=2)
    for price in (20, 40, 60):
        f.annotator(db_session, price_minor=price, capacity=3)
    db_session.commit()
    run = plan(db_session, method=method)
    assert run.method == method
    if method == "greedy":
        assert 0 < run.slots_filled <= 9  # the pull-queue baseline may strand capacity
    else:
        assert run.slots_filled == 9  # capacity 3 × 3 of 10 open slots
    assert db_session.scalar(select(PlanRun.id).where(PlanRun.id == run.id)) == run.id


def test_plan_api_and_my_offers(client, db_session) -> None:
    project = make_project(db_session, items=2)
    worker = f.annotator(db_session, price_minor=45)
    manager = f.member(db_session, _org(db_session, project), "manager")
    manager_headers = f.auth(f.token(db_session, manager))
    worker_headers = f.auth(f.token(db_session, db_session.get(User, worker.user_id)))
    db_session.commit()
    assert client.get("/api/v1/routing/plans/latest", headers=manager_headers).status_code == 404
    run = plan(db_session)
    latest = client.get("/api/v1/routing/plans/latest", headers=manager_headers).get_json()
    assert latest["id"] == run.id
    assert latest["slots_filled"] == 2
    assert client.get("/api/v1/routing/plans/latest", headers=worker_headers).status_code == 403
    mine = client.get("/api/v1/annotators/me/offers", headers=worker_headers).get_json()["items"]
    assert [o["rank"] for o in mine] == [1, 2]
    assert mine[0]["price"] == {"amount_minor": 45, "currency": "EUR", "display": "€0.45"}


def _org(db_session, project):
    from marketplace.accounts.models import Organisation

    return db_session.get(Organisation, project.organisation_id)


def test_plan_cli_prints_a_summary(runner, db_session) -> None:
    make_project(db_session, items=3)
    f.annotator(db_session, price_minor=30)
    db_session.commit()
    result = runner.invoke(args=["routing", "plan"])
    assert result.exit_code == 0, result.output
    assert "3 of 3 open slots offered to 1 annotators over 3 items" in result.output
    assert "€0.90" in result.output


def test_production_objective_breaks_price_ties_by_accuracy(db_session) -> None:
    make_project(db_session, items=1)
    careless, careful = f.annotator(db_session, price_minor=50), f.annotator(db_session, price_minor=50)
    careless.skills[0].accuracy_alpha, careless.skills[0].accuracy_beta = 2.0, 8.0
    careful.skills[0].accuracy_alpha, careful.skills[0].accuracy_beta = 9.0, 1.0
    db_session.commit()
    plan(db_session, objective="production")
    assert [o.annotator_id for o in offers(db_session)] == [careful.id]
