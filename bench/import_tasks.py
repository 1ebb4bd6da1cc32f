"""Task import speed: rows per second of a JSON Lines import, as `POST /projects/{id}/tasks` runs it.

    .venv/bin/python bench/import_tasks.py [--pg URL] [--rows 50000] [--repeat 3]

Builds its own PostgreSQL database (as bench/next_task.py does), then imports `--rows` new items into an empty
project `--repeat` times (a fresh project each time) through `imports.import_tasks` in one unit of work, and prints
the wall time, this process's CPU time and rows per second of each run. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import next_task
from marketplace.db import unit_of_work
from marketplace.projects import imports
from marketplace.projects.models import Project


def jsonl(rows: int, tag: str) -> bytes:
    return b"".join(
        b'{"external_id": "%s-%d", "payload": {"text": "item number %d", "url": "https://x.test/%d.jpg"}}\n'
        % (tag.encode(), i, i, i)
        for i in range(rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with next_task.bench_app(args.pg, args.redis) as (app, _, _):
        data = next_task.seed(app, sizes={f"p{n}": 0 for n in range(args.repeat)}, annotator_count=1)
        for n in range(args.repeat):
            body = jsonl(args.rows, f"run{n}")
            next_task.say(f"importing {args.rows:,} rows ({len(body) / 1e6:.1f} MB), run {n + 1}")
            started, cpu = time.perf_counter(), time.process_time()
            with unit_of_work(app) as session:
                project = session.get_one(Project, data["projects"][f"p{n}"])
                result = imports.import_tasks(
                    session, project=project, rows=imports.read_rows(io.BytesIO(body), "jsonl")
                )
            wall, used = time.perf_counter() - started, time.process_time() - cpu
            print(
                f"{result.created:,} rows in {wall:.2f} s ({used:.2f} s of this process's CPU): "
                f"{result.created / wall:,.0f} rows/s"
            )


if __name__ == "__main__":
    main()
