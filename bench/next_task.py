"""Next-task benchmark: latency of `next` and `submit` through the real app on PostgreSQL + Redis, for a 1k-item
and a 1M-item project, and next+submit pairs per second through gunicorn — beside the requests per second of
two light GETs through the same server and clients, the floor of what the stack itself costs on the machine.

    .venv/bin/python bench/next_task.py [--pg URL] [--redis URL] [--pairs 2000] [--large 1000000] [--seconds 20]
                                        [--workers 2,4] [--no-floor]

It creates a database of its own on the PostgreSQL server, migrates it, fills it, measures and drops it. Progress
goes to stderr, the Markdown table to stdout. It is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from marketplace.accounts import services as accounts  # noqa: E402
from marketplace.annotators import services as annotators  # noqa: E402
from marketplace.app import create_app  # noqa: E402
from marketplace.billing.services import fund_project  # noqa: E402
from marketplace.db import unit_of_work, utcnow  # noqa: E402
from marketplace.projects.services import create_project  # noqa: E402
from payments.money import Money  # noqa: E402

BENCH_PASSWORD = "bench-password"  # noqa: S105  (throwaway users of a throwaway database)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def create_database(server_url: str) -> tuple[str, str]:
    name = f"labelforce_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@contextmanager
def bench_app(server_url: str, redis_url: str) -> Iterator[tuple[Any, str, str]]:
    """A database of its own on the server, migrated, and the app on it: (app, database URL, Redis prefix).
    The database is dropped on the way out, whatever happens."""
    name, url = create_database(server_url)
    prefix = f"lf:bench:{uuid.uuid4().hex[:8]}:"
    app = None
    try:
        say(f"migrating {name}")
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["database_url"] = url
        cfg.attributes["skip_logging"] = True
        command.upgrade(cfg, "head")
        app = create_app(
            {
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "REDIS_PREFIX": prefix,
                "RATELIMIT_ENABLED": False,
                "SECRET_KEY": "bench",
            }
        )
        yield app, url, prefix
    finally:
        if app is not None:
            app.extensions["labelforce.db"].engine.dispose()
        drop_database(server_url, name)


def seed(
    app: Any, *, sizes: dict[str, int], annotator_count: int, review_policy: str = "manual"
) -> dict[str, Any]:
    """Projects of the given sizes (items inserted with one INSERT ... SELECT each) and annotators with tokens."""
    out: dict[str, Any] = {"projects": {}, "tokens": []}
    with unit_of_work(app) as session:
        org = accounts.create_organisation(session, name="Bench", slug="bench")
        manager = accounts.create_user(session, email="m@bench.test", name="M", password=BENCH_PASSWORD)
        accounts.add_membership(session, user=manager, organisation=org, role="manager")
        annotators.create_skill(session, name="bench")
        for label, size in sizes.items():
            project = create_project(
                session,
                organisation_id=org.id,
                created_by_id=manager.id,
                fields={
                    "name": f"{label} items",
                    "label_schema": {"type": "single_choice", "choices": ["a", "b", "c"]},
                    "skill": "bench",
                    "pay_per_label_minor": 100,
                    "currency": "EUR",
                    "labels_per_item": 3,
                    "review_policy": review_policy,
                    "deadline": utcnow() + timedelta(days=30),
                    "status": "active",
                },
            )
            say(f"inserting {size:,} items into project {label}")
            session.execute(
                text(
                    "INSERT INTO tasks (project_id, external_id, payload, priority, is_gold, status, labels_needed,"
                    " labels_accepted, labels_in_progress, created_at) SELECT :p, 'item-' || g,"
                    " jsonb_build_object('n', g), 0, false, 'open', 3, 0, 0, now() FROM generate_series(1, :n) g"
                ),
                {"p": project.id, "n": size},
            )
            fund_project(
                session, project=project, amount=Money(10**12, "EUR"), idempotency_key=f"bench-{label}"
            )
            out["projects"][label] = project.id
        for i in range(annotator_count):
            user = accounts.create_user(
                session, email=f"a{i}@bench.test", name=f"A{i}", password=BENCH_PASSWORD
            )
            annotators.create_profile(
                session,
                user=user,
                display_name=f"A{i}",
                price_minor=50,
                currency="EUR",
                capacity=5,
                labels_per_hour=120.0,
                skills={"bench": 3},
            )
            out["tokens"].append(accounts.issue_token(session, user=user, name="bench")[1])
    settle(app)
    return out


def settle(app: Any) -> None:
    """Bring the database to the state a running service's would be in, then start from fresh connections.

    Freshly inserted rows get their visibility hint bits on first read, which writes pages, and a checkpoint of a
    million-row insert runs for minutes. The work loop's own tables start empty here and grow a thousandfold
    within one measurement, which a running service never sees: there autovacuum's ANALYZE keeps up with them,
    and its invalidations make every connection plan its prepared statements (and the foreign keys' checks)
    again. Plans cached while a table held ten rows keep scanning it whole once it holds thousands; measured
    after a warm-up without this step, the ledger's entry insert went from 0.4 to 0.9 ms per label and the speed
    measurement from 0.3 to 0.8 ms within 3,000 labels.
    """
    engine = app.extensions["labelforce.db"].engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
        conn.execute(text("CHECKPOINT"))
    engine.dispose()


def measure_latency(
    app: Any, tokens: list[str], project_id: int, pairs: int, warmup: int
) -> dict[str, float]:
    """next and submit latencies (ms) of annotators taking turns at next → submit, in-process, one at a time
    (an annotator labels an item once: the 1k-item project, at 3 labels per item, needs several of them).
    The database settles after the warm-up pairs (see `settle`)."""
    client = app.test_client()
    nexts: list[float] = []
    submits: list[float] = []
    for i in range(warmup + pairs):
        if i == warmup and warmup:
            settle(app)
        headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
        started = time.perf_counter()
        response = client.post("/api/v1/work/next", json={"project_id": project_id}, headers=headers)
        took_next = time.perf_counter() - started
        body = response.get_json()
        assignment = body.get("assignment")
        if response.status_code != 200 or assignment is None:
            raise SystemExit(f"no work after {i} pairs: {body}")
        started = time.perf_counter()
        submitted = client.post(
            f"/api/v1/assignments/{assignment['id']}/submit",
            json={"value": "a"},
            headers={**headers, "Idempotency-Key": f"k{i}"},
        )
        took_submit = time.perf_counter() - started
        if submitted.status_code != 200:
            raise SystemExit(f"submit failed: {submitted.get_json()}")
        if i >= warmup:
            nexts.append(took_next * 1000)
            submits.append(took_submit * 1000)
    return {
        "next_p50": statistics.median(nexts),
        "next_p99": percentile(nexts, 0.99),
        "submit_p50": statistics.median(submits),
        "submit_p99": percentile(submits, 0.99),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gunicorn(env: dict[str, str], workers: int) -> Iterator[int]:
    """gunicorn serving the app on a free port of 127.0.0.1, once every worker answers; yields the port."""
    port = free_port()
    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        # The master listens before its workers have imported the app: wait until every worker answers.
        deadline = time.monotonic() + 120
        answered = 0
        while answered < workers * 4 and time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                answered += conn.getresponse().status == 200
                conn.close()
            except OSError:
                time.sleep(0.2)
        time.sleep(2)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def run_clients(tokens: list[str], seconds: float, loop: Any) -> dict[str, float]:
    """One thread per token running `loop(index, token, stop, counts, errors)` until `stop`; the totals per second."""
    stop = time.monotonic() + seconds
    counts = [0] * len(tokens)
    errors = [0] * len(tokens)
    threads = [threading.Thread(target=loop, args=(i, t, stop, counts, errors)) for i, t in enumerate(tokens)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "pairs_per_s": sum(counts) / elapsed,
        "pairs": sum(counts),
        "errors": sum(errors),
        "seconds": elapsed,
    }


@contextmanager
def lock_waits(url: str, interval: float = 0.02) -> Iterator[dict[str, float]]:
    """Sample the database's sessions while the block runs; on exit, `average` is how many of them were waiting
    for a lock (a row another transaction holds) at an average instant."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    result: dict[str, float] = {}
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not done.wait(interval):
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock') FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                samples.append(int(row[0]) if row else 0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["average"] = statistics.fmean(samples) if samples else 0.0


def measure_throughput(
    port: int,
    tokens: list[str],
    project_id: int,
    seconds: float,
    *,
    chained: bool = False,
) -> dict[str, float]:
    """next+submit pairs per second through gunicorn, with one client thread per annotator.

    `chained`: each client labels continuously with "submit and next" (`"next": true`), one request per label
    after its first `next`; a pair is then one labelled item."""

    def loop(index: int, token: str, stop: float, counts: list[int], errors: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        n = 0
        assignment = None
        while time.monotonic() < stop:
            if assignment is None:
                conn.request(
                    "POST",
                    "/api/v1/work/next",
                    body=json.dumps({"project_id": project_id}),
                    headers=headers,
                )
                assignment = json.loads(conn.getresponse().read()).get("assignment")
                if not assignment:
                    errors[index] += 1
                    continue
            n += 1
            conn.request(
                "POST",
                f"/api/v1/assignments/{assignment['id']}/submit",
                body=json.dumps({"value": "b", "next": chained}),
                headers={**headers, "Idempotency-Key": f"t{index}-{n}"},
            )
            response = conn.getresponse()
            body = json.loads(response.read())
            assignment = body["next"]["assignment"] if chained and response.status == 200 else None
            (counts if response.status == 200 else errors)[index] += 1
        conn.close()

    return run_clients(tokens, seconds, loop)


def measure_floor(port: int, tokens: list[str], path: str, seconds: float) -> dict[str, float]:
    """Requests per second of a light GET through the same server and clients: what the stack itself costs.

    `/healthz` runs `SELECT 1` and pings Redis without authentication; `/api/v1/me` authenticates the bearer
    token (one query) and reads the caller's memberships and annotator profile (two more)."""

    def loop(index: int, token: str, stop: float, counts: list[int], errors: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < stop:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            (counts if response.status == 200 else errors)[index] += 1
        conn.close()

    return run_clients(tokens, seconds, loop)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=600)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--workers", default="2,4", help="gunicorn worker counts to measure throughput with (comma-separated)"
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure light GETs through the same server and clients (what the stack itself allows)",
    )
    args = parser.parse_args()
    with bench_app(args.pg, args.redis) as (app, url, prefix):
        data = seed(app, sizes={"1k": 1000, "1M": args.large}, annotator_count=args.clients + 6)
        rows = []
        for label in ("1k", "1M"):
            say(
                f"latency on the {label}-item project: {args.warmup} warm-up + {args.pairs} next/submit pairs"
            )
            tokens = data["tokens"][:3] if label == "1k" else data["tokens"][3:6]
            rows.append(
                (label, measure_latency(app, tokens, data["projects"][label], args.pairs, args.warmup))
            )
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": args.redis,
            "REDIS_PREFIX": prefix,
            "SECRET_KEY": "bench",
            "RATELIMIT_ENABLED": "false",
        }
        throughputs = []
        floors = []
        for workers in [int(w) for w in args.workers.split(",")]:
            for chained in (False, True):
                say(
                    f"throughput: gunicorn -w {workers}, {args.clients} client threads, {args.seconds:.0f} s"
                    + (", submit and next" if chained else "")
                )
                settle(app)
                with gunicorn(env, workers) as port, lock_waits(url) as waits:
                    result = measure_throughput(
                        port, data["tokens"][6:], data["projects"]["1M"], args.seconds, chained=chained
                    )
                result["lock_waits"] = waits["average"]
                throughputs.append((workers, chained, result))
            if args.floor:
                with gunicorn(env, workers) as port:
                    for path in ("/healthz", "/api/v1/me"):
                        say(f"floor: GET {path}, gunicorn -w {workers}, {args.clients} client threads")
                        floors.append(
                            (workers, path, measure_floor(port, data["tokens"][6:], path, args.seconds))
                        )
        small, large = rows[0][1], rows[1][1]
        print("| project | next p50 | next p99 | submit p50 | submit p99 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, r in rows:
            print(
                f"| {label} items | {r['next_p50']:.1f} ms | {r['next_p99']:.1f} ms | {r['submit_p50']:.1f} ms | {r['submit_p99']:.1f} ms |"
            )
        print()
        print(
            f"ratio 1M / 1k: next p50 {large['next_p50'] / small['next_p50']:.2f}, next p99 {large['next_p99'] / small['next_p99']:.2f}"
        )
        print()
        for workers, chained, throughput in throughputs:
            how = "labels/s with submit-and-next" if chained else "next+submit pairs/s"
            print(
                f"gunicorn -w {workers}, {args.clients} clients: {throughput['pairs_per_s']:.0f} {how} "
                f"({throughput['pairs']:,} in {throughput['seconds']:.1f} s, {throughput['errors']} without work or failed; "
                f"{throughput['lock_waits']:.2f} requests waiting for a row lock at an average instant)"
            )
        for workers, path, floor in floors:
            print(
                f"floor, gunicorn -w {workers}, {args.clients} clients: GET {path} {floor['pairs_per_s']:.0f} requests/s "
                f"({floor['pairs']:,} in {floor['seconds']:.1f} s, {floor['errors']} failed)"
            )


if __name__ == "__main__":
    main()
