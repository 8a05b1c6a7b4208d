"""volume migration status

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.add_column(sa.Column("migration_status", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("previous_status", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.drop_column("previous_status")
        batch_op.drop_column("migration_status")
