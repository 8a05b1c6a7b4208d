"""instances keep their device metadata (Nova's instance_extra.device_metadata): the
tagged devices and where the guest finds them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_metadata", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("device_metadata")
