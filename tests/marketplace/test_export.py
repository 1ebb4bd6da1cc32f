"""Exporting a project's accepted labels: JSON, JSON Lines and CSV, streamed a page at a time."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.billing.services import fund_project
from marketplace.db import RequestSession, database, get_session, utcnow
from marketplace.projects.imports import import_tasks
from marketplace.projects.models import Project
from marketplace.projects.services import iter_export_rows
from marketplace.work import decisions, leasing
from marketplace.work.models import Label
from payments.money import Money
from tests import factories as f


def _project_with_labels(
    session: Session, *, items: int, labels: list[tuple[int, str, bool]]
) -> tuple[Project, str]:
    """A funded project of `items` items (two labels each, manual review) and two annotators who work it in order:
    `labels` is (annotator 0 or 1, value, accepted?) per lease, each lease the next item the annotator may take.
    Returns the project and a manager's token."""
    org = f.organisation(session)
    manager = f.member(session, org, "manager")
    project = f.project(session, org, manager, labels_per_item=2)
    fund_project(session, project=project, amount=Money(10_000, "EUR"), idempotency_key="export")
    import_tasks(
        session,
        project=project,
        rows=[(i + 1, {"external_id": f"item-{i}", "payload": {"n": i}}) for i in range(items)],
    )
    annotators = [f.annotator(session) for _ in range(2)]
    now = utcnow()
    for who, value, accepted in labels:
        outcome = leasing.lease_next_assignment(
            session, annotator=annotators[who], now=now, fee_bps=0, project_id=project.id
        )
        assert outcome.assignment is not None, outcome.reason
        label, _ = decisions.submit_label(
            session,
            annotator=annotators[who],
            assignment_id=outcome.assignment.id,
            value=value,
            idempotency_key=None,
            now=now,
        )
        if accepted:
            decisions.accept_label(session, label=label, now=now)
        else:
            decisions.reject_label(session, label=label, now=now, reason="test")
    secret = f.token(session, manager)
    session.commit()
    return project, secret


def _export(client: FlaskClient, project: Project, secret: str, fmt: str) -> Any:
    response = client.get(f"/api/v1/projects/{project.id}/export?format={fmt}", headers=f.auth(secret))
    assert response.status_code == 200
    return response


def test_export_in_every_format_has_exactly_the_accepted_labels(
    client: FlaskClient, db_session: Session
) -> None:
    # item-0: cat (accepted) and dog (rejected); item-1: other (accepted); item-2: no label
    labels = [(0, "cat", True), (1, "dog", False), (0, "other", True)]
    project, secret = _project_with_labels(db_session, items=3, labels=labels)
    rows = _export(client, project, secret, "json").get_json()
    assert [(r["external_id"], [lbl["value"] for lbl in r["labels"]]) for r in rows] == [
        ("item-0", ["cat"]),
        ("item-1", ["other"]),
    ]
    assert rows[0]["payload"] == {"n": 0}

    lines = _export(client, project, secret, "jsonl").get_data(as_text=True).splitlines()
    assert [json.loads(line) for line in lines] == rows

    response = _export(client, project, secret, "csv")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["external_id"], r["value"]) for r in table] == [("item-0", "cat"), ("item-1", "other")]
    assert (
        {int(r["label_id"]) for r in table}
        == {lbl["label_id"] for r in rows for lbl in r["labels"]}
        == set(db_session.scalars(select(Label.id).where(Label.review_state == "accepted")))
    )


def test_export_pages_through_the_items(db_session: Session) -> None:
    # items 0-5 labelled and accepted but item 3, whose label is rejected; item 6 not labelled
    labels = [(0, "cat", i != 3) for i in range(6)]
    project, _ = _project_with_labels(db_session, items=7, labels=labels)
    paged = list(iter_export_rows(db_session, project=project, page_size=2))
    whole = list(iter_export_rows(db_session, project=project, page_size=500))
    assert paged == whole
    assert [r["external_id"] for r in paged] == [f"item-{i}" for i in range(6) if i != 3]


def test_a_request_session_keeps_what_it_loads_up_to_a_bound(app: Flask, db_session: Session) -> None:
    org = f.organisation(db_session)
    f.project(db_session, org)
    db_session.commit()
    with app.test_request_context():
        session = get_session()
        assert isinstance(session, RequestSession)
        project_id = session.scalars(select(Project.id)).one()
        session.scalars(select(Project)).one()  # loaded, then no local variable holds it
        statements: list[str] = []
        engine = database().engine

        def count(*args: Any) -> None:
            statements.append(args[2])

        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", count)
        try:
            assert session.get(Project, project_id) is not None  # from the identity map: no query
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert statements == []
        kept = session.info["loaded"]
        kept.extend([object()] * (RequestSession.KEEP_LIMIT - len(kept)))
        session.scalars(select(Project).execution_options(populate_existing=True)).all()
        assert len(session.info["loaded"]) == RequestSession.KEEP_LIMIT  # full: nothing more is kept
