"""How long each lease keeps its project's budget row locked: the per-project ceiling on leases per second.

    .venv/bin/python bench/budget_lock.py [--pg URL] [--labels 1500] [--policy manual|consensus]

Every lease holds money on its project's budget, one ledger balance row; PostgreSQL keeps a row locked from the
statement that locks or updates it to the commit, so one project's leases pass that point one at a time whatever
the number of cores. This builds its own database (as bench/next_task.py does), labels a 20,000-item project with
"submit and next" in-process, and prints the time from the first statement that locks the budget's balance row to
the end of the commit (p50 / p90 / p99 / mean), the ceiling it implies (1 / mean), and the statements inside that window
for a typical lease. With `--policy consensus` the project decides each item when its third label arrives (three
annotators, the same answer): a third of the submits then also pay three labels. A diagnostic, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event
from sqlalchemy.orm import Session

from bench import next_task


def _locks_a_balance(statement: str) -> bool:
    return "ledger_balances" in statement and (
        "FOR UPDATE" in statement or statement.lstrip().startswith("UPDATE ledger_balances")
    )


def measure(app: Any, tokens: list[str], project_id: int, labels: int) -> tuple[list[float], list[list[str]]]:
    """Per lease: milliseconds from the budget row's lock to the end of the commit, and the statements between."""
    engine = app.extensions["labelforce.db"].engine
    window: dict[str, Any] = {}
    held: list[float] = []
    inside: list[list[str]] = []

    def before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "start" not in window and _locks_a_balance(statement):
            window["start"] = time.perf_counter()
            window["statements"] = []
        if "start" in window:
            window["statements"].append(" ".join(statement.split()[:4]))

    def after_commit(session: Session) -> None:
        if session.in_nested_transaction() or "start" not in window:
            return
        held.append((time.perf_counter() - window.pop("start")) * 1000)
        inside.append(window.pop("statements"))

    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(Session, "after_commit", after_commit)
    try:
        client = app.test_client()
        headers = {token: {"Authorization": f"Bearer {token}"} for token in tokens}
        current = {
            token: client.post(
                "/api/v1/work/next", json={"project_id": project_id}, headers=headers[token]
            ).get_json()["assignment"]["id"]
            for token in tokens
        }
        for n in range(labels):
            token = tokens[n % len(tokens)]
            response = client.post(
                f"/api/v1/assignments/{current[token]}/submit",
                json={"value": "b", "next": True},
                headers={**headers[token], "Idempotency-Key": f"lock-{n}"},
            )
            current[token] = response.get_json()["next"]["assignment"]["id"]
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)
        event.remove(Session, "after_commit", after_commit)
    return held, inside


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--labels", type=int, default=1500)
    parser.add_argument("--policy", choices=["manual", "consensus"], default="manual")
    args = parser.parse_args()
    with next_task.bench_app(args.pg, args.redis) as (app, _, _):
        data = next_task.seed(app, sizes={"items": 20_000}, annotator_count=3, review_policy=args.policy)
        warmup = min(300, args.labels)
        next_task.say(f"{warmup} warm-up labels, then {args.labels} measured")
        measure(app, data["tokens"], data["projects"]["items"], warmup)
        next_task.settle(app)
        held, inside = measure(app, data["tokens"], data["projects"]["items"], args.labels)
    held_sorted = sorted(held)
    p50 = statistics.median(held)
    mean = statistics.fmean(held)
    print(
        f"budget row locked per lease: p50 {p50:.2f} ms, p90 {held_sorted[int(0.9 * len(held)) - 1]:.2f} ms, "
        f"p99 {held_sorted[int(0.99 * len(held)) - 1]:.2f} ms, mean {mean:.2f} ms ({len(held):,} leases)"
    )
    print(f"ceiling for one project: ~{1000 / mean:,.0f} leases/s (one lease at a time: 1 / mean)")
    typical = min(inside, key=lambda statements: abs(len(statements) - statistics.median(map(len, inside))))
    print("statements inside the window of a typical lease, then the COMMIT:")
    for statement in typical:
        print(f"  {statement}")


if __name__ == "__main__":
    main()
