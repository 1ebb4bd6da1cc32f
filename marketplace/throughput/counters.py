"""Live label counters in Redis (per-minute and per-hour buckets), with the database as the truth behind them.

Buckets are hashes `tp:{scope}:{id}:{m|h}:{epoch minute or hour}` with fields `s` (labels submitted) and `a`
(labels accepted), for three scopes: `project` and `skill` count ordinary items only (gold items are controls,
not progress), `annotator` counts everything the annotator did. Increments are queued on the session and sent
after its transaction commits, so a rolled-back request never counts.

Redis is trusted only from the instant in the key `tp:coverage`: `rebuild_counters` fills the buckets from the
labels table and sets it, and a read that finds it missing (Redis flushed or never filled) rebuilds under a
short lock, or answers from the database if another process is rebuilding. Without Redis every read is a
database query over the same bucket-aligned windows, so both paths give the same numbers. A rebuild that races
live increments can be off by the few labels committed while it ran; the next rebuild corrects them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis as redis_lib
from flask import current_app, has_app_context
from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from marketplace.db import within
from marketplace.projects.models import Project
from marketplace.redis import get_redis
from marketplace.work.models import Label, ReviewState

log = logging.getLogger(__name__)

SCOPES = ("project", "skill", "annotator")
MINUTE_TTL_SECONDS = 3 * 3600
HOUR_TTL_SECONDS = 26 * 3600
#: how far back a lazy rebuild reaches: the longest window plus its partial first hour
REBUILD_HOURS = 25
_OPS = "labelforce.throughput.ops"


@dataclass(frozen=True, slots=True)
class Window:
    """A read window aligned to buckets: minutes for the short ones, hours for the day."""

    name: str
    start: datetime
    end: datetime
    granularity: str  # "m" or "h"

    @property
    def hours(self) -> float:
        return max((self.end - self.start).total_seconds() / 3600.0, 1 / 60)


@dataclass(frozen=True, slots=True)
class WindowCount:
    """Labels submitted and accepted in one window, and their rates."""

    window: Window
    submitted: int
    accepted: int

    def to_json(self) -> dict[str, Any]:
        """The API's shape."""
        return {
            "window": self.window.name,
            "since": self.window.start.isoformat(),
            "submitted": self.submitted,
            "accepted": self.accepted,
            "submitted_per_hour": round(self.submitted / self.window.hours, 2),
            "accepted_per_hour": round(self.accepted / self.window.hours, 2),
        }


def windows(now: datetime) -> list[Window]:
    """The last 15 minutes, hour and day, each starting on a bucket boundary."""
    minute = now.replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    return [
        Window("15m", minute - timedelta(minutes=14), now, "m"),
        Window("1h", minute - timedelta(minutes=59), now, "m"),
        Window("24h", hour - timedelta(hours=23), now, "h"),
    ]


def _epoch_bucket(moment: datetime, granularity: str) -> int:
    return int(moment.timestamp()) // (60 if granularity == "m" else 3600)


def _prefix() -> str:
    return str(current_app.config.get("REDIS_PREFIX", "lf:")) if has_app_context() else "lf:"


def _bucket_key(prefix: str, scope: str, scope_id: int, granularity: str, bucket: int) -> str:
    return f"{prefix}tp:{scope}:{scope_id}:{granularity}:{bucket}"


def _coverage_key(prefix: str) -> str:
    return f"{prefix}tp:coverage"


# --- increments, sent after commit ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Increment:
    transaction: SessionTransaction
    client: redis_lib.Redis
    prefix: str
    scopes: tuple[tuple[str, int], ...]
    field: str
    at: datetime


def _scopes_of(session: Session, label: Label) -> tuple[tuple[str, int], ...]:
    scopes: list[tuple[str, int]] = [("annotator", label.annotator_id)]
    if not label.is_gold:
        project = session.get_one(Project, label.project_id)
        scopes += [("project", project.id), ("skill", project.skill_id)]
    return tuple(scopes)


