"""Background work: a scheduler that fires periodic jobs and an RQ worker that runs them.

With Redis configured, the scheduler enqueues each job on the ``labelforce`` RQ queue and any number of
``flask jobs worker`` processes run them; without Redis (the embedded default) the scheduler runs each job
in-process. Jobs are plain functions that open their own unit of work, so a job is one transaction (or, for
payouts, one transaction per payout step), and moving to another job engine later is mechanical.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from marketplace.db import unit_of_work, utcnow
from marketplace.redis import get_redis, key
from marketplace.work.leases import expire_leases
from payments.ledger import with_retries

log = logging.getLogger(__name__)


def queue_name(app: Flask) -> str:
    """The RQ queue of this app: under its Redis prefix, so deployments (and test runs) sharing a server never
    take each other's jobs."""
    return key("jobs", app=app)


def expire_leases_job() -> int:
    """Return expired leases to the pool, in batches, one transaction per batch; a batch undone for a
    concurrent transaction (a deadlock victim) runs again."""

    def batch() -> int:
        with unit_of_work() as session:
            return expire_leases(session, now=utcnow(), limit=500)

    total = 0
    while True:
        expired = with_retries(batch)
        total += expired
        if expired < 500:
            return total


def plan_job() -> dict[str, object]:
    """Re-plan offers for every available annotator."""
    from marketplace.planning.jobs import run_plan

    return run_plan()


@dataclass(frozen=True)
class Periodic:
    name: str
    every_seconds: int
    func: Callable[[], object]


def periodic_jobs(app: Flask) -> list[Periodic]:
    """The jobs the scheduler fires, with their cadence (other packages add theirs to app.extensions)."""
    jobs = [
        Periodic("expire-leases", 15, expire_leases_job),
        Periodic("plan", app.config["PLAN_INTERVAL_SECONDS"], plan_job),
    ]
    jobs += app.extensions.get("labelforce.periodic", [])
    return jobs


def register_periodic(app: Flask, name: str, every_seconds: int, func: Callable[[], object]) -> None:
    """Add a job to the scheduler (called from a package's init_app)."""
    app.extensions.setdefault("labelforce.periodic", []).append(Periodic(name, every_seconds, func))


def run_job_now(job: Periodic) -> None:
    """Run a job in this process, logging (not raising) its failure so the scheduler keeps going."""
    started = time.perf_counter()
    try:
        result = job.func()
    except Exception:
        log.exception("job %s failed", job.name)
        return
    log.info("job %s done in %.0f ms: %s", job.name, (time.perf_counter() - started) * 1000, result)


def dispatch(app: Flask, job: Periodic) -> None:
    """Enqueue `job` on RQ when Redis is configured, else run it here."""
    client = get_redis(app)
    if client is None:
        run_job_now(job)
        return
    from redis import Redis
    from rq import Queue

    # RQ pickles results and needs bytes responses: a client of its own on the same server.
    connection = Redis.from_url(app.config["REDIS_URL"])
    # The id names the job and its period. RQ ids allow only letters, digits, "_" and "-", and are global on the
    # server: the app's prefix keeps deployments apart.
    scope = re.sub(r"[^A-Za-z0-9_-]", "_", queue_name(app))
    Queue(queue_name(app), connection=connection).enqueue(
        job.func, job_id=f"{scope}-{job.name}-{int(time.time() // job.every_seconds)}", job_timeout=600
    )


jobs_cli = AppGroup("jobs", help="Background jobs: the scheduler and the worker.")


@jobs_cli.command("scheduler")
@click.option("--once", is_flag=True, help="Fire every job once and exit (for cron or a smoke test).")
def scheduler_command(once: bool) -> None:
    """Fire the periodic jobs on their cadence (in-process without Redis, on the RQ queue with it)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    jobs = periodic_jobs(app)
    due = dict.fromkeys((job.name for job in jobs), 0.0)
    click.echo(f"scheduler: {', '.join(f'{j.name} every {j.every_seconds}s' for j in jobs)}", err=True)
    while True:
        now = time.monotonic()
        for job in jobs:
            if now >= due[job.name]:
                dispatch(app, job)
                due[job.name] = now + job.every_seconds
        if once:
            return
        time.sleep(1)


@jobs_cli.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker_command(burst: bool) -> None:
    """Run an RQ worker for this app's queue, inside this app's context."""
    if not current_app.config.get("REDIS_URL"):
        raise click.ClickException(
            "REDIS_URL is not set: without Redis, `flask jobs scheduler` runs jobs itself"
        )
    from redis import Redis
    from rq import Queue, Worker

    connection = Redis.from_url(current_app.config["REDIS_URL"])
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    Worker([Queue(queue_name(app), connection=connection)], connection=connection).work(burst=burst)


@jobs_cli.command("run")
@click.argument("name")
def run_command(name: str) -> None:
    """Run one periodic job now, in this process (e.g. `flask jobs run expire-leases`)."""
    jobs = {job.name: job for job in periodic_jobs(current_app._get_current_object())}  # type: ignore[attr-defined]
    if name not in jobs:
        raise click.UsageError(f"unknown job {name!r}; known: {', '.join(sorted(jobs))}")
    click.echo(f"{name}: {jobs[name].func()}")


def init_app(app: Flask) -> None:
    app.cli.add_command(jobs_cli)
