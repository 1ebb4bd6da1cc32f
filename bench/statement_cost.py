"""What one SQL statement costs the application, through each layer: the ORM, Core, and the driver alone.

    .venv/bin/python bench/statement_cost.py [--pg URL] [--statements 2000]

Builds its own database (as bench/next_task.py does, with a 2,000-item project), then runs the same primary-key read
of an item `--statements` times through each layer and prints wall time and the client's CPU time per statement.
The database's own CPU is not in "client CPU". A diagnostic for where the work loop's time goes, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select, update

from bench import next_task
from marketplace.projects.models import Task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--statements", type=int, default=2000)
    args = parser.parse_args()
    with next_task.bench_app(args.pg, args.redis) as (app, _, _):
        data = next_task.seed(app, sizes={"items": args.statements}, annotator_count=1)
        database = app.extensions["labelforce.db"]
        with database.sessionmaker() as session:
            ids = list(session.scalars(select(Task.id).where(Task.project_id == data["projects"]["items"])))
            connection = session.connection()
            table = Task.__table__
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]

            def orm_entity() -> None:
                for i in ids:
                    stmt = select(Task).where(Task.id == i).execution_options(populate_existing=True)
                    session.scalars(stmt).one()

            def orm_update() -> None:
                for i in ids:
                    session.execute(
                        update(Task)
                        .where(Task.id == i)
                        .values(priority=Task.priority + 0)
                        .execution_options(synchronize_session=False)
                    )

            def core_select() -> None:
                for i in ids:
                    connection.execute(select(table).where(table.c.id == i)).one()

            def driver_select() -> None:
                for i in ids:
                    cursor.execute("SELECT * FROM tasks WHERE id = %s", (i,))
                    cursor.fetchone()

            layers: list[tuple[str, Callable[[], None]]] = [
                ("ORM: select an entity", orm_entity),
                ("ORM: UPDATE statement", orm_update),
                ("Core: select a row", core_select),
                ("psycopg cursor", driver_select),
            ]
            print("| layer | wall per statement | client CPU per statement |")
            print("| --- | ---: | ---: |")
            for label, run in layers:
                run()  # warm the statement caches and the server's prepared statements
                cpu, wall = time.process_time(), time.perf_counter()
                run()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(f"| {label} | {wall * 1000 / len(ids):.3f} ms | {cpu * 1000 / len(ids):.3f} ms |")
            session.rollback()


if __name__ == "__main__":
    main()
