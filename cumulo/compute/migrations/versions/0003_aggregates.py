"""host aggregates

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 21:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregate",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aggregate")),
        sa.UniqueConstraint("name", name=op.f("uq_aggregate_name")),
        sa.UniqueConstraint("uuid", name=op.f("uq_aggregate_uuid")),
    )
    for table, column in (("aggregate_host", "host"), ("aggregate_metadata", "key")):
        op.create_table(
            table,
            sa.Column("aggregate_id", sa.Integer(), nullable=False),
            sa.Column(column, sa.String(length=255), nullable=False),
            *(
                [sa.Column("value", sa.String(length=255), nullable=False)]
                if column == "key"
                else []
            ),
            sa.ForeignKeyConstraint(
                ["aggregate_id"],
                ["aggregate.id"],
                name=op.f(f"fk_{table}_aggregate_id_aggregate"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("aggregate_id", column, name=op.f(f"pk_{table}")),
        )


def downgrade() -> None:
    op.drop_table("aggregate_metadata")
    op.drop_table("aggregate_host")
    op.drop_table("aggregate")
