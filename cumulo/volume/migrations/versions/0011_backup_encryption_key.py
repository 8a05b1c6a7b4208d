"""backup encryption key

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup", schema=None) as batch_op:
        batch_op.add_column(sa.Column("volume_type_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("encryption_key_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup", schema=None) as batch_op:
        batch_op.drop_column("encryption_key_id")
        batch_op.drop_column("volume_type_id")
