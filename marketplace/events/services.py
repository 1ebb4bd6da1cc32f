"""Recording events in the caller's transaction, writing and ordering them at commit, and reading them back.

`record_event` queues an event for the outbox in the transaction that makes the change, so an event exists if
and only if its change committed (an event queued in a savepoint that rolls back goes with it). A
`before_commit` hook writes the transaction's events: it takes the row lock of each stream the transaction wrote
to (in stream order), bumps the stream's counter and inserts the events with their positions (`seq`) — on
PostgreSQL both in one statement, so an event is written once and never updated. The lock is the last one the
transaction takes and is held only until its commit, so it cannot join a deadlock cycle, and a stream's positions
become visible in order: a reader at `seq = n` never misses a smaller position that commits later. A project's
leases and payments also lock its budget's balance row until their commit (a lease from its commit on:
`payments.deferred_balances`), so this adds little contention there.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.attributes import set_committed_value

from marketplace.db import utcnow, within
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
    "bonus.granted": "bonus_id, annotator_id, amount, reason",
    "worker.blocked": "annotator_id, reason, source, blocked_by_id, leases_released",
    "worker.unblocked": "annotator_id, source, unblocked_by_id, was_blocked_for",
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


@dataclass(frozen=True, slots=True)
class _Queued:
    """An event waiting for its transaction's commit, and where to deliver it."""

    row: Event
    transaction: SessionTransaction
    webhook_url: str | None


def record_event(
    session: Session,
    *,
    project_id: int | None,
    type: str,
    data: Mapping[str, Any],
    now: datetime | None = None,
) -> Event:
    """Queue an event for the outbox in the caller's transaction (with a webhook delivery if the project has a
    URL). It is written at commit, with its position; the returned row then has its `id` and `seq`."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    # Round-trip through JSON now, so a bad payload fails the change that produced it, not a later reader.
    payload = json.loads(json.dumps(dict(data), default=_json_default))
    row = Event(
        stream=PLATFORM_STREAM if project_id is None else project_id,
        project_id=project_id,
        type=type,
        data=payload,
        created_at=now or utcnow(),
    )
    url = None
    if project_id is not None:
        project = session.get(Project, project_id)
        url = project.webhook_url if project is not None else None
    # the transaction the event belongs to (begun now if the session has none yet, so that its rollback is seen)
    transaction = session.get_nested_transaction() or session.get_transaction() or session.begin()
    session.info.setdefault(_PENDING, []).append(_Queued(row, transaction, url or None))
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
    _create_stream(session, stream)
    return int(session.execute(stmt).scalar_one())


def _create_stream(session: Session, stream: int) -> None:
    insert_for = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert_for(EventStream)
        .values(stream=stream, last_seq=0)
        .on_conflict_do_nothing(index_elements=["stream"])
    )


#: PostgreSQL: reserve a stream's positions and insert the transaction's events with them, in one round trip
#: (nothing is inserted when the stream has no row yet: the caller creates it and asks again)
_WRITE_EVENTS = text(
    "WITH reserved AS (UPDATE event_streams SET last_seq = last_seq + :n WHERE stream = :stream"
    " RETURNING last_seq)"
    " INSERT INTO events (stream, project_id, type, data, seq, created_at)"
    " SELECT CAST(:stream AS INTEGER), CAST(:project_id AS INTEGER), queued.value ->> 'type',"
    " queued.value -> 'data', reserved.last_seq - :n + queued.position,"
    " CAST(queued.value ->> 'created_at' AS TIMESTAMP WITH TIME ZONE)"
    " FROM reserved, jsonb_array_elements(CAST(:events AS JSONB)) WITH ORDINALITY AS queued(value, position)"
    " RETURNING id, seq"
)

_INSERT_EVENTS = insert(Event).returning(Event.id, Event.seq, sort_by_parameter_order=True)


def _write_events(session: Session, stream: int, rows: list[Event]) -> list[tuple[int, int]]:
    """Insert `rows` (in the order they were recorded) at the stream's next positions, locking its row until
    commit; (id, seq) of each, in that order."""
    if session.get_bind().dialect.name == "postgresql":
        params = {
            "n": len(rows),
            "stream": stream,
            "project_id": rows[0].project_id,
            "events": json.dumps(
                [{"type": r.type, "data": r.data, "created_at": r.created_at.isoformat()} for r in rows]
            ),
        }
        written = session.execute(_WRITE_EVENTS, params).tuples().all()
        if not written:  # the stream's first events: create its row, then write
            _create_stream(session, stream)
            written = session.execute(_WRITE_EVENTS, params).tuples().all()
        return sorted(written, key=lambda id_seq: id_seq[1])
    last = _bump_stream(session, stream, len(rows))
    first = last - len(rows) + 1
    values = [
        {
            "stream": r.stream,
            "project_id": r.project_id,
            "type": r.type,
            "data": r.data,
            "seq": first + offset,
            "created_at": r.created_at,
        }
        for offset, r in enumerate(rows)
    ]
    return list(session.execute(_INSERT_EVENTS, values).tuples())


@sa_event.listens_for(Session, "before_commit")
def _write_queued_events(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint is being released: the outermost commit writes everything once
    pending: list[_Queued] = session.info.pop(_PENDING, None) or []
    committing = session.get_transaction()
    streams: dict[int, list[_Queued]] = defaultdict(list)
    for queued in pending:
        # only this transaction's events: one that ended without a rollback (a closed session) left its own here
        if committing is not None and within(queued.transaction, committing):
            streams[queued.row.stream].append(queued)
    for stream in sorted(streams):  # one lock order for every transaction
        queue = streams[stream]
        written = _write_events(session, stream, [q.row for q in queue])
        for queued, (event_id, seq) in zip(queue, written, strict=True):
            set_committed_value(queued.row, "id", event_id)
            set_committed_value(queued.row, "seq", seq)
            if queued.webhook_url:
                session.add(
                    WebhookDelivery(
                        event_id=event_id,
                        project_id=queued.row.project_id,
                        url=queued.webhook_url,
                        state=DeliveryState.PENDING.value,
                        attempts=0,
                        next_attempt_at=queued.row.created_at,
                        created_at=queued.row.created_at,
                    )
                )


@sa_event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_events(session: Session, previous_transaction: SessionTransaction) -> None:
    pending: list[_Queued] | None = session.info.get(_PENDING)
    if pending:
        pending[:] = [q for q in pending if not within(q.transaction, previous_transaction)]


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
