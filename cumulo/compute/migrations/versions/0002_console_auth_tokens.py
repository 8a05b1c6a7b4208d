"""console auth tokens (the noVNC proxy's)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_auth_token",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("console_type", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("internal_access_path", sa.String(length=255), nullable=True),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_auth_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_console_auth_token_token_hash")),
    )
    op.create_index(
        op.f("ix_console_auth_token_instance_uuid"),
        "console_auth_token",
        ["instance_uuid"],
        unique=False,
    )
    op.create_index(
        op.f("ix_console_auth_token_expires"), "console_auth_token", ["expires"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_console_auth_token_expires"), table_name="console_auth_token")
    op.drop_index(op.f("ix_console_auth_token_instance_uuid"), table_name="console_auth_token")
    op.drop_table("console_auth_token")
