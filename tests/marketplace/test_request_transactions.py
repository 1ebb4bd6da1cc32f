"""One transaction per request: `retry_transaction` commits a view that succeeds as soon as it returns, rolls back
one that answers with an error status, and repeats the whole unit of work when its commit is refused as a deadlock
victim."""

from __future__ import annotations

from typing import Any

from flask import Flask, g
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from marketplace.annotators.models import Skill
from marketplace.db import RequestSession, get_session, retry_transaction, unit_of_work


def _skills(app: Flask, name: str) -> int:
    with unit_of_work(app) as session:
        return int(session.scalar(select(func.count()).select_from(Skill).where(Skill.name == name)) or 0)


def _route(app: Flask, rule: str, view: Any) -> None:
    app.add_url_rule(rule, view_func=retry_transaction(view), methods=["POST"])


def test_a_successful_view_is_committed_before_its_response_is_built(app: Flask) -> None:
    seen: dict[str, bool] = {}

    def add_skill() -> dict[str, Any]:
        get_session().add(Skill(name="committed-early"))
        return {"ok": True}

    _route(app, "/_test/commit-early", add_skill)

    @app.after_request
    def look(response: Any) -> Any:  # runs before the app's own hook, which would commit at the end
        session: Session | None = g.get("db_session")
        seen["open transaction at the end of the request"] = session is not None and session.in_transaction()
        return response

    assert app.test_client().post("/_test/commit-early").status_code == 200
    assert seen == {"open transaction at the end of the request": False}
    assert _skills(app, "committed-early") == 1


def test_a_view_answering_an_error_status_is_rolled_back(app: Flask) -> None:
    def refuse() -> tuple[dict[str, Any], int]:
        get_session().add(Skill(name="never-stored"))
        return {"error": "conflict"}, 409

    _route(app, "/_test/refuse", refuse)
    assert app.test_client().post("/_test/refuse").status_code == 409
    assert _skills(app, "never-stored") == 0


class _DeadlockDetected(Exception):
    sqlstate = "40P01"


def test_a_commit_refused_as_a_deadlock_victim_repeats_the_whole_view(app: Flask) -> None:
    attempts: list[int] = []

    def add_skill() -> dict[str, Any]:
        attempts.append(1)
        get_session().add(Skill(name="after-a-deadlock"))
        return {"attempt": len(attempts)}

    _route(app, "/_test/deadlock-at-commit", add_skill)

    def refuse_first_commit(session: Session) -> None:
        if len(attempts) == 1:
            raise OperationalError("COMMIT", None, _DeadlockDetected("deadlock detected"))

    event.listen(RequestSession, "before_commit", refuse_first_commit)
    try:
        response = app.test_client().post("/_test/deadlock-at-commit")
    finally:
        event.remove(RequestSession, "before_commit", refuse_first_commit)
    assert response.status_code == 200
    assert response.get_json() == {"attempt": 2}
    assert _skills(app, "after-a-deadlock") == 1
