"""server migrations (cold migrate, resize, live migration, evacuation)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    host = sa.String(length=255)
    op.create_table(
        "migration",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("migration_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("source_compute", host, nullable=True),
        sa.Column("source_node", host, nullable=True),
        sa.Column("dest_compute", host, nullable=True),
        sa.Column("dest_node", host, nullable=True),
        sa.Column("dest_host", host, nullable=True),
        sa.Column("old_flavor_id", sa.Integer(), nullable=True),
        sa.Column("new_flavor_id", sa.Integer(), nullable=True),
        *(
            sa.Column(f"{kind}_{part}", sa.BigInteger(), nullable=True)
            for kind in ("memory", "disk")
            for part in ("total", "processed", "remaining")
        ),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration")),
        sa.UniqueConstraint("uuid", name=op.f("uq_migration_uuid")),
    )
    op.create_index(
        "ix_migration_instance_status", "migration", ["instance_uuid", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_migration_instance_status", table_name="migration")
    op.drop_table("migration")
