"""vacuum the work loop's churning tables sooner

Hand-written (autogenerate does not see storage parameters). PostgreSQL only.

Every lease updates its item's row and every submit its assignment's row, each outside a HOT update (the changed
columns are indexed), so each leaves dead index entries that queries walk until VACUUM removes them: the live lease
count, for one, reads the `(annotator_id, 'leased')` entries of every assignment the annotator has submitted
since the last vacuum. By default autovacuum waits for 20% of a table to be dead, which on a table of ten million
assignments is two million; offers are replaced wholesale by every plan and the review queue is drained as fast as
it fills. These tables are vacuumed after 1% (plus 1,000 rows) and analysed after 2% (plus 1,000 rows) instead,
which also renews the plans that connections cached while the tables were smaller.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHURNING_TABLES = ("tasks", "assignments", "offers", "review_queue")
SETTINGS = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "1000",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    for table in CHURNING_TABLES:
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in CHURNING_TABLES:
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(SETTINGS)})")
