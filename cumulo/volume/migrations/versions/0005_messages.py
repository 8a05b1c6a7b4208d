"""user messages

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("resource_type", sa.String(length=36), nullable=False),
        sa.Column("resource_uuid", sa.String(length=36), nullable=True),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("message_level", sa.String(length=255), nullable=False),
        sa.Column("user_message", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
    )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_project_created", ["project_id", "created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("message")
