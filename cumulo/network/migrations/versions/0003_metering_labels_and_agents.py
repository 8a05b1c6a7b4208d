"""metering labels and their rules; the agents that report to the server

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 21:41:56.551492
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_type", sa.String(length=255), nullable=False),
        sa.Column("binary", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("availability_zone", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("configurations", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_timestamp", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent")),
        sa.UniqueConstraint("agent_type", "host", name=op.f("uq_agent_agent_type")),
    )
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_host"), ["host"], unique=False)

    op.create_table(
        "metering_label",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metering_label")),
    )
    with op.batch_alter_table("metering_label", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_metering_label_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "metering_label_rule",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("metering_label_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("remote_ip_prefix", sa.String(length=64), nullable=True),
        sa.Column("source_ip_prefix", sa.String(length=64), nullable=True),
        sa.Column("destination_ip_prefix", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["metering_label_id"],
            ["metering_label.id"],
            name=op.f("fk_metering_label_rule_metering_label_id_metering_label"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metering_label_rule")),
    )
    with op.batch_alter_table("metering_label_rule", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_metering_label_rule_metering_label_id"),
            ["metering_label_id"],
            unique=False,
        )


def downgrade() -> None:
    # Tables take their indexes with them (MariaDB refuses to drop an index a foreign
    # key needs before its table).
    op.drop_table("metering_label_rule")
    op.drop_table("metering_label")
    op.drop_table("agent")
