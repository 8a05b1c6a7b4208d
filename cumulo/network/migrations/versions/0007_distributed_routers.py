"""distributed routers (Neutron's dvr extension): the router's `distributed` flag and
each host's DVR MAC (Neutron's dvr_host_macs)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("router", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("distributed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "dvr_host_mac",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("mac_address", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_dvr_host_mac")),
        sa.UniqueConstraint("mac_address", name=op.f("uq_dvr_host_mac_mac_address")),
    )


def downgrade() -> None:
    op.drop_table("dvr_host_mac")
    with op.batch_alter_table("router", schema=None) as batch_op:
        batch_op.drop_column("distributed")
