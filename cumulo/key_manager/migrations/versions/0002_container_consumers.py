"""container consumers

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 03:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "container_consumer",
        sa.Column("container_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["container_id"],
            ["container.id"],
            name=op.f("fk_container_consumer_container_id_container"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("container_id", "name", "url", name=op.f("pk_container_consumer")),
    )


def downgrade() -> None:
    op.drop_table("container_consumer")
