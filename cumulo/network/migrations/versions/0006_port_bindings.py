"""ports' inactive bindings to other hosts (Neutron's binding-extended): one row per
(port, host), the active binding staying on the port

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "port_binding",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("vnic_type", sa.String(length=32), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"],
            ["port.id"],
            name=op.f("fk_port_binding_port_id_port"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("port_id", "host", name=op.f("pk_port_binding")),
    )


def downgrade() -> None:
    op.drop_table("port_binding")
