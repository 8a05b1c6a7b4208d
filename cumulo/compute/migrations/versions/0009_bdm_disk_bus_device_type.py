"""block device mappings keep the disk bus and device type asked for (Nova's bdm
disk_bus and device_type: a volume on the scsi bus, passed through as a SCSI LUN)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("block_device_mapping", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disk_bus", sa.String(255), nullable=True))
        batch_op.add_column(sa.Column("device_type", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("block_device_mapping", schema=None) as batch_op:
        batch_op.drop_column("device_type")
        batch_op.drop_column("disk_bus")
