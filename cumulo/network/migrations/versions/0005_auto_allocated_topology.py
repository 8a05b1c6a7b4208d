"""each project's auto-allocated topology (Neutron's auto-allocated-topology extension):
its network and router, one per project

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auto_allocated_topology",
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("router_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["network.id"],
            name=op.f("fk_auto_allocated_topology_network_id_network"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["router_id"],
            ["router.id"],
            name=op.f("fk_auto_allocated_topology_router_id_router"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_auto_allocated_topology")),
        sa.UniqueConstraint("network_id", name=op.f("uq_auto_allocated_topology_network_id")),
    )


def downgrade() -> None:
    op.drop_table("auto_allocated_topology")
