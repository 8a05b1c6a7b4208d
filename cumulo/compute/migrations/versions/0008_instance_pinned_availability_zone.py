"""instances keep the zone they are pinned to apart from the zone of their host (Nova's
request spec availability_zone and instance.availability_zone; 2.104 updates the pin)

Until now `availability_zone` held the pin and the zone shown was derived from it. The
pin moves to its own column; `availability_zone` becomes the zone of the instance's host.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


_instance = sa.table(
    "instance",
    sa.column("host", sa.String),
    sa.column("availability_zone", sa.String),
    sa.column("pinned_availability_zone", sa.String),
)
_service = sa.table(
    "service",
    sa.column("host", sa.String),
    sa.column("binary", sa.String),
    sa.column("availability_zone", sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pinned_availability_zone", sa.String(255), nullable=True))
    i, svc = _instance, _service
    op.execute(i.update().values(pinned_availability_zone=i.c.availability_zone))
    host_service = (svc.c.host == i.c.host) & (svc.c.binary == "cumulo-compute")
    op.execute(
        i.update()
        .where(i.c.host.is_not(None), sa.exists().where(host_service))
        .values(
            availability_zone=sa.select(svc.c.availability_zone)
            .where(host_service)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    op.execute(_instance.update().values(availability_zone=_instance.c.pinned_availability_zone))
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("pinned_availability_zone")
