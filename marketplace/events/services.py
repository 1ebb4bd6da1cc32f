"""Recording events in the caller's transaction, ordering them at commit, and reading them back.

`record_event` adds a row to the outbox in the transaction that makes the change, so an event exists if and
only if its change committed. Positions (`seq`) are handed out by a `before_commit` hook: it takes the row lock
of each stream the transaction wrote to (in stream order), bumps the stream's counter and numbers the
transaction's events (on PostgreSQL both in one statement). The lock is the last one the transaction takes and is held only until its commit, so it
cannot join a deadlock cycle, and a stream's positions become visible in order: a reader at `seq = n` never
misses a smaller position that commits later. Projects are already serialised by their budget's balance row
on every lease and payment, so this adds no new contention there.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from marketplace.db import utcnow
from marketplace.events.models import DeliveryState, Event, EventStream, WebhookDelivery, WebhookSecret
from marketplace.projects.models import Project

#: every event type, with what its `data` carries
EVENT_TYPES: dict[str, str] = {
    "assignment.leased": "assignment_id, task_id, annotator_id, price, lease_expires_at",
    "assignment.released": "assignment_id, task_id, annotator_id",
    "assignment.expired": "assignment_id, task_id, annotator_id",
    "assignment.submitted": "assignment_id, task_id, annotator_id, label_id",
    "label.accepted": "label_id, task_id, annotator_id, value, source, paid",
    "label.rejected": "label_id, task_id, annotator_id, reason, source",
    "label.appealed": "label_id, appeal_id, annotator_id",
    "item.completed": "task_id, external_id, labels_accepted",
    "project.at_risk": "at_risk, reasons, eta_at_pace, eta_at_capacity, deadline",
    "budget.low": "low, available, needed_for_remaining, remaining_labels",
    "payout.sent": "payout_id, annotator_id, amount",
    "payout.failed": "payout_id, annotator_id, amount, reason",
}

#: the stream of events that belong to no project (payouts)
PLATFORM_STREAM = 0

_PENDING = "labelforce.events.pending"


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def record_event(
    session: Session,
    *,
    project_id: int | None,
    type: str,
    data: Mapping[str, Any],
    now: datetime | None = None,
) -> Event:
    """Add an event to the outbox in the caller's transaction (and a webhook delivery if the project has a URL)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    # Round-trip through JSON now, so a bad payload fails the change that produced it, not a later reader.
    payload = json.loads(json.dumps(dict(data), default=_json_default))
    created = now or utcnow()
    row = Event(
        stream=PLATFORM_STREAM if project_id is None else project_id,
        project_id=project_id,
        type=type,
        data=payload,
        created_at=created,
    )
    session.add(row)
    session.info.setdefault(_PENDING, []).append(row)
    if project_id is not None:
        project = session.get(Project, project_id)
        if project is not None and project.webhook_url:
            session.add(
                WebhookDelivery(
                    event=row,
                    project_id=project_id,
                    url=project.webhook_url,
                    state=DeliveryState.PENDING.value,
                    attempts=0,
                    next_attempt_at=created,
                    created_at=created,
                )
            )
    return row


def _bump_stream(session: Session, stream: int, count: int) -> int:
    """Reserve `count` positions in `stream` (locking its row until commit); the last one reserved."""
    stmt = (
        update(EventStream)
        .where(EventStream.stream == stream)
        .values(last_seq=EventStream.last_seq + count)
        .returning(EventStream.last_seq)
    )
    last = session.execute(stmt).scalar()
    if last is not None:
        return int(last)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(EventStream)
        .values(stream=stream, last_seq=0)
        .on_conflict_do_nothing(index_elements=["stream"])
    )
    return int(session.execute(stmt).scalar_one())


#: PostgreSQL: reserve a stream's positions and number the transaction's events with them, in one round trip
_NUMBER_EVENTS = text(
    "WITH reserved AS (UPDATE event_streams SET last_seq = last_seq + :n WHERE stream = :stream"
    " RETURNING last_seq)"
    " UPDATE events SET seq = reserved.last_seq - :n + numbered.position"
    " FROM reserved, unnest(CAST(:ids AS BIGINT[])) WITH ORDINALITY AS numbered(id, position)"
    " WHERE events.id = numbered.id RETURNING events.id, events.seq"
)


def _number_events(session: Session, stream: int, rows: list[Event]) -> None:
    """Give `rows` (sorted by id) the stream's next positions, locking its row until commit."""
    if session.get_bind().dialect.name == "postgresql":
        params = {"n": len(rows), "stream": stream, "ids": [row.id for row in rows]}
        numbered = dict(session.execute(_NUMBER_EVENTS, params).tuples().all())
        if not numbered:  # the stream's first events: create its row, then number
            _bump_stream(session, stream, 0)
            numbered = dict(session.execute(_NUMBER_EVENTS, params).tuples().all())
        for row in rows:
            set_committed_value(row, "seq", numbered[row.id])
        return
    last = _bump_stream(session, stream, len(rows))
    for offset, row in enumerate(rows):
        row.seq = last - len(rows) + 1 + offset


@sa_event.listens_for(Session, "before_commit")
def _sequence_events(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint is being released: the outermost commit numbers everything once
    pending: list[Event] = session.info.get(_PENDING) or []
    if not pending:
        return
    session.flush()  # assign ids, and drop events whose savepoint was rolled back (they become transient)
    streams: dict[int, list[Event]] = defaultdict(list)
    for row in pending:
        if sa_inspect(row).persistent and row.seq is None:
            streams[row.stream].append(row)
    pending.clear()
    for stream in sorted(streams):  # one lock order for every transaction
        _number_events(session, stream, sorted(streams[stream], key=lambda r: r.id))


@sa_event.listens_for(Session, "after_rollback")
def _forget_events(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_PENDING, None)


def list_events(session: Session, *, project_id: int | None, after: int, limit: int) -> list[Event]:
    """A stream's events with a position after `after`, oldest first (project None: the platform stream)."""
    stream = PLATFORM_STREAM if project_id is None else project_id
    return list(
        session.scalars(
            select(Event).where(Event.stream == stream, Event.seq > after).order_by(Event.seq).limit(limit)
        )
    )


def event_dict(row: Event) -> dict[str, Any]:
    """An event as the API and webhooks show it; `sequence` is the replay cursor."""
    return {
        "id": row.id,
        "sequence": row.seq,
        "type": row.type,
        "project_id": row.project_id,
        "created_at": row.created_at.isoformat(),
        "data": row.data,
    }


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def webhook_secret(session: Session, *, project_id: int) -> WebhookSecret:
    """The project's signing secret, created on first use."""
    existing = session.get(WebhookSecret, project_id)
    if existing is not None:
        return existing
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    # Two first uses at once: one insert wins, the other reads the winner's secret.
    session.execute(
        insert(WebhookSecret)
        .values(project_id=project_id, secret=_new_secret(), created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["project_id"])
    )
    return session.get_one(WebhookSecret, project_id, populate_existing=True)


def rotate_webhook_secret(session: Session, *, project_id: int, now: datetime) -> WebhookSecret:
    """Replace the project's signing secret; deliveries from now on are signed with the new one."""
    row = webhook_secret(session, project_id=project_id)
    row.secret = _new_secret()
    row.rotated_at = now
    session.flush()
    return row
