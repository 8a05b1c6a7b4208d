"""Network tables. Plain rows: the rules live in cumulo.network.core and the api modules.

Every resource carries Neutron's standard attributes (project, name, description,
timestamps, revision number). List-valued attributes nobody filters on in SQL
(allocation pools, host routes, extra routes, address pairs) are JSON columns;
what must stay unique under concurrency has its own table with a unique key:
one row per allocated IP (`ip_allocation`, unique on subnet and address).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cumulo.common.db import make_base, utcnow

Base = make_base("network")

ID = String(36)


class Standard:
    """Neutron's standard attributes, shared by every resource table."""

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True, default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)


class Network(Standard, Base):
    __tablename__ = "network"
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    external: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    network_type: Mapped[str] = mapped_column(String(32), default="vxlan")
    physical_network: Mapped[str | None] = mapped_column(String(64))
    segmentation_id: Mapped[int | None] = mapped_column(Integer)
    # The segment this network holds (cumulo.network.segments.segment_key): unique.
    segment_key: Mapped[str | None] = mapped_column(String(128), unique=True)


class SubnetPool(Standard, Base):
    __tablename__ = "subnetpool"
    ip_version: Mapped[int] = mapped_column(Integer)
    prefixes: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_prefixlen: Mapped[int] = mapped_column(Integer)
    min_prefixlen: Mapped[int] = mapped_column(Integer)
    max_prefixlen: Mapped[int] = mapped_column(Integer)
    default_quota: Mapped[int | None] = mapped_column(Integer)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class Subnet(Standard, Base):
    __tablename__ = "subnet"
    network_id: Mapped[str] = mapped_column(ForeignKey("network.id"), index=True)
    subnetpool_id: Mapped[str | None] = mapped_column(ForeignKey("subnetpool.id"))
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64))
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32))
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32))
    allocation_pools: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    host_routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    dns_nameservers: Mapped[list[str]] = mapped_column(JSON, default=list)


class Port(Standard, Base):
    __tablename__ = "port"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)
    network_id: Mapped[str] = mapped_column(ForeignKey("network.id"), index=True)
    mac_address: Mapped[str] = mapped_column(String(32))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="", index=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    vnic_type: Mapped[str] = mapped_column(String(32), default="normal")
    binding_profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    allowed_address_pairs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    extra_dhcp_opts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class PortBinding(Base):
    """A port's binding to a host other than its active one (Neutron's binding-extended:
    the INACTIVE bindings, e.g. a live migration's destination). The active binding is
    the port's own `host`, `vnic_type` and `binding_profile`, so everything that reads
    where a port is wired (the agents' desired state, L2 population) sees only it."""

    __tablename__ = "port_binding"
    port_id: Mapped[str] = mapped_column(
        ForeignKey("port.id", ondelete="CASCADE"), primary_key=True
    )
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    vnic_type: Mapped[str] = mapped_column(String(32), default="normal")
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IpAllocation(Base):
    """One fixed IP of a port. The unique key is what stops two ports sharing an IP."""

    __tablename__ = "ip_allocation"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_address"),)
    port_id: Mapped[str] = mapped_column(
        ForeignKey("port.id", ondelete="CASCADE"), primary_key=True
    )
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnet.id"), index=True)
    network_id: Mapped[str] = mapped_column(String(36), index=True)


class SecurityGroup(Standard, Base):
    __tablename__ = "security_group"
    stateful: Mapped[bool] = mapped_column(Boolean, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class DefaultSecurityGroup(Base):
    """Which group is a project's default: the primary key makes it one per project."""

    __tablename__ = "default_security_group"
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_group.id", ondelete="CASCADE")
    )


class SecurityGroupRule(Base):
    __tablename__ = "security_group_rule"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), default="")
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_group.id", ondelete="CASCADE"), index=True
    )
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_group.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(16))
    ethertype: Mapped[str] = mapped_column(String(8))
    protocol: Mapped[str | None] = mapped_column(String(40))
    port_range_min: Mapped[int | None] = mapped_column(Integer)
    port_range_max: Mapped[int | None] = mapped_column(Integer)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)


class PortSecurityGroup(Base):
    __tablename__ = "port_security_group"
    port_id: Mapped[str] = mapped_column(
        ForeignKey("port.id", ondelete="CASCADE"), primary_key=True
    )
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("security_group.id"), primary_key=True, index=True
    )


