"""The outbox: events in the same transaction as their change, numbered in commit order, replayed by cursor, and
delivered to webhooks signed, with retries and backoff."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.accounts.models import Organisation, User
from marketplace.db import unit_of_work, utcnow
from marketplace.errors import Conflict
from marketplace.events.delivery import (
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    deliver_due,
    http_post,
    verify_signature,
)
from marketplace.events.models import Event, WebhookDelivery
from marketplace.events.services import record_event, webhook_secret
from marketplace.projects.models import Project
from marketplace.work.models import Label
from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    annotators,
    fast_password_hashing,
    make_project,
    payable,
    work,
)


def stream(db_session: Session, project_id: int | None) -> list[tuple[int | None, str]]:
    db_session.expire_all()
    rows = db_session.scalars(select(Event).where(Event.project_id == project_id).order_by(Event.seq))
    return [(e.seq, e.type) for e in rows]


def test_events_are_numbered_per_stream_at_commit(db_session) -> None:
    a, b = make_project(db_session, tasks=1), make_project(db_session, tasks=1)
    for project, kind in ((a, "item.completed"), (b, "item.completed"), (a, "label.accepted")):
        record_event(db_session, project_id=project.id, type=kind, data={"n": 1})
    record_event(db_session, project_id=None, type="payout.sent", data={"payout_id": 7})
    # events are written, with their positions, at commit
    assert db_session.scalars(select(Event)).all() == []
    db_session.commit()
    assert stream(db_session, a.id) == [(1, "item.completed"), (2, "label.accepted")]
    assert stream(db_session, b.id) == [(1, "item.completed")]
    assert stream(db_session, None) == [(1, "payout.sent")]
    with pytest.raises(ValueError, match="unknown event type"):
        record_event(db_session, project_id=None, type="label.exploded", data={})
    with pytest.raises(TypeError):  # a bad payload fails the change that produced it
        record_event(db_session, project_id=None, type="payout.sent", data={"amount": object()})
    assert isinstance(
        record_event(db_session, project_id=None, type="payout.sent", data={"at": utcnow()}).data["at"], str
    )


def test_a_rolled_back_change_leaves_no_event(db_session) -> None:
    project = make_project(db_session, tasks=1)
    record_event(db_session, project_id=project.id, type="item.completed", data={})
    db_session.rollback()
    with db_session.begin_nested():
        record_event(db_session, project_id=project.id, type="item.completed", data={"kept": True})
    savepoint = db_session.begin_nested()
    record_event(db_session, project_id=project.id, type="item.completed", data={"kept": False})
    db_session.flush()
    savepoint.rollback()
    db_session.commit()
    rows = db_session.scalars(select(Event)).all()
    assert [(e.seq, e.data) for e in rows] == [(1, {"kept": True})]


@pytest.mark.postgres
def test_positions_follow_commit_order_not_insert_order(engine, db_session) -> None:
    project = make_project(db_session, tasks=1)
    with Session(engine) as first, Session(engine) as second:
        early = record_event(first, project_id=project.id, type="item.completed", data={"who": "first"})
        first.flush()
        late = record_event(second, project_id=project.id, type="item.completed", data={"who": "second"})
        second.commit()  # recorded later, committed first
        first.commit()
        assert (late.seq, early.seq) == (1, 2)
        assert late.id < early.id  # written at commit, under the stream's lock: ids follow positions


def manager_headers(db_session: Session, project: Project, role: str = "manager") -> dict[str, str]:
    org = db_session.get_one(Organisation, project.organisation_id)
    headers = f.auth(f.token(db_session, f.member(db_session, org, role)))
    db_session.commit()
    return headers


def test_replay_by_cursor(client, db_session) -> None:
    project = make_project(db_session, tasks=1)
    for i in range(5):
        record_event(db_session, project_id=project.id, type="item.completed", data={"i": i})
    db_session.commit()
    headers = manager_headers(db_session, project)
    url = f"/api/v1/events?project_id={project.id}"
    page = client.get(f"{url}&limit=2", headers=headers).get_json()
    assert [(e["sequence"], e["data"]["i"]) for e in page["items"]] == [(1, 0), (2, 1)]
    assert page["next_after"] == 2
    rest = client.get(f"{url}&after={page['next_after']}", headers=headers).get_json()
    assert [e["sequence"] for e in rest["items"]] == [3, 4, 5]
    done = client.get(f"{url}&after={rest['next_after']}", headers=headers).get_json()
    assert done == {"items": [], "next_after": 5}
    assert client.get(url, headers=manager_headers(db_session, project, "reviewer")).status_code == 403
    outsider = manager_headers(db_session, make_project(db_session, tasks=1))
    assert client.get(url, headers=outsider).status_code == 404
    assert client.get("/api/v1/events", headers=headers).status_code == 403  # the platform stream is staff's


def test_a_failed_request_records_no_event(client, db_session, monkeypatch) -> None:
    project = make_project(db_session, tasks=1)
    (worker,) = annotators(db_session, 1)
    label = work(db_session, worker, "cat")
    reviewer = manager_headers(db_session, project, "reviewer")
    before = stream(db_session, project.id)

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise Conflict("the counters refused", code="boom")

    # fails after the acceptance, the payment and the event were written: the request must leave none of them
    monkeypatch.setattr("marketplace.quality.outcomes.record_label_accepted", fail)
    response = client.post(f"/api/v1/labels/{label.id}/review", json={"decision": "accept"}, headers=reviewer)
    assert response.status_code == 409
    assert stream(db_session, project.id) == before
    assert db_session.get_one(Label, label.id).review_state == "pending"
    assert payable(db_session, worker) == 0


def test_the_work_loop_records_its_events(client, db_session) -> None:
    project = make_project(db_session, tasks=1, review_policy="gold")
    (worker,) = annotators(db_session, 1)
    headers = f.auth(f.token(db_session, db_session.get_one(User, worker.user_id)))
    db_session.commit()
    assignment = client.post("/api/v1/work/next", json={}, headers=headers).get_json()["assignment"]
    submitted = client.post(
        f"/api/v1/assignments/{assignment['id']}/submit", json={"value": "dog"}, headers=headers
    )
    assert submitted.status_code == 200, submitted.get_json()
    types = [t for _, t in stream(db_session, project.id)]
    assert types[-3:] == ["assignment.submitted", "label.accepted", "item.completed"]


class Receiver:
    """A local webhook endpoint: records each request and answers with the next scripted status."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    endpoint.thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


