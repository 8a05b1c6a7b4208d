"""security compliance: password expiry, history, self-service flag, failed logins

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 21:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "password_self_service", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(
            sa.Column("password_history", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(
            sa.Column("failed_auth_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("failed_auth_at", sa.DateTime(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_user_password_expires_at"), ["password_expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_password_expires_at"))
        for column in (
            "failed_auth_at",
            "failed_auth_count",
            "password_history",
            "password_self_service",
            "password_expires_at",
        ):
            batch_op.drop_column(column)
