"""volume type encryption

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 01:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volume_type_encryption",
        sa.Column("volume_type_id", sa.String(length=36), nullable=False),
        sa.Column("encryption_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("cipher", sa.String(length=255), nullable=True),
        sa.Column("key_size", sa.Integer(), nullable=True),
        sa.Column("control_location", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["volume_type_id"],
            ["volume_type.id"],
            name=op.f("fk_volume_type_encryption_volume_type_id_volume_type"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("volume_type_id", name=op.f("pk_volume_type_encryption")),
        sa.UniqueConstraint("encryption_id", name=op.f("uq_volume_type_encryption_encryption_id")),
    )


def downgrade() -> None:
    op.drop_table("volume_type_encryption")