def _queue(session: Session, *, label: Label, field: str, at: datetime) -> None:
    client = get_redis() if has_app_context() else None
    if client is None:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    assert transaction is not None  # a label was just written in it
    session.info.setdefault(_OPS, []).append(
        _Increment(transaction, client, _prefix(), _scopes_of(session, label), field, at)
    )


def record_label_submitted(session: Session, *, label: Label, now: datetime) -> None:
    """Count a submitted label in the live counters once the transaction commits."""
    _queue(session, label=label, field="s", at=now)


def record_label_accepted(session: Session, *, label: Label, now: datetime) -> None:
    """Count an accepted label in the live counters once the transaction commits."""
    _queue(session, label=label, field="a", at=now)


def _send(increments: list[_Increment]) -> None:
    by_client: dict[int, list[_Increment]] = defaultdict(list)
    for inc in increments:
        by_client[id(inc.client)].append(inc)
    for batch in by_client.values():
        try:
            pipe = batch[0].client.pipeline(transaction=False)
            for inc in batch:
                for scope, scope_id in inc.scopes:
                    for granularity, ttl in (("m", MINUTE_TTL_SECONDS), ("h", HOUR_TTL_SECONDS)):
                        name = _bucket_key(
                            inc.prefix, scope, scope_id, granularity, _epoch_bucket(inc.at, granularity)
                        )
                        pipe.hincrby(name, inc.field, 1)
                        pipe.expire(name, ttl)
            pipe.execute()
        except redis_lib.RedisError:
            # The database has the labels; `flask throughput rebuild` restores what was lost here.
            log.warning("could not update throughput counters in Redis", exc_info=True)


@sa_event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    increments: list[_Increment] = session.info.pop(_OPS, None) or []
    if increments:
        _send(increments)


@sa_event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    increments: list[_Increment] | None = session.info.get(_OPS)
    if not increments:
        return

    increments[:] = [inc for inc in increments if not within(inc.transaction, previous_transaction)]


# --- reads --------------------------------------------------------------------------------------------------


def _scope_filter(scope: str, scope_id: int) -> ColumnElement[bool]:
    if scope == "project":
        return (Label.project_id == scope_id) & Label.is_gold.is_(False)
    if scope == "skill":
        projects = select(Project.id).where(Project.skill_id == scope_id)
        return Label.project_id.in_(projects) & Label.is_gold.is_(False)
    if scope == "annotator":
        return Label.annotator_id == scope_id
    raise ValueError(f"unknown scope {scope!r}")


def _count_from_database(session: Session, scope: str, scope_id: int, window: Window) -> WindowCount:
    where = _scope_filter(scope, scope_id)
    submitted = session.scalar(
        select(func.count()).select_from(Label).where(where, Label.created_at >= window.start)
    )
    accepted = session.scalar(
        select(func.count())
        .select_from(Label)
        .where(where, Label.review_state == ReviewState.ACCEPTED.value, Label.reviewed_at >= window.start)
    )
    return WindowCount(window, int(submitted or 0), int(accepted or 0))


def _count_from_redis(
    client: redis_lib.Redis, prefix: str, scope: str, scope_id: int, window: Window
) -> WindowCount:
    first = _epoch_bucket(window.start, window.granularity)
    last = _epoch_bucket(window.end, window.granularity)
    pipe = client.pipeline(transaction=False)
    for bucket in range(first, last + 1):
        pipe.hmget(_bucket_key(prefix, scope, scope_id, window.granularity, bucket), ["s", "a"])
    submitted = accepted = 0
    for s, a in pipe.execute():
        submitted += int(s or 0)
        accepted += int(a or 0)
    return WindowCount(window, submitted, accepted)


def _covered(client: redis_lib.Redis, prefix: str, since: datetime) -> bool:
    raw = client.get(_coverage_key(prefix))
    return raw is not None and int(str(raw)) <= int(since.timestamp())


