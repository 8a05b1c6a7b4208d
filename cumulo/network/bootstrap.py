"""First-run content of the Network service, as DevStack users expect it.

An external network `public` (subnet from [network] public_cidr, no DHCP), and
for the demo project a `private` network and subnet, a router `router1` with its
gateway on `public` and an interface on `private-subnet`, and the default
security group. `public` is the default external network and, unless one exists, a
shared default IPv4 subnet pool is made: what auto-allocated topologies need.
Idempotent: what exists (by name and project) is left alone.
"""

from __future__ import annotations

import ipaddress
import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.identity.core import DEFAULT_DOMAIN_ID, Identity
from cumulo.identity.models import Project
from cumulo.network import ipam, l3_ha, rbac
from cumulo.network.agents import DHCP_AGENT, L3_AGENT, schedule
from cumulo.network.core import ACCESS_EXTERNAL, ACCESS_SHARED, NetworkService, new_id
from cumulo.network.errors import FlatNetworkInUse
from cumulo.network.models import Network, Router, Subnet, SubnetPool
from cumulo.network.ports import ROUTER_GATEWAY, interface_owner, new_port, sync_dhcp_port
from cumulo.network.segments import Segments


async def project_ids(identity: Identity, names: tuple[str, ...]) -> dict[str, str]:
    async with identity.read() as session:
        rows = await session.scalars(
            select(Project).where(Project.name.in_(names), Project.domain_id == DEFAULT_DOMAIN_ID)
        )
        return {p.name: p.id for p in rows}


LOG = logging.getLogger(__name__)


async def _network(
    s: AsyncSession, segments: Segments, project_id: str, name: str, **attrs
) -> Network:
    net = await s.scalar(
        select(Network).where(Network.name == name, Network.project_id == project_id)
    )
    if net is None:
        attrs.setdefault("network_type", segments.tenant_type())
        net = Network(id=new_id(), project_id=project_id, name=name, **attrs)
        try:
            await segments.claim(s, net)
        except FlatNetworkInUse:
            # `public` deleted and its physical network given to another flat network:
            # made again, but local to this host (the physical network is taken).
            LOG.warning("network: %s is made local: %s", name, "physical network in use")
            net.network_type, net.physical_network, net.segment_key = "local", None, None
        s.add(net)
        await s.flush()
        if net.external:
            # router:external is a `*` access_as_external policy, as Neutron makes one.
            await rbac.set_wildcard(s, net, "network", ACCESS_EXTERNAL, True)
    return net


async def _subnet(
    s: AsyncSession, net: Network, name: str, cidr: str, gateway: str, **attrs
) -> Subnet:
    subnet = await s.scalar(select(Subnet).where(Subnet.network_id == net.id, Subnet.name == name))
    if subnet is None:
        network = ipaddress.ip_network(cidr)
        subnet = Subnet(
            id=new_id(),
            project_id=net.project_id,
            network_id=net.id,
            name=name,
            ip_version=network.version,
            cidr=str(network),
            gateway_ip=gateway,
            allocation_pools=ipam.default_pools(network, gateway),
            host_routes=[],
            **attrs,
        )
        s.add(subnet)
        await s.flush()
        await sync_dhcp_port(s, net)
    return subnet


async def _default_subnet_pool(s: AsyncSession, project_id: str, prefix: str, length: int) -> None:
    """A shared default IPv4 pool (DevStack's), unless the cloud already has one."""
    if not prefix or await s.scalar(
        select(SubnetPool.id).where(SubnetPool.is_default, SubnetPool.ip_version == 4).limit(1)
    ):
        return
    network = ipaddress.ip_network(prefix)
    pool = SubnetPool(
        id=new_id(),
        project_id=project_id,
        name="shared-default-subnetpool-v4",
        ip_version=4,
        prefixes=[str(network)],
        default_prefixlen=length,
        min_prefixlen=network.prefixlen,
        max_prefixlen=32,
        shared=False,
        is_default=True,
    )
    s.add(pool)
    await s.flush()
    await rbac.set_wildcard(s, pool, "subnetpool", ACCESS_SHARED, True)
    pool.revision_number = 0


async def bootstrap_network(service: NetworkService, identity: Identity) -> None:
    cfg = service.config.network
    projects = await project_ids(identity, ("admin", "demo"))
    async with service.db.write() as s:
        public = await _network(
            s,
            service.segments,
            projects["admin"],
            "public",
            external=True,
            is_default=True,
            mtu=cfg.mtu,
            network_type="flat",
            physical_network="public",
        )
        await _subnet(
            s,
            public,
            "public-subnet",
            cfg.public_cidr,
            cfg.public_gateway,
            enable_dhcp=False,
            dns_nameservers=[],
        )
        await _default_subnet_pool(
            s, projects["admin"], cfg.default_subnet_pool, cfg.default_subnet_pool_prefixlen
        )
        demo = projects["demo"]
        private = await _network(s, service.segments, demo, "private", mtu=cfg.mtu)
        private_net = ipaddress.ip_network(cfg.private_cidr)
        subnet = await _subnet(
            s,
            private,
            "private-subnet",
            str(private_net),
            ipam.default_gateway(private_net) or "",
            enable_dhcp=True,
            dns_nameservers=list(cfg.dns_nameservers),
        )
        # Served by the agents registered so far (one that registers later takes them).
        await schedule(s, DHCP_AGENT, private.id)
        router = await s.scalar(
            select(Router).where(Router.name == "router1", Router.project_id == demo)
        )
        if router is None:
            router = Router(id=new_id(), project_id=demo, name="router1", routes=[])
            router.distributed = cfg.router_distributed  # as DevStack's, the cloud's default
            await l3_ha.apply_default(s, service, router)
            s.add(router)
            await s.flush()
            await schedule(s, L3_AGENT, router.id, cfg.max_l3_agents_per_router)
            gw = await new_port(
                s,
                public,
                project_id="",
                device_owner=ROUTER_GATEWAY,
                device_id=router.id,
                status="ACTIVE",
                port_security_enabled=False,
            )
            router.gw_port_id = gw.id
            await new_port(
                s,
                private,
                project_id=demo,
                fixed_ips=[{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
                device_owner=interface_owner(router),
                device_id=router.id,
                status="ACTIVE",
                port_security_enabled=False,
            )
        for project_id in projects.values():
            await service.default_security_group(s, project_id)
        await s.flush()
