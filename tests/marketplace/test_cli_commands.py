"""The operator commands without tests of their own elsewhere: create-user, work expire-leases, throughput check
and the jobs group (run, scheduler, worker), each checked by what it leaves in the database and prints."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from marketplace.accounts.models import Membership, Organisation, User
from marketplace.billing.services import project_budget
from marketplace.db import utcnow
from marketplace.events.models import Event
from marketplace.planning.models import PlanRun
from marketplace.projects.models import Task
from marketplace.work.models import Assignment, AssignmentState
from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    annotators,
    fast_password_hashing,
    lease,
    make_project,
    work,
)

# --- create-user --------------------------------------------------------------------------------------------


def _create_user(runner, *extra: str):
    return runner.invoke(
        args=["create-user", "--name", "Ops Person", "--password", "long enough secret", *extra]
    )


def test_create_user_with_an_organisation_role_creates_the_organisation_and_membership(
    runner, db_session
) -> None:
    result = _create_user(runner, "--email", "Lead@Example.test", "--role", "manager", "--org", "acme")
    assert result.exit_code == 0, result.output
    user = db_session.scalar(select(User).where(User.email == "lead@example.test"))
    assert user is not None
    assert result.output == f"created user {user.id} <lead@example.test> as manager\n"
    assert user.platform_role is None
    org = db_session.scalar(select(Organisation).where(Organisation.slug == "acme"))
    assert org is not None
    membership = db_session.scalar(select(Membership).where(Membership.user_id == user.id))
    assert (membership.organisation_id, membership.role) == (org.id, "manager")
    # a second user of the same slug joins the existing organisation
    again = _create_user(runner, "--email", "rev@example.test", "--role", "reviewer", "--org", "acme")
    assert again.exit_code == 0, again.output
    assert db_session.scalar(select(func.count()).select_from(Organisation)) == 1
    roles = db_session.scalars(
        select(Membership.role).where(Membership.organisation_id == org.id).order_by(Membership.id)
    ).all()
    assert roles == ["manager", "reviewer"]


def test_create_user_as_platform_staff_with_a_token_that_works(runner, client, db_session) -> None:
    result = _create_user(runner, "--email", "money@example.test", "--role", "platform-finance", "--token")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("<money@example.test> as platform-finance")
    assert lines[1].startswith("token: ")
    secret = lines[1].removeprefix("token: ")
    user = db_session.scalar(select(User).where(User.email == "money@example.test"))
    assert user.platform_role == "finance"
    assert db_session.scalar(select(func.count()).select_from(Membership)) == 0
    me = client.get("/api/v1/me", headers=f.auth(secret))
    assert me.status_code == 200
    assert me.get_json()["email"] == "money@example.test"
    # platform finance may list every payout with that token
    assert client.get("/api/v1/payouts", headers=f.auth(secret)).status_code == 200


def test_create_user_without_a_token_prints_none(runner) -> None:
    result = _create_user(runner, "--email", "admin@example.test", "--role", "platform-admin")
    assert result.exit_code == 0, result.output
    assert "token" not in result.output


def test_create_user_refusals_write_nothing(runner, db_session) -> None:
    no_org = _create_user(runner, "--email", "a@example.test", "--role", "manager")
    assert no_org.exit_code == 2
    assert "--org is needed for organisation roles" in no_org.output
    short = runner.invoke(
        args=[
            *("create-user", "--email", "b@example.test", "--name", "B", "--password", "short"),
            *("--role", "manager", "--org", "new-org"),
        ]
    )
    assert short.exit_code == 1
    assert "The password must have at least 8 characters." in short.output
    assert db_session.scalar(select(func.count()).select_from(User)) == 0
    assert db_session.scalar(select(func.count()).select_from(Organisation)) == 0
    unknown_role = _create_user(runner, "--email", "c@example.test", "--role", "owner", "--org", "x")
    assert unknown_role.exit_code == 2


def test_create_user_with_a_taken_email_is_refused_and_the_organisation_is_not_created(
    runner, db_session
) -> None:
    f.user(db_session, email="taken@example.test")
    db_session.commit()
    result = _create_user(runner, "--email", "TAKEN@example.test", "--role", "manager", "--org", "fresh")
    assert result.exit_code == 1
    assert "A user with this email already exists." in result.output
    assert db_session.scalar(select(func.count()).select_from(User)) == 1
    assert db_session.scalar(select(Organisation).where(Organisation.slug == "fresh")) is None


# --- work expire-leases -------------------------------------------------------------------------------------


def test_expire_leases_returns_slots_and_voids_holds(runner, db_session) -> None:
    project = make_project(db_session, tasks=3, lease_seconds=60)
    first, second = annotators(db_session, 2)
    long_ago = utcnow() - timedelta(hours=1)
    stale = lease(db_session, first, now=long_ago)
    live = lease(db_session, second)
    held_before = project_budget(db_session, project=project).held.amount
    assert held_before > 0
    result = runner.invoke(args=["work", "expire-leases"])
    assert result.exit_code == 0, result.output
    assert result.output == "1 expired lease returned to the pool\n"
    db_session.expire_all()
    assert db_session.get_one(Assignment, stale.id).state == AssignmentState.EXPIRED
    assert db_session.get_one(Assignment, live.id).state == AssignmentState.LEASED
    assert db_session.get_one(Task, stale.task_id).labels_in_progress == 0
    # only the live lease's hold is left
    assert project_budget(db_session, project=project).held.amount == held_before // 2
    again = runner.invoke(args=["work", "expire-leases"])
    assert again.output == "0 expired leases returned to the pool\n"


# --- throughput check ---------------------------------------------------------------------------------------


def test_throughput_check_records_the_risk_once(runner, db_session) -> None:
    project = make_project(db_session, tasks=10, review_policy="gold", budget_minor=300)
    for worker in annotators(db_session, 3):
        work(db_session, worker, "cat", now=utcnow() - timedelta(minutes=5))
    project.deadline_at = utcnow() + timedelta(minutes=1)
    db_session.commit()
    result = runner.invoke(args=["throughput", "check"])
    assert result.exit_code == 0, result.output
    types = db_session.scalars(
        select(Event.type)
        .where(Event.project_id == project.id, Event.type.in_(["project.at_risk", "budget.low"]))
        .order_by(Event.id)
    ).all()
    assert sorted(types) == ["budget.low", "project.at_risk"]
    assert result.output == "2 events recorded\n"
    # nothing changed: nothing more is recorded
    again = runner.invoke(args=["throughput", "check"])
    assert again.output == "0 events recorded\n"


# --- jobs ---------------------------------------------------------------------------------------------------


def test_jobs_run_names_the_known_jobs_for_an_unknown_one(runner) -> None:
    result = runner.invoke(args=["jobs", "run", "nightly"])
    assert result.exit_code == 2
    assert "unknown job 'nightly'" in result.output
    for name in ("expire-leases", "plan", "quality-auto-accept", "throughput-health", "events-deliver"):
        assert name in result.output


def test_jobs_run_expire_leases_and_plan(runner, db_session) -> None:
    make_project(db_session, tasks=2, lease_seconds=60)
    (worker,) = annotators(db_session, 1)
    stale = lease(db_session, worker, now=utcnow() - timedelta(hours=1))
    expired = runner.invoke(args=["jobs", "run", "expire-leases"])
    assert (expired.exit_code, expired.output) == (0, "expire-leases: 1\n")
    db_session.expire_all()
    assert db_session.get_one(Assignment, stale.id).state == AssignmentState.EXPIRED
    planned = runner.invoke(args=["jobs", "run", "plan"])
    assert planned.exit_code == 0, planned.output
    run = db_session.scalar(select(PlanRun).order_by(PlanRun.id.desc()))
    assert run is not None
    assert planned.output.startswith("plan: {")
    assert f"'id': {run.id}," in planned.output


def test_scheduler_once_without_redis_runs_every_job_here(make_app, app_config, db_session) -> None:
    make_project(db_session, tasks=2, lease_seconds=60)
    (worker,) = annotators(db_session, 1)
    stale = lease(db_session, worker, now=utcnow() - timedelta(hours=1))
    plain = make_app({**app_config, "REDIS_URL": None})
    result = plain.test_cli_runner().invoke(args=["jobs", "scheduler", "--once"])
    assert result.exit_code == 0, result.output
    assert "expire-leases every 15s" in result.output
    db_session.expire_all()
    assert db_session.get_one(Assignment, stale.id).state == AssignmentState.EXPIRED
    assert db_session.scalar(select(func.count()).select_from(PlanRun)) == 1


def test_scheduler_with_redis_queues_the_jobs_for_a_worker_of_this_app(
    make_app, app_config, db_session, redis_prefix
) -> None:
    import redis
    from rq import Queue

    from marketplace.jobs import periodic_jobs, queue_name

    make_project(db_session, tasks=2, lease_seconds=60)
    (worker,) = annotators(db_session, 1)
    stale = lease(db_session, worker, now=utcnow() - timedelta(hours=1))
    app = make_app(app_config)
    assert (
        queue_name(app) == f"{redis_prefix}jobs"
    )  # under the app's prefix: another deployment's is not ours
    connection = redis.Redis.from_url(app_config["REDIS_URL"])
    queue = Queue(queue_name(app), connection=connection)
    try:
        runner = app.test_cli_runner()
        assert runner.invoke(args=["jobs", "scheduler", "--once"]).exit_code == 0
        assert queue.count == len(periodic_jobs(app))  # one of each, none run yet
        db_session.expire_all()
        assert db_session.get_one(Assignment, stale.id).state == AssignmentState.LEASED  # only queued so far
        worked = runner.invoke(args=["jobs", "worker", "--burst"])
        assert worked.exit_code == 0, worked.output
        assert queue.count == 0
        db_session.expire_all()
        assert db_session.get_one(Assignment, stale.id).state == AssignmentState.EXPIRED
        assert db_session.scalar(select(func.count()).select_from(PlanRun)) == 1
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)
        connection.close()


def test_worker_needs_redis(make_app, app_config) -> None:
    plain = make_app({**app_config, "REDIS_URL": None})
    result = plain.test_cli_runner().invoke(args=["jobs", "worker", "--burst"])
    assert result.exit_code == 1
    assert "REDIS_URL is not set" in result.output
