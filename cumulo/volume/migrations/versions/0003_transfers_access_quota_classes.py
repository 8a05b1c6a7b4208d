"""volume transfers, private type access, quota classes, group types, snapshot progress

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 21:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volume_type_access",
        sa.Column("type_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["type_id"], ["volume_type.id"],
            name=op.f("fk_volume_type_access_type_id_volume_type"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("type_id", "project_id", name=op.f("pk_volume_type_access")),
    )  # fmt: skip
    op.create_table(
        "quota_class",
        sa.Column("class_name", sa.String(length=255), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("hard_limit", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("class_name", "resource", name=op.f("pk_quota_class")),
    )
    op.create_table(
        "transfer",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("volume_id", sa.String(length=36), nullable=False),
        sa.Column("source_project_id", sa.String(length=64), nullable=False),
        sa.Column("destination_project_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("salt", sa.String(length=255), nullable=False),
        sa.Column("crypt_hash", sa.String(length=255), nullable=False),
        sa.Column("no_snapshots", sa.Boolean(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["volume_id"], ["volume.id"], name=op.f("fk_transfer_volume_id_volume")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer")),
    )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfer_volume_id"), ["volume_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_transfer_source_project_id"), ["source_project_id"], unique=False
        )
    op.create_table(
        "group_type",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_type")),
        sa.UniqueConstraint("name", name=op.f("uq_group_type_name")),
    )
    op.create_table(
        "group_type_spec",
        sa.Column("group_type_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_type_id"], ["group_type.id"],
            name=op.f("fk_group_type_spec_group_type_id_group_type"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_type_id", "key", name=op.f("pk_group_type_spec")),
    )  # fmt: skip
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshot", schema=None) as batch_op:
        batch_op.drop_column("progress")
    op.drop_table("group_type_spec")
    op.drop_table("group_type")
    op.drop_table("transfer")
    op.drop_table("quota_class")
    op.drop_table("volume_type_access")