def window_counts(
    session: Session,
    *,
    scope: str,
    scope_id: int,
    now: datetime,
    client: redis_lib.Redis | None,
    prefix: str | None = None,
) -> tuple[list[WindowCount], str]:
    """Counts over the last 15 minutes, hour and day, and where they came from ("redis" or "database")."""
    spans = windows(now)
    prefix = prefix if prefix is not None else _prefix()
    if client is not None:
        try:
            if not _covered(client, prefix, spans[-1].start):
                _rebuild_if_free(session, client, prefix=prefix, now=now)
            if _covered(client, prefix, spans[-1].start):
                return [_count_from_redis(client, prefix, scope, scope_id, w) for w in spans], "redis"
        except redis_lib.RedisError:
            log.warning("throughput counters unavailable; reading the database", exc_info=True)
    return [_count_from_database(session, scope, scope_id, w) for w in spans], "database"


# --- rebuild ------------------------------------------------------------------------------------------------


def _minute_of(session: Session, column: Any) -> ColumnElement[int]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / 60), Integer)
    return cast(func.strftime("%s", column), Integer) // 60


def _rebuild_if_free(session: Session, client: redis_lib.Redis, *, prefix: str, now: datetime) -> None:
    lock = client.lock(f"{prefix}tp:rebuild-lock", timeout=120, blocking=False)
    if not lock.acquire(blocking=False):
        return  # someone else is rebuilding: this read answers from the database
    try:
        rebuild_counters(
            session,
            client,
            since=now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=REBUILD_HOURS - 1),
            prefix=prefix,
        )
    finally:
        lock.release()


def rebuild_counters(
    session: Session, redis: redis_lib.Redis, *, since: datetime, prefix: str | None = None
) -> int:
    """Refill the buckets from the labels table from `since` (rounded down to the hour); the buckets written."""
    prefix = prefix if prefix is not None else _prefix()
    since = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    skill_of = dict(session.execute(select(Project.id, Project.skill_id)).tuples().all())
    counts: dict[tuple[str, int, str, int], dict[str, int]] = defaultdict(lambda: {"s": 0, "a": 0})
    for field, moment, condition in (
        ("s", Label.created_at, Label.created_at >= since),
        (
            "a",
            Label.reviewed_at,
            (Label.review_state == ReviewState.ACCEPTED.value) & (Label.reviewed_at >= since),
        ),
    ):
        minute = _minute_of(session, moment)
        rows = session.execute(
            select(minute, Label.project_id, Label.annotator_id, Label.is_gold, func.count())
            .where(condition)
            .group_by(minute, Label.project_id, Label.annotator_id, Label.is_gold)
        ).tuples()
        for bucket_minute, project_id, annotator_id, is_gold, n in rows:
            scopes = [("annotator", annotator_id)]
            if not is_gold:
                scopes += [("project", project_id), ("skill", skill_of[project_id])]
            for scope, scope_id in scopes:
                counts[(scope, scope_id, "m", int(bucket_minute))][field] += int(n)
                counts[(scope, scope_id, "h", int(bucket_minute) // 60)][field] += int(n)
    now_minute = int(datetime.now(UTC).timestamp()) // 60
    pipe = redis.pipeline(transaction=False)
    written = 0
    for (scope, scope_id, granularity, bucket), fields in counts.items():
        # Minute buckets older than their TTL would be dropped at once; they are not read either.
        age_seconds = (now_minute - (bucket if granularity == "m" else bucket * 60)) * 60
        ttl = (MINUTE_TTL_SECONDS if granularity == "m" else HOUR_TTL_SECONDS) - age_seconds
        if ttl <= 0:
            continue
        name = _bucket_key(prefix, scope, scope_id, granularity, bucket)
        pipe.delete(name)
        pipe.hset(name, mapping=fields)
        pipe.expire(name, ttl)
        written += 1
    pipe.set(_coverage_key(prefix), int(since.timestamp()), ex=HOUR_TTL_SECONDS)
    pipe.execute()
    return written
