"""rbac policies: who else may use a network, subnet pool or security group

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000

Shared networks and subnet pools get a `*` access_as_shared entry and external
networks a `*` access_as_external entry, as Neutron made for them when it added RBAC.
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_policy = sa.table(
    "rbac_policy",
    sa.column("id", sa.String),
    sa.column("project_id", sa.String),
    sa.column("object_type", sa.String),
    sa.column("object_id", sa.String),
    sa.column("action", sa.String),
    sa.column("target_project", sa.String),
)


def upgrade() -> None:
    op.create_table(
        "rbac_policy",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_project", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rbac_policy")),
        sa.UniqueConstraint(
            "object_type",
            "object_id",
            "action",
            "target_project",
            name=op.f("uq_rbac_policy_object_type"),
        ),
    )
    with op.batch_alter_table("rbac_policy", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rbac_policy_object_id"), ["object_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rbac_policy_project_id"), ["project_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_rbac_policy_target_project"), ["target_project"], unique=False
        )

    bind = op.get_bind()
    network = sa.table(
        "network",
        sa.column("id", sa.String),
        sa.column("project_id", sa.String),
        sa.column("shared", sa.Boolean),
        sa.column("external", sa.Boolean),
    )
    pool = sa.table(
        "subnetpool",
        sa.column("id", sa.String),
        sa.column("project_id", sa.String),
        sa.column("shared", sa.Boolean),
    )
    rows = []
    for object_type, table, flag, action in (
        ("network", network, network.c.shared, "access_as_shared"),
        ("network", network, network.c.external, "access_as_external"),
        ("subnetpool", pool, pool.c.shared, "access_as_shared"),
    ):
        for object_id, project_id in bind.execute(
            sa.select(table.c.id, table.c.project_id).where(flag == sa.true())
        ):
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "project_id": project_id,
                    "object_type": object_type,
                    "object_id": object_id,
                    "action": action,
                    "target_project": "*",
                }
            )
    if rows:
        op.bulk_insert(_policy, rows)


def downgrade() -> None:
    op.drop_table("rbac_policy")
