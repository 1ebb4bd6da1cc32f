"""labels by annotator, latest first

Measuring an annotator's speed on every submit reads their latest labels. With an index on `annotator_id` alone
PostgreSQL either sorted all of the annotator's labels or walked the primary key backwards past everyone
else's: a cost that grew with the history. `(annotator_id, id)` reads the latest ones directly and serves every
lookup by annotator that the single-column index served, which it replaces.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index("ix_labels_annotator_latest", ["annotator_id", "id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_labels_annotator_id"))


def downgrade() -> None:
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_labels_annotator_id"), ["annotator_id"], unique=False)
        batch_op.drop_index("ix_labels_annotator_latest")