def test_signed_delivery(app, client, db_session, receiver) -> None:
    project = make_project(db_session, tasks=1, review_policy="gold", webhook_url=receiver.url)
    (worker,) = annotators(db_session, 1)
    work(db_session, worker, "cat")
    secret = client.get(
        f"/api/v1/projects/{project.id}/webhook", headers=manager_headers(db_session, project)
    )
    assert secret.status_code == 200
    info = secret.get_json()
    assert info["deliveries"]["pending"] == 4
    result = app.test_cli_runner().invoke(args=["events", "deliver"])
    assert result.exit_code == 0, result.output
    assert "4 attempted: 4 delivered" in result.output
    received = [json.loads(r["body"]) for r in receiver.requests]
    assert sorted(e["type"] for e in received) == [
        "assignment.leased",
        "assignment.submitted",
        "item.completed",
        "label.accepted",
    ]
    for request in receiver.requests:
        header = request["headers"][SIGNATURE_HEADER]
        now = int(utcnow().timestamp())
        assert verify_signature(info["secret"], header, request["body"], now=now)
        assert not verify_signature("whsec_wrong", header, request["body"], now=now)
        assert not verify_signature(info["secret"], header, request["body"] + b" ", now=now)
        assert not verify_signature(info["secret"], header, request["body"], now=now + 3600)  # a replay
    accepted = next(e for e in received if e["type"] == "label.accepted")
    assert accepted["data"]["value"] == "cat"
    assert accepted["project_id"] == project.id
    rotated = client.post(
        f"/api/v1/projects/{project.id}/webhook/secret", headers=manager_headers(db_session, project)
    ).get_json()
    assert rotated["secret"] != info["secret"]


def test_retries_back_off_and_give_up(app, db_session, receiver) -> None:
    project = make_project(db_session, tasks=1, webhook_url=receiver.url)
    record_event(db_session, project_id=project.id, type="item.completed", data={})
    db_session.commit()
    webhook_secret(db_session, project_id=project.id)
    db_session.commit()
    t0 = utcnow()
    clock = {"now": t0}

    def deliver() -> Any:
        return deliver_due(lambda: unit_of_work(app), now=lambda: clock["now"], post=http_post)

    receiver.statuses = [500, 503]
    assert deliver().retrying == 1
    delivery = db_session.scalars(select(WebhookDelivery)).one()
    assert (delivery.attempts, delivery.last_status, delivery.next_attempt_at) == (
        1,
        500,
        t0 + timedelta(seconds=30),
    )
    clock["now"] = t0 + timedelta(seconds=29)
    assert deliver().attempted == 0  # not due yet
    clock["now"] = t0 + timedelta(seconds=30)
    assert deliver().retrying == 1
    db_session.expire_all()
    assert delivery.next_attempt_at == clock["now"] + timedelta(seconds=60)  # doubled
    clock["now"] += timedelta(seconds=60)
    report = deliver()
    assert (report.delivered, report.retrying) == (1, 0)
    db_session.expire_all()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)
    # an endpoint that never answers well is given up after MAX_ATTEMPTS
    record_event(db_session, project_id=project.id, type="item.completed", data={"second": True})
    db_session.commit()
    receiver.statuses = [500] * MAX_ATTEMPTS
    for _ in range(MAX_ATTEMPTS):
        clock["now"] += timedelta(hours=7)
        deliver()
    db_session.expire_all()
    failed = db_session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id.desc())).first()
    assert (failed.state, failed.attempts) == ("failed", MAX_ATTEMPTS)
    assert len(receiver.requests) == 3 + MAX_ATTEMPTS


def test_a_closed_session_leaves_no_event_for_its_next_transaction(db_session) -> None:
    project = make_project(db_session, tasks=1)
    db_session.commit()
    record_event(db_session, project_id=project.id, type="item.completed", data={"closed": True})
    db_session.close()  # ends the transaction without a rollback
    record_event(db_session, project_id=project.id, type="item.completed", data={"closed": False})
    db_session.commit()
    assert [e.data for e in db_session.scalars(select(Event))] == [{"closed": False}]
