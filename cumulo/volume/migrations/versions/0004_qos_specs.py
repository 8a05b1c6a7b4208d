"""QoS specs and their association with volume types

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 22:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qos_specs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("consumer", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qos_specs")),
        sa.UniqueConstraint("name", name=op.f("uq_qos_specs_name")),
    )
    op.create_table(
        "qos_spec_value",
        sa.Column("qos_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["qos_id"], ["qos_specs.id"],
            name=op.f("fk_qos_spec_value_qos_id_qos_specs"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("qos_id", "key", name=op.f("pk_qos_spec_value")),
    )  # fmt: skip
    with op.batch_alter_table("volume_type", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qos_specs_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volume_type", schema=None) as batch_op:
        batch_op.drop_column("qos_specs_id")
    op.drop_table("qos_spec_value")
    op.drop_table("qos_specs")