class Router(Standard, Base):
    __tablename__ = "router"
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    # The gateway: a port (device_owner network:router_gateway) on an external network.
    gw_port_id: Mapped[str | None] = mapped_column(ForeignKey("port.id", ondelete="SET NULL"))
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # Neutron's dvr extension: routed east-west on every host with ports on its subnets.
    distributed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Neutron's l3-ha extension: run by keepalived on several L3 agents, one of them
    # active; the VRRP router id, unique among the project's HA routers.
    ha: Mapped[bool] = mapped_column(Boolean, default=False)
    ha_vr_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("project_id", "ha_vr_id"),)


class FloatingIp(Standard, Base):
    __tablename__ = "floatingip"
    floating_network_id: Mapped[str] = mapped_column(ForeignKey("network.id"), index=True)
    # The port (device_owner network:floatingip) holding the address on the external net.
    floating_port_id: Mapped[str] = mapped_column(ForeignKey("port.id"))
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    port_id: Mapped[str | None] = mapped_column(ForeignKey("port.id"), index=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64))
    router_id: Mapped[str | None] = mapped_column(ForeignKey("router.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")


class Tag(Base):
    __tablename__ = "tag"
    __table_args__ = (Index("ix_tag_tag", "tag"),)
    resource_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)


class Quota(Base):
    __tablename__ = "quota"
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    limit: Mapped[int] = mapped_column(Integer)


class RbacPolicy(Base):
    """Neutron's RBAC entry: `target_project` (a project id or `*`) may use an object.

    One table for every object type (Neutron keeps one per type); the unique key is
    what answers a duplicate with 409 under concurrency.
    """

    __tablename__ = "rbac_policy"
    __table_args__ = (UniqueConstraint("object_type", "object_id", "action", "target_project"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True, default="")
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(32))
    target_project: Mapped[str] = mapped_column(String(255), index=True)


class MeteringLabel(Base):
    """A metering label (api-ref: Metering labels); admins own them, as in Neutron."""

    __tablename__ = "metering_label"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True, default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(1024), default="")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)


class MeteringLabelRule(Base):
    __tablename__ = "metering_label_rule"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    metering_label_id: Mapped[str] = mapped_column(
        ForeignKey("metering_label.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(16))
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64))
    source_ip_prefix: Mapped[str | None] = mapped_column(String(64))
    destination_ip_prefix: Mapped[str | None] = mapped_column(String(64))


class Agent(Base):
    """A network agent as Neutron lists it: one row per (type, host). cumulo's agent on
    a host plays every type (L2, DHCP, L3, metadata) and heartbeats for each."""

    __tablename__ = "agent"
    __table_args__ = (UniqueConstraint("agent_type", "host"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255), index=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    configurations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_timestamp: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class NetworkDhcpAgent(Base):
    """A DHCP agent serving a network (Neutron's networkdhcpagentbindings)."""

    __tablename__ = "network_dhcp_agent"
    network_id: Mapped[str] = mapped_column(
        ForeignKey("network.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agent.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class RouterL3Agent(Base):
    """An L3 agent hosting a router (Neutron's routerl3agentbindings)."""

    __tablename__ = "router_l3_agent"
    router_id: Mapped[str] = mapped_column(
        ForeignKey("router.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agent.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    # An HA router's state on this agent as its keepalived reports it (Neutron's
    # ha_router_agent_port_bindings.state): active, standby; None for other routers.
    ha_state: Mapped[str | None] = mapped_column(String(16))


class HaRouterNetwork(Base):
    """A project's HA network (Neutron's ha_router_networks): its HA routers' VRRP."""

    __tablename__ = "ha_router_network"
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("network.id", ondelete="CASCADE"), unique=True
    )


class AutoAllocatedTopology(Base):
    """A project's auto-allocated topology (Neutron's auto_allocated_topologies): the
    primary key makes it one per project, so two concurrent first calls make one."""

    __tablename__ = "auto_allocated_topology"
    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("network.id", ondelete="CASCADE"), unique=True
    )
    router_id: Mapped[str | None] = mapped_column(ForeignKey("router.id", ondelete="SET NULL"))


class DvrHostMac(Base):
    """The MAC a host's distributed routing puts on the frames it routes into tunnels
    (Neutron's dvr_host_macs), one per host, unique across the cloud."""

    __tablename__ = "dvr_host_mac"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    mac_address: Mapped[str] = mapped_column(String(32), unique=True)
