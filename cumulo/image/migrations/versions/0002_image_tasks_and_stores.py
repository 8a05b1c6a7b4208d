"""image tasks; an image's data in several stores

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_task",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("image_id", sa.String(length=36), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_task")),
    )
    with op.batch_alter_table("image_task", schema=None) as batch_op:
        batch_op.create_index("ix_image_task_image_id", ["image_id"], unique=False)
    # `store` becomes the comma-separated ids of every store holding the data.
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.alter_column(
            "store", existing_type=sa.String(length=64), type_=sa.String(length=1024)
        )


def downgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.alter_column(
            "store", existing_type=sa.String(length=1024), type_=sa.String(length=64)
        )
    op.drop_table("image_task")
