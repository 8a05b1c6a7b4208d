"""initial network schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 18:40:15.476471
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "network",
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("external", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), nullable=False),
        sa.Column("network_type", sa.String(length=32), nullable=False),
        sa.Column("physical_network", sa.String(length=64), nullable=True),
        sa.Column("segmentation_id", sa.Integer(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network")),
    )
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_network_external"), ["external"], unique=False)
        batch_op.create_index(batch_op.f("ix_network_project_id"), ["project_id"], unique=False)

    op.create_table(
        "quota",
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("limit", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "resource", name=op.f("pk_quota")),
    )
    op.create_table(
        "security_group",
        sa.Column("stateful", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_group")),
    )
    with op.batch_alter_table("security_group", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_group_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "subnetpool",
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("prefixes", sa.JSON(), nullable=False),
        sa.Column("default_prefixlen", sa.Integer(), nullable=False),
        sa.Column("min_prefixlen", sa.Integer(), nullable=False),
        sa.Column("max_prefixlen", sa.Integer(), nullable=False),
        sa.Column("default_quota", sa.Integer(), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subnetpool")),
    )
    with op.batch_alter_table("subnetpool", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subnetpool_project_id"), ["project_id"], unique=False)

    op.create_table(
        "tag",
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "tag", name=op.f("pk_tag")),
    )
    with op.batch_alter_table("tag", schema=None) as batch_op:
        batch_op.create_index("ix_tag_tag", ["tag"], unique=False)

    op.create_table(
        "default_security_group",
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["security_group_id"],
            ["security_group.id"],
            name=op.f("fk_default_security_group_security_group_id_security_group"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_default_security_group")),
    )
    op.create_table(
        "port",
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("mac_address", sa.String(length=32), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("device_owner", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("vnic_type", sa.String(length=32), nullable=False),
        sa.Column("binding_profile", sa.JSON(), nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), nullable=False),
        sa.Column("allowed_address_pairs", sa.JSON(), nullable=False),
        sa.Column("extra_dhcp_opts", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"], ["network.id"], name=op.f("fk_port_network_id_network")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_port")),
        sa.UniqueConstraint("network_id", "mac_address", name=op.f("uq_port_network_id")),
    )
    with op.batch_alter_table("port", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_port_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_port_device_owner"), ["device_owner"], unique=False)
        batch_op.create_index(batch_op.f("ix_port_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_port_project_id"), ["project_id"], unique=False)

    op.create_table(
        "security_group_rule",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.Column("remote_group_id", sa.String(length=36), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("ethertype", sa.String(length=8), nullable=False),
        sa.Column("protocol", sa.String(length=40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["remote_group_id"],
            ["security_group.id"],
            name=op.f("fk_security_group_rule_remote_group_id_security_group"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["security_group_id"],
            ["security_group.id"],
            name=op.f("fk_security_group_rule_security_group_id_security_group"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_group_rule")),
    )
    with op.batch_alter_table("security_group_rule", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_group_rule_remote_group_id"), ["remote_group_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_security_group_rule_security_group_id"),
            ["security_group_id"],
            unique=False,
        )

    op.create_table(
        "subnet",
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("subnetpool_id", sa.String(length=36), nullable=True),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=64), nullable=False),
        sa.Column("gateway_ip", sa.String(length=64), nullable=True),
        sa.Column("enable_dhcp", sa.Boolean(), nullable=False),
        sa.Column("ipv6_ra_mode", sa.String(length=32), nullable=True),
        sa.Column("ipv6_address_mode", sa.String(length=32), nullable=True),
        sa.Column("allocation_pools", sa.JSON(), nullable=False),
        sa.Column("host_routes", sa.JSON(), nullable=False),
        sa.Column("dns_nameservers", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"], ["network.id"], name=op.f("fk_subnet_network_id_network")
        ),
        sa.ForeignKeyConstraint(
            ["subnetpool_id"], ["subnetpool.id"], name=op.f("fk_subnet_subnetpool_id_subnetpool")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subnet")),
    )
    with op.batch_alter_table("subnet", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subnet_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_subnet_project_id"), ["project_id"], unique=False)

    op.create_table(
        "ip_allocation",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("subnet_id", sa.String(length=36), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"], ["port.id"], name=op.f("fk_ip_allocation_port_id_port"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"], ["subnet.id"], name=op.f("fk_ip_allocation_subnet_id_subnet")
        ),
        sa.PrimaryKeyConstraint("port_id", "ip_address", name=op.f("pk_ip_allocation")),
        sa.UniqueConstraint("subnet_id", "ip_address", name=op.f("uq_ip_allocation_subnet_id")),
    )
    with op.batch_alter_table("ip_allocation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ip_allocation_network_id"), ["network_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_ip_allocation_subnet_id"), ["subnet_id"], unique=False)

    op.create_table(
        "port_security_group",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"],
            ["port.id"],
            name=op.f("fk_port_security_group_port_id_port"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["security_group_id"],
            ["security_group.id"],
            name=op.f("fk_port_security_group_security_group_id_security_group"),
        ),
        sa.PrimaryKeyConstraint(
            "port_id", "security_group_id", name=op.f("pk_port_security_group")
        ),
    )
    with op.batch_alter_table("port_security_group", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_port_security_group_security_group_id"),
            ["security_group_id"],
            unique=False,
        )

    op.create_table(
        "router",
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("gw_port_id", sa.String(length=36), nullable=True),
        sa.Column("enable_snat", sa.Boolean(), nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gw_port_id"], ["port.id"], name=op.f("fk_router_gw_port_id_port"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router")),
    )
    with op.batch_alter_table("router", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_router_project_id"), ["project_id"], unique=False)

    op.create_table(
        "floatingip",
        sa.Column("floating_network_id", sa.String(length=36), nullable=False),
        sa.Column("floating_port_id", sa.String(length=36), nullable=False),
        sa.Column("floating_ip_address", sa.String(length=64), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=True),
        sa.Column("fixed_ip_address", sa.String(length=64), nullable=True),
        sa.Column("router_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["floating_network_id"],
            ["network.id"],
            name=op.f("fk_floatingip_floating_network_id_network"),
        ),
        sa.ForeignKeyConstraint(
            ["floating_port_id"], ["port.id"], name=op.f("fk_floatingip_floating_port_id_port")
        ),
        sa.ForeignKeyConstraint(["port_id"], ["port.id"], name=op.f("fk_floatingip_port_id_port")),
        sa.ForeignKeyConstraint(
            ["router_id"], ["router.id"], name=op.f("fk_floatingip_router_id_router")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_floatingip")),
    )
    with op.batch_alter_table("floatingip", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_floatingip_floating_network_id"), ["floating_network_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_floatingip_port_id"), ["port_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_floatingip_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_floatingip_router_id"), ["router_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("floatingip", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_floatingip_router_id"))
        batch_op.drop_index(batch_op.f("ix_floatingip_project_id"))
        batch_op.drop_index(batch_op.f("ix_floatingip_port_id"))
        batch_op.drop_index(batch_op.f("ix_floatingip_floating_network_id"))

    op.drop_table("floatingip")
    with op.batch_alter_table("router", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_router_project_id"))

    op.drop_table("router")
    with op.batch_alter_table("port_security_group", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_port_security_group_security_group_id"))

    op.drop_table("port_security_group")
    with op.batch_alter_table("ip_allocation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ip_allocation_subnet_id"))
        batch_op.drop_index(batch_op.f("ix_ip_allocation_network_id"))

    op.drop_table("ip_allocation")
    with op.batch_alter_table("subnet", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subnet_project_id"))
        batch_op.drop_index(batch_op.f("ix_subnet_network_id"))

    op.drop_table("subnet")
    with op.batch_alter_table("security_group_rule", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_group_rule_security_group_id"))
        batch_op.drop_index(batch_op.f("ix_security_group_rule_remote_group_id"))

    op.drop_table("security_group_rule")
    with op.batch_alter_table("port", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_port_project_id"))
        batch_op.drop_index(batch_op.f("ix_port_network_id"))
        batch_op.drop_index(batch_op.f("ix_port_device_owner"))
        batch_op.drop_index(batch_op.f("ix_port_device_id"))

    op.drop_table("port")
    op.drop_table("default_security_group")
    with op.batch_alter_table("tag", schema=None) as batch_op:
        batch_op.drop_index("ix_tag_tag")

    op.drop_table("tag")
    with op.batch_alter_table("subnetpool", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subnetpool_project_id"))

    op.drop_table("subnetpool")
    with op.batch_alter_table("security_group", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_security_group_project_id"))

    op.drop_table("security_group")
    op.drop_table("quota")
    with op.batch_alter_table("network", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_network_project_id"))
        batch_op.drop_index(batch_op.f("ix_network_external"))

    op.drop_table("network")
