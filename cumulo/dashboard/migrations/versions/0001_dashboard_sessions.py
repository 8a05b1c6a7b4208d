"""dashboard sessions, shared by the processes that serve the dashboard

Revision ID: 0001
Revises:
Create Date: 2026-12-06 04:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(length=16 * 1024 * 1024), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_session")),
    )
    op.create_index(
        "ix_dashboard_session_expires_at", "dashboard_session", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_dashboard_session_expires_at", table_name="dashboard_session")
    op.drop_table("dashboard_session")
