"""ids, tags and import tasks of the EC2 API

Revision ID: 0001
Revises:
Create Date: 2026-12-05 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("os_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("reservation_id", sa.String(length=32), nullable=True),
        sa.Column("client_token", sa.String(length=64), nullable=True),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item")),
        sa.UniqueConstraint("kind", "os_id", name="uq_item_kind_os_id"),
    )
    op.create_index("ix_item_project_token", "item", ["project_id", "client_token"])
    op.create_table(
        "tag",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "item_id", "key", name=op.f("pk_tag")),
    )
    op.create_table(
        "import_task",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_message", sa.String(length=255), nullable=False),
        sa.Column("progress", sa.String(length=8), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("image_id", sa.String(length=32), nullable=True),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_task")),
    )
    op.create_index("ix_import_task_project_id", "import_task", ["project_id"])


def downgrade() -> None:
    op.drop_table("import_task")
    op.drop_table("tag")
    op.drop_table("item")
