"""HA routers (Neutron's l3-ha extension): the router's `ha` flag and VRRP id, each L3
agent's HA state of a router, and each project's HA network

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("router", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ha", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("ha_vr_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_router_project_id"), ["project_id", "ha_vr_id"]
        )
    with op.batch_alter_table("router_l3_agent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ha_state", sa.String(length=16), nullable=True))
    op.create_table(
        "ha_router_network",
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["network.id"],
            name=op.f("fk_ha_router_network_network_id_network"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_ha_router_network")),
        sa.UniqueConstraint("network_id", name=op.f("uq_ha_router_network_network_id")),
    )


def downgrade() -> None:
    op.drop_table("ha_router_network")
    with op.batch_alter_table("router_l3_agent", schema=None) as batch_op:
        batch_op.drop_column("ha_state")
    with op.batch_alter_table("router", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_router_project_id"), type_="unique")
        batch_op.drop_column("ha_vr_id")
        batch_op.drop_column("ha")
