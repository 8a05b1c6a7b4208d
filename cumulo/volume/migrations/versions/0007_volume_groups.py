"""generic volume groups and group snapshots

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volume_group",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("availability_zone", sa.String(length=255), nullable=False),
        sa.Column("group_type_id", sa.String(length=36), nullable=False),
        sa.Column("group_snapshot_id", sa.String(length=36), nullable=True),
        sa.Column("source_group_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_type_id"], ["group_type.id"],
            name=op.f("fk_volume_group_group_type_id_group_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_group")),
    )  # fmt: skip
    op.create_index(op.f("ix_volume_group_project_id"), "volume_group", ["project_id"])
    op.create_table(
        "volume_group_type_mapping",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("volume_type_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["volume_group.id"],
            name=op.f("fk_volume_group_type_mapping_group_id_volume_group"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["volume_type_id"], ["volume_type.id"],
            name=op.f("fk_volume_group_type_mapping_volume_type_id_volume_type"),
        ),
        sa.PrimaryKeyConstraint(
            "group_id", "volume_type_id", name=op.f("pk_volume_group_type_mapping")
        ),
    )  # fmt: skip
    op.create_table(
        "group_snapshot",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("group_type_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["volume_group.id"],
            name=op.f("fk_group_snapshot_group_id_volume_group"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_snapshot")),
    )  # fmt: skip
    op.create_index(op.f("ix_group_snapshot_group_id"), "group_snapshot", ["group_id"])
    op.create_index(op.f("ix_group_snapshot_project_id"), "group_snapshot", ["project_id"])
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_volume_group_id"), ["group_id"], unique=False)
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_snapshot_id", sa.String(length=36), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_snapshot_group_snapshot_id"), ["group_snapshot_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshot_group_snapshot_id"))
        batch_op.drop_column("group_snapshot_id")
    with op.batch_alter_table("volume", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_group_id"))
        batch_op.drop_column("group_id")
    op.drop_table("group_snapshot")
    op.drop_table("volume_group_type_mapping")
    op.drop_table("volume_group")
