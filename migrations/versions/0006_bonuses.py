"""bonuses

A project's managers can pay an annotator who worked on it a bonus from the project's budget, with a reason and
a client key that makes a retried request pay once. The money moves in the ledger; this table says who gave it,
to whom and why.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bonuses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("client_key", sa.String(length=120), nullable=False),
        sa.Column("granted_by_id", sa.Integer(), nullable=True),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor > 0 AND fee_minor >= 0", name=op.f("ck_bonuses_amounts_valid")),
        sa.ForeignKeyConstraint(
            ["annotator_id"],
            ["annotator_profiles.id"],
            name=op.f("fk_bonuses_annotator_id_annotator_profiles"),
        ),
        sa.ForeignKeyConstraint(
            ["granted_by_id"], ["users.id"], name=op.f("fk_bonuses_granted_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_bonuses_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bonuses")),
        sa.UniqueConstraint("project_id", "client_key", name=op.f("uq_bonuses_project_id_client_key")),
    )
    with op.batch_alter_table("bonuses", schema=None) as batch_op:
        batch_op.create_index("ix_bonuses_annotator", ["annotator_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bonuses", schema=None) as batch_op:
        batch_op.drop_index("ix_bonuses_annotator")
    op.drop_table("bonuses")
