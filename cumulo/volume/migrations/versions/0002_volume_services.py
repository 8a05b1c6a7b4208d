"""volume services (heartbeats, backend capacity) and volumes by host

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volume_service",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("binary", sa.String(length=64), nullable=False),
        sa.Column("pool", sa.String(length=255), nullable=True),
        sa.Column("availability_zone", sa.String(length=255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column("capabilities", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_service")),
        sa.UniqueConstraint("host", "binary", name=op.f("uq_volume_service_host")),
    )
    with op.batch_alter_table("volume", schema=None) as batch_op:
        # Covering: what each backend has allocated is a sum over it (the scheduler).
        batch_op.create_index("ix_volume_host_size", ["host", "size"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.drop_index("ix_volume_host_size")
    op.drop_table("volume_service")
