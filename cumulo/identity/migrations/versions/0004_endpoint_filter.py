"""OS-EP-FILTER: endpoint groups and project associations

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_group",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_group")),
    )
    op.create_table(
        "project_endpoint",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_project_endpoint_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoint.id"],
            name=op.f("fk_project_endpoint_endpoint_id_endpoint"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "endpoint_id", name=op.f("pk_project_endpoint")),
    )
    op.create_index(
        op.f("ix_project_endpoint_endpoint_id"), "project_endpoint", ["endpoint_id"], unique=False
    )
    op.create_table(
        "project_endpoint_group",
        sa.Column("endpoint_group_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_group_id"],
            ["endpoint_group.id"],
            name=op.f("fk_project_endpoint_group_endpoint_group_id_endpoint_group"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_project_endpoint_group_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "endpoint_group_id", "project_id", name=op.f("pk_project_endpoint_group")
        ),
    )
    op.create_index(
        op.f("ix_project_endpoint_group_project_id"),
        "project_endpoint_group",
        ["project_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("project_endpoint_group")
    op.drop_table("project_endpoint")
    op.drop_table("endpoint_group")
