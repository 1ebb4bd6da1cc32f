"""Where a next+submit pair spends its SQL time: per-statement timings on a small and a large project.

    .venv/bin/python bench/statement_profile.py [--large 1000000] [--pairs 100] [--large-first]

Builds its own database (as bench/next_task.py does), runs annotators through next → submit in-process, and prints,
per project, the SQL milliseconds per pair and the statements that took the most. A diagnostic, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event

from bench import next_task


def profile(
    app: Any, tokens: list[str], project_id: int, pairs: int
) -> tuple[float, list[tuple[float, int, str]]]:
    """SQL ms per pair and the top statements (ms per pair, count, statement)."""
    engine = app.extensions["labelforce.db"].engine
    times: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def before(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        context.profile_started = time.perf_counter()

    def after(_conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
        key = " ".join(statement.split())[:110]
        times[key] += time.perf_counter() - context.profile_started
        counts[key] += 1

    next_task.measure_latency(app, tokens, project_id, 20, 10)
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        next_task.measure_latency(app, tokens, project_id, pairs, 0)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    top = sorted(((t * 1000 / pairs, counts[k], k) for k, t in times.items()), reverse=True)[:10]
    return sum(times.values()) * 1000 / pairs, top


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--large-first", action="store_true", help="Profile the large project first.")
    args = parser.parse_args()
    with next_task.bench_app(args.pg, args.redis) as (app, _, _):
        data = next_task.seed(app, sizes={"1k": 1000, "1M": args.large}, annotator_count=6)
        order = [("1k", data["tokens"][:3]), ("1M", data["tokens"][3:6])]
        for label, tokens in reversed(order) if args.large_first else order:
            total, top = profile(app, tokens, data["projects"][label], args.pairs)
            print(f"## {label} items: {total:.1f} ms of SQL per next+submit pair")
            for ms, count, statement in top:
                print(f"{ms:7.2f} ms/pair  x{count:<5} {statement}")


if __name__ == "__main__":
    main()
