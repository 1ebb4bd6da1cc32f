"""The planner's cache in Redis: each plan stores its annotator potentials under the app's prefix and the next
plan starts from them; the cache is only an accelerator, so losing it (flushed, or Redis unreachable) costs a
cold plan with the same offers."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.billing.services import fund_project
from marketplace.planning import jobs
from marketplace.planning.models import Offer
from marketplace.projects.imports import import_tasks
from marketplace.redis import key
from payments.money import Money
from tests import factories as f

ITEMS = 6


@pytest.fixture
def pool(db_session: Session) -> dict[str, int]:
    """Six items and two annotators: a cheap one whose capacity runs out (a positive potential), a dear one."""
    project = f.project(db_session, f.organisation(db_session), pay_per_label_minor=100)
    import_tasks(
        db_session,
        project=project,
        rows=[(i, {"external_id": f"i{i}", "payload": {"i": i}}) for i in range(ITEMS)],
    )
    fund_project(db_session, project=project, amount=Money(1_000_00, "EUR"), idempotency_key="fund")
    cheap = f.annotator(db_session, price_minor=30, capacity=2)
    dear = f.annotator(db_session, price_minor=80, capacity=10)
    db_session.commit()
    return {"cheap": cheap.id, "dear": dear.id}


@pytest.fixture
def warm_starts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The potentials each plan was started from (the planner itself runs unchanged)."""
    seen: list[Any] = []
    real = jobs.plan_offers

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("warm_potentials"))
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "plan_offers", recording)
    return seen


def _offers(db_session: Session) -> list[tuple[int, int, int, int, str]]:
    db_session.expire_all()
    return [
        (o.annotator_id, o.task_id, o.rank, o.price_minor, o.currency)
        for o in db_session.scalars(select(Offer).order_by(Offer.annotator_id, Offer.rank))
    ]


def _cached(app: Flask, redis_client: redis.Redis) -> Any:
    raw = redis_client.get(key("plan", "potentials", app=app))
    return None if raw is None else json.loads(str(raw))


def _flush_prefix(redis_client: redis.Redis, prefix: str) -> None:
    """What a flushed Redis looks like to this app: nothing under its prefix."""
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


def test_the_next_plan_starts_from_the_cached_potentials(
    app: Flask,
    db_session: Session,
    redis_client: redis.Redis,
    app_config: dict[str, Any],
    pool: dict[str, int],
    warm_starts: list[Any],
) -> None:
    cache_key = f"{app_config['REDIS_PREFIX']}plan:potentials"
    assert redis_client.exists(cache_key) == 0

    first = jobs.run_plan(app, method="guided")

    cached = _cached(app, redis_client)
    assert set(cached) == {"EUR"}
    assert cached["EUR"][str(pool["cheap"])] > 0  # the cheap annotator's capacity binds
    assert str(pool["dear"]) not in cached["EUR"]  # spare capacity: no potential
    assert cache_key in set(redis_client.scan_iter(match=f"{app_config['REDIS_PREFIX']}*"))
    assert 0 < redis_client.ttl(cache_key) <= 24 * 3600
    offered = _offers(db_session)
    assert (first["status"], first["slots_filled"], first["cost"]) == (
        "optimal",
        ITEMS,
        {"EUR": 2 * 30 + 4 * 80},
    )

    second = jobs.run_plan(app, method="guided")

    assert warm_starts == [None, cached]
    assert second["id"] != first["id"]
    assert (second["status"], second["slots_filled"], second["cost"]) == (
        first["status"],
        first["slots_filled"],
        first["cost"],
    )
    assert _offers(db_session) == offered
    assert _cached(app, redis_client) == cached


def test_the_default_method_hands_its_cache_to_the_next_plan_too(
    app: Flask, db_session: Session, redis_client: redis.Redis, pool: dict[str, int], warm_starts: list[Any]
) -> None:
    # a pool this small is solved in one shot, with no potentials to give: the cache holds the currency only
    first = jobs.run_plan(app)
    assert _cached(app, redis_client) == {"EUR": {}}
    offered = _offers(db_session)

    second = jobs.run_plan(app)

    assert warm_starts == [None, {"EUR": {}}]
    assert (second["status"], second["cost"]) == (first["status"], first["cost"])
    assert _offers(db_session) == offered


def test_a_flushed_cache_only_costs_a_cold_plan(
    app: Flask,
    db_session: Session,
    redis_client: redis.Redis,
    app_config: dict[str, Any],
    pool: dict[str, int],
    warm_starts: list[Any],
) -> None:
    jobs.run_plan(app, method="guided")
    offered, cached = _offers(db_session), _cached(app, redis_client)
    assert cached["EUR"]
    _flush_prefix(redis_client, app_config["REDIS_PREFIX"])
    assert _cached(app, redis_client) is None

    again = jobs.run_plan(app, method="guided")

    assert warm_starts == [None, None]  # started cold
    assert again["status"] == "optimal"
    assert _offers(db_session) == offered
    assert _cached(app, redis_client) == cached  # and the cache is rebuilt


@pytest.mark.parametrize(
    "unusable_url", [None, "redis://127.0.0.1:1/0"], ids=["not configured", "unreachable"]
)
def test_without_redis_every_plan_is_cold_with_the_same_offers(
    make_app: Any,
    app_config: dict[str, Any],
    db_session: Session,
    pool: dict[str, int],
    warm_starts: list[Any],
    unusable_url: str | None,
) -> None:
    with_redis = make_app(app_config)
    jobs.run_plan(with_redis, method="guided")
    offered = _offers(db_session)
    without = make_app({**app_config, "REDIS_URL": unusable_url})

    for _ in range(2):
        summary = jobs.run_plan(without, method="guided")
        assert summary["status"] == "optimal"
        assert _offers(db_session) == offered
    assert warm_starts == [None, None, None]


@pytest.mark.parametrize("entry", ["not json", "[1, 2]", '{"EUR": {"7": "high"}}', '{"EUR": [1]}'])
def test_an_unreadable_cache_entry_costs_a_cold_plan(
    app: Flask, db_session: Session, redis_client: redis.Redis, pool: dict[str, int], entry: str
) -> None:
    jobs.run_plan(app, method="guided")
    offered = _offers(db_session)
    redis_client.set(key("plan", "potentials", app=app), entry)

    summary = jobs.run_plan(app, method="guided")

    assert summary["status"] == "optimal"
    assert _offers(db_session) == offered
