"""assignments follow assignments: the lease a "submit and next" opened names the assignment it followed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:03:05.435457
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follows_assignment_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_assignments_follows_assignment_id'), ['follows_assignment_id'])
        batch_op.create_foreign_key(batch_op.f('fk_assignments_follows_assignment_id_assignments'), 'assignments', ['follows_assignment_id'], ['id'], ondelete='SET NULL')



def downgrade() -> None:
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_assignments_follows_assignment_id_assignments'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_assignments_follows_assignment_id'), type_='unique')
        batch_op.drop_column('follows_assignment_id')

