"""OS-TRUST trusts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trust",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("trustor_user_id", sa.String(length=64), nullable=False),
        sa.Column("trustee_user_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("impersonation", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("remaining_uses", sa.Integer(), nullable=True),
        sa.Column("role_ids", sa.JSON(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trustor_user_id"],
            ["user.id"],
            name=op.f("fk_trust_trustor_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trustee_user_id"],
            ["user.id"],
            name=op.f("fk_trust_trustee_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust")),
    )
    op.create_index(op.f("ix_trust_trustor_user_id"), "trust", ["trustor_user_id"], unique=False)
    op.create_index(op.f("ix_trust_trustee_user_id"), "trust", ["trustee_user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("trust")
