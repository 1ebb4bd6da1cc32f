"""Measured speed, live counters with and without Redis (and after a flush), progress, ETAs, risks and stats."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from marketplace.annotators.models import AnnotatorProfile
from marketplace.db import utcnow
from marketplace.events.models import Event
from marketplace.projects.models import Project
from marketplace.redis import get_redis
from marketplace.throughput.counters import rebuild_counters, window_counts
from marketplace.throughput.health import check_projects
from marketplace.throughput.services import active_seconds
from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    FEE_BPS,
    annotators,
    fast_password_hashing,
    lease,
    make_project,
    submit,
    work,
)

T0 = utcnow().replace(microsecond=0)


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 300)), max_size=30))
def test_active_time_counts_overlapping_leases_once(spans) -> None:
    intervals = [(T0 + timedelta(seconds=s), T0 + timedelta(seconds=s + d)) for s, d in spans]
    union = active_seconds(intervals)
    covered = {s + i for s, d in spans for i in range(d)}  # whole seconds covered by some interval
    assert union == len(covered)


def test_measured_speed_uses_active_time_not_lease_length(db_session) -> None:
    make_project(db_session, tasks=6, review_policy="gold")
    (worker,) = annotators(db_session, 1)
    start = utcnow() - timedelta(minutes=10)
    # three leases taken at once, answered one a minute: 3 labels in 3 minutes of work is 60 an hour
    held = [lease(db_session, worker, now=start) for _ in range(3)]
    for i, assignment in enumerate(held):
        submit(db_session, worker, assignment, "cat", now=start + timedelta(minutes=i + 1))
    db_session.refresh(worker)
    assert worker.measured_labels_per_hour == 60.0
    work(db_session, worker, "cat", now=start + timedelta(minutes=4), seconds=30)  # one more, in 30 s
    db_session.refresh(worker)
    assert worker.measured_labels_per_hour == round(4 * 3600 / 210, 2)


def _label_at(db_session, worker, minutes_ago: int, now):
    return work(db_session, worker, "cat", now=now - timedelta(minutes=minutes_ago), seconds=20)


def test_counters_in_redis_match_the_database_and_survive_a_flush(app, db_session) -> None:
    project = make_project(db_session, tasks=6, review_policy="gold")
    workers = annotators(db_session, 4)
    now = utcnow()
    with app.app_context():
        client = get_redis()
        for worker, minutes_ago in zip(workers, (1, 10, 40, 300), strict=True):
            _label_at(db_session, worker, minutes_ago, now)
        from_redis, source = window_counts(
            db_session, scope="project", scope_id=project.id, now=now, client=client
        )
        assert source == "redis"
        from_db, source = window_counts(
            db_session, scope="project", scope_id=project.id, now=now, client=None
        )
        assert source == "database"
        assert [(c.submitted, c.accepted) for c in from_redis] == [(c.submitted, c.accepted) for c in from_db]
        assert [c.submitted for c in from_db] == [2, 3, 4]
        skill, _ = window_counts(db_session, scope="skill", scope_id=project.skill_id, now=now, client=client)
        assert [c.accepted for c in skill] == [2, 3, 4]
        # a rolled-back submission never reaches the counters
        spare = annotators(db_session, 1)[0]
        assignment = lease(db_session, spare, now=now)
        from marketplace.quality.policy import review_submitted_label
        from marketplace.work.decisions import submit_label

        label, _ = submit_label(
            db_session,
            annotator=spare,
            assignment_id=assignment.id,
            value="cat",
            idempotency_key=None,
            now=now,
        )
        review_submitted_label(db_session, label=label, now=now, fee_bps=FEE_BPS)
        db_session.rollback()
        again, _ = window_counts(db_session, scope="project", scope_id=project.id, now=now, client=client)
        assert [c.submitted for c in again] == [2, 3, 4]
        # Redis flushed: the next read rebuilds from the labels table
        prefix = app.config["REDIS_PREFIX"]
        client.delete(*client.keys(f"{prefix}*"))
        rebuilt, source = window_counts(
            db_session, scope="project", scope_id=project.id, now=now, client=client
        )
        assert source == "redis"
        assert [c.submitted for c in rebuilt] == [2, 3, 4]
        assert rebuild_counters(db_session, client, since=now - timedelta(hours=2)) > 0
        mine, _ = window_counts(db_session, scope="annotator", scope_id=workers[0].id, now=now, client=client)
        assert [c.submitted for c in mine] == [1, 1, 1]
    result = app.test_cli_runner().invoke(args=["throughput", "rebuild", "--hours", "2"])
    assert result.exit_code == 0, result.output
    assert "counter buckets rebuilt from the last 2 hours" in result.output


def _manager_of(db_session, project: Project) -> dict[str, str]:
    from marketplace.accounts.models import Organisation

    org = db_session.get_one(Organisation, project.organisation_id)
    headers = f.auth(f.token(db_session, f.member(db_session, org, "manager")))
    db_session.commit()
    return headers


def test_progress_with_eta_and_no_risk(client, db_session) -> None:
    project = make_project(db_session, tasks=10, review_policy="gold")
    workers = annotators(db_session, 3)
    now = utcnow()
    for worker in workers:
        work(db_session, worker, "cat", now=now - timedelta(minutes=5))
    headers = _manager_of(db_session, project)
    response = client.get(f"/api/v1/projects/{project.id}/progress", headers=headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["items"] == {"total": 10, "complete": 3}
    assert body["labels"] == {
        "needed": 10,
        "accepted": 3,
        "in_progress": 0,
        "awaiting_review": 0,
        "to_submit": 7,
    }
    assert body["throughput"]["source"] == "redis"
    assert [w["submitted"] for w in body["throughput"]["windows"]] == [3, 3, 3]
    assert 2.9 < body["throughput"]["labels_per_hour"] < 3.1  # the window is 59 to 60 minutes long
    assert body["eta"]["eligible_annotators"] == 3
    assert (
        body["eta"]["capacity_labels_per_hour"] == 180.0
    )  # declared speeds: one label each is too few to measure
    assert body["eta"]["at_current_pace"] > body["eta"]["at_full_capacity"]
    assert body["budget"]["spent"]["amount_minor"] == 150
    assert body["budget"]["cost_of_remaining"]["amount_minor"] == 7 * 120  # pay 100 + 20% fee each
    assert (body["at_risk"], body["risks"]) == (False, [])
    outsider = _manager_of(db_session, make_project(db_session, tasks=1))
    assert client.get(f"/api/v1/projects/{project.id}/progress", headers=outsider).status_code == 404
    skill = client.get(f"/api/v1/skills/{project.skill_id}/throughput", headers=headers).get_json()
    assert [w["accepted"] for w in skill["windows"]] == [3, 3, 3]
    from marketplace.accounts.models import User

    annotator_only = f.auth(f.token(db_session, db_session.get_one(User, workers[0].user_id)))
    db_session.commit()
    assert (
        client.get(f"/api/v1/skills/{project.skill_id}/throughput", headers=annotator_only).status_code == 403
    )


def test_progress_risks_and_health_events(app, client, db_session) -> None:
    project = make_project(db_session, tasks=10, review_policy="gold", budget_minor=300)
    workers = annotators(db_session, 3)
    now = utcnow()
    for worker in workers:
        work(db_session, worker, "cat", now=now - timedelta(minutes=5))
    project.deadline_at = now + timedelta(minutes=1)
    db_session.commit()
    headers = _manager_of(db_session, project)
    body = client.get(f"/api/v1/projects/{project.id}/progress", headers=headers).get_json()
    assert body["at_risk"] is True
    assert [r["code"] for r in body["risks"]] == ["deadline_unreachable", "behind_pace", "budget_short"]
    assert body["budget"]["affordable_labels"] == 1
    with app.app_context():
        kwargs = {"now": utcnow(), "fee_bps": FEE_BPS, "seen_window": timedelta(hours=1), "client": None}
        assert check_projects(db_session, project_id=project.id, **kwargs) == 2
        db_session.commit()
        assert check_projects(db_session, project_id=project.id, **kwargs) == 0  # nothing changed
        for who in db_session.scalars(select(AnnotatorProfile)):
            who.last_seen_at = now - timedelta(days=1)
        assert check_projects(db_session, project_id=project.id, **kwargs) == 1  # reasons changed
        db_session.commit()
    events = db_session.scalars(select(Event).where(Event.type.in_(["project.at_risk", "budget.low"]))).all()
    assert [(e.type, e.data.get("reasons")) for e in events] == [
        ("project.at_risk", ["behind_pace", "budget_short", "deadline_unreachable"]),
        ("budget.low", None),
        ("project.at_risk", ["behind_pace", "budget_short", "no_workforce"]),
    ]
    assert events[1].data["low"] is True
    assert events[1].data["remaining_labels"] == 7


def test_progress_without_redis(make_app, app_config, db_session) -> None:
    project = make_project(db_session, tasks=2, review_policy="gold")
    (worker,) = annotators(db_session, 1)
    work(db_session, worker, "cat")
    headers = _manager_of(db_session, project)
    plain = make_app({**app_config, "REDIS_URL": None}).test_client()
    body = plain.get(f"/api/v1/projects/{project.id}/progress", headers=headers).get_json()
    assert body["throughput"]["source"] == "database"
    assert [w["submitted"] for w in body["throughput"]["windows"]] == [1, 1, 1]


def test_annotator_stats(client, db_session) -> None:
    project = make_project(db_session, tasks=4, review_policy="consensus", labels_per_item=2)
    a, b = annotators(db_session, 2)
    now = utcnow()
    for minutes_ago, value_b in ((30, "cat"), (20, "dog")):
        work(db_session, a, "cat", now=now - timedelta(minutes=minutes_ago), seconds=30)
        work(db_session, b, value_b, now=now - timedelta(minutes=minutes_ago), seconds=30)
    from marketplace.accounts.models import User

    headers = f.auth(f.token(db_session, db_session.get_one(User, a.user_id)))
    db_session.commit()
    body = client.get("/api/v1/annotators/me/stats", headers=headers).get_json()
    assert body["labels"] == {"submitted": 2, "accepted": 1, "rejected": 0, "pending": 1}
    assert body["acceptance_rate"] == 1.0
    assert body["earnings"]["earned"]["amount_minor"] == 50
    assert body["earnings"]["active_hours"] == round(60 / 3600, 3)
    assert body["earnings"]["effective_hourly_pay"]["amount_minor"] == 3000  # 50 for one minute of work
    assert body["accuracy"][0]["accuracy"] == round(2.5 / 3.5, 4)
    assert [w["submitted"] for w in body["throughput"]["windows"]] == [0, 2, 2]
    assert project.id
