"""application credential access rules

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_rule",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=225), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_access_rule_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_rule")),
        sa.UniqueConstraint(
            "user_id", "service", "path", "method", name=op.f("uq_access_rule_user_id")
        ),
    )
    op.create_index(op.f("ix_access_rule_user_id"), "access_rule", ["user_id"], unique=False)
    with op.batch_alter_table("application_credential", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("access_rule_ids", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("application_credential", schema=None) as batch_op:
        batch_op.drop_column("access_rule_ids")
    op.drop_table("access_rule")
