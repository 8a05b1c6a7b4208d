"""metadata definitions (metadefs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 22:00:00
"""

import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The resource types of this cloud's services that metadata definitions may apply to.
RESOURCE_TYPES = (
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Aggregate",
    "OS::Nova::Server",
)


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "metadef_namespace",
        sa.Column("namespace", sa.String(length=80), nullable=False),
        sa.Column("display_name", sa.String(length=80), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("visibility", sa.String(length=32), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_metadef_namespace")),
    )
    types = op.create_table(
        "metadef_resource_type",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_metadef_resource_type")),
    )
    op.create_table(
        "metadef_association",
        sa.Column("namespace", sa.String(length=80), nullable=False),
        sa.Column("resource_type", sa.String(length=80), nullable=False),
        sa.Column("prefix", sa.String(length=80), nullable=True),
        sa.Column("properties_target", sa.String(length=80), nullable=True),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["namespace"],
            ["metadef_namespace.namespace"],
            name=op.f("fk_metadef_association_namespace_metadef_namespace"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["resource_type"],
            ["metadef_resource_type.name"],
            name=op.f("fk_metadef_association_resource_type_metadef_resource_type"),
        ),
        sa.PrimaryKeyConstraint("namespace", "resource_type", name=op.f("pk_metadef_association")),
    )
    op.create_table(
        "metadef_item",
        sa.Column("namespace", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["namespace"],
            ["metadef_namespace.namespace"],
            name=op.f("fk_metadef_item_namespace_metadef_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("namespace", "kind", "name", name=op.f("pk_metadef_item")),
    )
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    op.bulk_insert(
        types,
        [
            {"name": n, "protected": True, "created_at": now, "updated_at": now}
            for n in RESOURCE_TYPES
        ],
    )


def downgrade() -> None:
    for table in (
        "metadef_item",
        "metadef_association",
        "metadef_resource_type",
        "metadef_namespace",
    ):
        op.drop_table(table)
