"""project worker blocks and fast answers

A project's managers can block and unblock an annotator for the project, and a project can block annotators who
keep answering faster than a minimum time per label. `fast_answers` counts those answers since the last unblock;
`blocked_source` says what blocked (a gold floor, fast answers or a manager) and `blocked_by_id` which manager.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fast_answers", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("blocked_source", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("blocked_by_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_project_workers_blocked_by_id_users"),
            "users",
            ["blocked_by_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_project_workers_fast_answers_non_negative"), "fast_answers >= 0"
        )


def downgrade() -> None:
    with op.batch_alter_table("project_workers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_project_workers_fast_answers_non_negative"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_project_workers_blocked_by_id_users"), type_="foreignkey")
        batch_op.drop_column("blocked_by_id")
        batch_op.drop_column("blocked_source")
        batch_op.drop_column("fast_answers")
