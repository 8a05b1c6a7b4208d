"""volume encryption key

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.add_column(sa.Column("encryption_key_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.drop_column("encryption_key_id")
