"""instances keep the scheduler hints they were created with (Nova's request spec
scheduler_hints, shown from microversion 2.100)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 21:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheduler_hints", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("scheduler_hints")
