"""the segment a network holds, unique (one flat network per physical network, one VLAN
id per physical network): cumulo.network.segments

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segment_key", sa.String(length=128), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_network_segment_key"), ["segment_key"])
    # Networks made before: the flat ones hold their physical network, VLANs their id
    # (the first of any duplicates keeps it; the others were never usable side by side).
    network = sa.table(
        "network",
        sa.column("id", sa.String),
        sa.column("network_type", sa.String),
        sa.column("physical_network", sa.String),
        sa.column("segmentation_id", sa.Integer),
        sa.column("segment_key", sa.String),
        sa.column("created_at", sa.DateTime),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            network.c.id,
            network.c.network_type,
            network.c.physical_network,
            network.c.segmentation_id,
        ).order_by(network.c.created_at)
    ).all()
    seen: set[str] = set()
    for row in rows:
        if row.network_type == "flat" and row.physical_network:
            key = f"flat:{row.physical_network}"
        elif row.network_type == "vlan" and row.physical_network and row.segmentation_id:
            key = f"vlan:{row.physical_network}:{row.segmentation_id}"
        else:
            continue
        if key in seen:
            continue
        seen.add(key)
        conn.execute(network.update().where(network.c.id == row.id).values(segment_key=key))


def downgrade() -> None:
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_network_segment_key"), type_="unique")
        batch_op.drop_column("segment_key")
