"""block device mappings get a uuid (Nova's bdm_uuid, shown from 2.89); compute nodes
keep the capability traits their host reports (COMPUTE_RESCUE_BFV, 2.87)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 21:30:00
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("block_device_mapping", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uuid", sa.String(length=36), nullable=True))
    # Mappings made before this revision get theirs now.
    table = sa.table("block_device_mapping", sa.column("id", sa.Integer), sa.column("uuid"))
    connection = op.get_bind()
    for (row_id,) in connection.execute(sa.select(table.c.id)).all():
        connection.execute(
            table.update().where(table.c.id == row_id).values(uuid=str(uuid.uuid4()))
        )
    with op.batch_alter_table("block_device_mapping", schema=None) as batch_op:
        batch_op.alter_column("uuid", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_block_device_mapping_uuid"), ["uuid"])
    with op.batch_alter_table("compute_node", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compute_node", schema=None) as batch_op:
        batch_op.drop_column("traits")
    with op.batch_alter_table("block_device_mapping", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_block_device_mapping_uuid"), type_="unique")
        batch_op.drop_column("uuid")
