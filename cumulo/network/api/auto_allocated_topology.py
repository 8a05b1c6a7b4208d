"""/v2.0/auto-allocated-topology/{project_id} (api-ref: Auto Allocated Topologies;
Neutron's auto-allocated-topology extension, "Get Me A Network").

The first GET for a project builds its topology: a network `auto_allocated_network`
with a subnet `auto_allocated_subnet_v<N>` from each default subnet pool (IPv4, IPv6),
and a router `auto_allocated_router` with its gateway on the default external network
(`router:external` and `is_default`) and an interface on each subnet. It is all made in
one transaction with the project's row (one per project), so two concurrent first calls
make one topology and nobody sees it half-built. `?fields=dry-run` only checks that it
could be made. DELETE takes it down again.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.network import ipam, l3_ha
from cumulo.network.agents import DHCP_AGENT, L3_AGENT, schedule
from cumulo.network.api.common import caller, json, no_content, service_of
from cumulo.network.core import NetworkService, new_id
from cumulo.network.errors import (
    AutoAllocationFailure,
    DefaultExternalNetworkExists,
    HTTPNotFound,
    NetworkInUse,
    NotAuthorized,
    RouterInterfaceInUseByFloatingIP,
    RouterInUse,
)
from cumulo.network.models import (
    AutoAllocatedTopology,
    FloatingIp,
    IpAllocation,
    Network,
    Port,
    Router,
    Subnet,
    SubnetPool,
    Tag,
)
from cumulo.network.ports import (
    DHCP,
    ROUTER_GATEWAY,
    ROUTER_INTERFACES,
    delete_port_row,
    fixed_ips_of,
    interface_owner,
    new_port,
    sync_dhcp_port,
    write_retrying,
)

DRY_RUN = "dry-run"


# -- the default external network and subnet pools ----------------------------------------


async def check_default_external(session: AsyncSession, network_id: str) -> None:
    """Neutron keeps one default external network: making another one default is 409."""
    other = await session.scalar(
        select(Network.id)
        .where(Network.external, Network.is_default, Network.id != network_id)
        .limit(1)
    )
    if other:
        raise DefaultExternalNetworkExists(f"A default external network already exists: {other}.")


async def _default_external_network(session: AsyncSession) -> Network:
    net = await session.scalar(
        select(Network)
        .where(Network.external, Network.is_default)
        .order_by(Network.created_at)
        .limit(1)
    )
    if net is None:
        raise AutoAllocationFailure("Deployment error: No default router:external network.")
    return net


async def _default_pools(session: AsyncSession) -> list[SubnetPool]:
    pools = []
    for version in (4, 6):
        pool = await session.scalar(
            select(SubnetPool)
            .where(SubnetPool.is_default, SubnetPool.ip_version == version)
            .order_by(SubnetPool.created_at)
            .limit(1)
        )
        if pool is not None:
            pools.append(pool)
    return pools


async def _check_requirements(session: AsyncSession) -> None:
    await _default_external_network(session)
    if not await _default_pools(session):
        raise AutoAllocationFailure("Deployment error: No default subnetpools defined.")


# -- building and removing a topology ------------------------------------------------------


async def _provision_network(
    service: NetworkService, session: AsyncSession, project_id: str
) -> tuple[Network, list[Subnet]]:
    """The project's network and a subnet from each default pool (as Neutron's plugin
    calls make them: no quota or policy checks of the caller's)."""
    net = await service.add_tenant_network(session, project_id, "auto_allocated_network")
    subnets = []
    for pool in await _default_pools(session):
        used = list(
            await session.scalars(select(Subnet.cidr).where(Subnet.subnetpool_id == pool.id))
        )
        cidr = ipam.allocate_prefix(pool.prefixes, used, pool.default_prefixlen)
        if cidr is None:
            raise AutoAllocationFailure(
                "Deployment error: Unable to provide tenant private network."
            )
        network = ipaddress.ip_network(cidr)
        gateway = ipam.default_gateway(network)
        subnet = Subnet(
            id=new_id(),
            project_id=project_id,
            network_id=net.id,
            subnetpool_id=pool.id,
            name=f"auto_allocated_subnet_v{pool.ip_version}",
            ip_version=pool.ip_version,
            cidr=cidr,
            gateway_ip=gateway,
            enable_dhcp=True,
            allocation_pools=ipam.default_pools(network, gateway),
            host_routes=[],
            dns_nameservers=[],
        )
        session.add(subnet)
        subnets.append(subnet)
    await session.flush()
    await sync_dhcp_port(session, net)
    if any(s.ip_version == 4 for s in subnets):
        await schedule(session, DHCP_AGENT, net.id)
    return net, subnets


async def _provision_router(
    service: NetworkService,
    session: AsyncSession,
    project_id: str,
    external: Network,
    net: Network,
    subnets: list[Subnet],
) -> Router:
    """The router: its gateway on the default external network, an interface per subnet;
    distributed or HA when the cloud's routers are by default (`router_distributed`, `l3_ha`)."""
    router = Router(id=new_id(), project_id=project_id, name="auto_allocated_router", routes=[])
    router.distributed = service.config.network.router_distributed
    await l3_ha.apply_default(session, service, router)
    session.add(router)
    await session.flush()
    await schedule(session, L3_AGENT, router.id, service.config.network.max_l3_agents_per_router)
    gateway = await new_port(
        session,
        external,
        project_id="",
        device_owner=ROUTER_GATEWAY,
        device_id=router.id,
        status="ACTIVE",
        port_security_enabled=False,
    )
    if not (await fixed_ips_of(session, [gateway.id]))[gateway.id]:
        # Neutron's router errors (BadRequest) become this.
        raise AutoAllocationFailure("Deployment error: Unable to provide external connectivity.")
    router.gw_port_id = gateway.id
    for subnet in subnets:
        await new_port(
            session,
            net,
            project_id=project_id,
            fixed_ips=[{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
            device_owner=interface_owner(router),
            device_id=router.id,
            status="ACTIVE",
            port_security_enabled=False,
        )
    return router


async def _topology_network(service: NetworkService, project_id: str) -> tuple[str, bool]:
    """The project's topology network id, built when missing; and whether it was built."""

    async def work(session: AsyncSession) -> tuple[str, bool]:
        # Read again inside the write: a concurrent first call may have just made it.
        row = await session.get(AutoAllocatedTopology, project_id)
        if row is not None:
            return row.network_id, False
        external = await _default_external_network(session)
        net, subnets = await _provision_network(service, session, project_id)
        if not subnets:
            raise AutoAllocationFailure(
                "Deployment error: Unable to provide tenant private network."
            )
        router = await _provision_router(service, session, project_id, external, net, subnets)
        session.add(
            AutoAllocatedTopology(project_id=project_id, network_id=net.id, router_id=router.id)
        )
        await session.flush()
        return net.id, True

    async with service.db.read() as session:
        row = await session.get(AutoAllocatedTopology, project_id)
        if row is not None:
            return row.network_id, False
    return await write_retrying(service.db, work)


async def _remove_topology(service: NetworkService, project_id: str) -> bool:
    """Remove the router's interfaces, the router and the network (Neutron's cleanup),
    checked first and done in one transaction: what still uses them keeps it all."""

    async def work(session: AsyncSession) -> bool:
        row = await session.get(AutoAllocatedTopology, project_id)
        if row is None:
            return False
        network_id, router_id = row.network_id, row.router_id
        ports = list(await session.scalars(select(Port).where(Port.network_id == network_id)))
        router = await session.get(Router, router_id) if router_id else None
        if router is not None:
            fip = await session.scalar(
                select(IpAllocation.subnet_id)
                .join(FloatingIp, FloatingIp.port_id == IpAllocation.port_id)
                .where(FloatingIp.router_id == router.id, IpAllocation.network_id == network_id)
                .limit(1)
            )
            if fip:
                raise RouterInterfaceInUseByFloatingIP(
                    f"Router interface for subnet {fip} on router {router.id} cannot be "
                    "deleted, as it is required by one or more floating IPs."
                )
            elsewhere = select(Port.id).where(
                Port.device_id == router.id,
                Port.device_owner.in_(ROUTER_INTERFACES),
                Port.network_id != network_id,
            )
            if await session.scalar(elsewhere.limit(1)):
                raise RouterInUse(f"Router {router.id} still has ports")
        in_use = [
            p
            for p in ports
            if p.device_owner != DHCP and not (router is not None and p.device_id == router.id)
        ]
        if in_use:
            raise NetworkInUse(
                f"Unable to complete operation on network {network_id}. There are one or "
                "more ports still in use on the network."
            )
        for port in ports:
            await delete_port_row(session, port)
        if router is not None:
            gateway = await session.get(Port, router.gw_port_id) if router.gw_port_id else None
            router.gw_port_id = None
            await session.flush()
            if gateway is not None:
                await delete_port_row(session, gateway)
            await session.execute(delete(Tag).where(Tag.resource_id == router.id))
            await l3_ha.delete_router_row(session, router)
        # (imported here: the networks API imports this module for the default network)
        from cumulo.network.api.networks import delete_network_rows

        await session.delete(row)
        await session.flush()
        await delete_network_rows(session, network_id)
        return True

    return await write_retrying(service.db, work)


# -- the API ----------------------------------------------------------------------------


def _project(service: NetworkService, ctx: RequestContext, request: Request, rule: str) -> str:
    """The project the call is about: the caller's own unless an admin names another."""
    project_id = request.path_params["project_id"]
    if project_id == "None":  # clients that had no project to send mean the caller's
        project_id = ctx.project_id or ""
    if not service.is_admin(ctx) and project_id != ctx.project_id:
        raise NotAuthorized("Not authorized.")
    if not service.policy.check(rule, ctx, {"project_id": project_id}):
        # Neutron hides what policy does not let the caller see.
        raise HTTPNotFound("The resource could not be found.")
    return project_id


def _body(network_id: str, project_id: str) -> dict[str, Any]:
    topology = {"id": network_id, "tenant_id": project_id, "project_id": project_id}
    return {"auto_allocated_topology": topology}


async def show_topology(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    project_id = _project(service, ctx, request, "network:get_auto_allocated_topology")
    fields = [f for f in request.query_params.getlist("fields") if f]
    if DRY_RUN in fields:
        async with service.db.read() as session:
            await _check_requirements(session)
        return json(_body("dry-run=pass", project_id))
    if fields:
        raise BadRequest("Bad auto_allocate request: Unrecognized field.")
    network_id, built = await _topology_network(service, project_id)
    if built:
        await service.changed()
    return json(_body(network_id, project_id))


async def delete_topology(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    project_id = _project(service, ctx, request, "network:delete_auto_allocated_topology")
    async with service.db.read() as session:
        missing = await session.get(AutoAllocatedTopology, project_id) is None
        if missing:
            # Neutron's DELETE shows the topology first, and that fails the same way.
            await _check_requirements(session)
    if await _remove_topology(service, project_id):
        await service.changed()
    return no_content()


routes = [
    Route("/v2.0/auto-allocated-topology/{project_id}", show_topology, methods=["GET"]),
    Route("/v2.0/auto-allocated-topology/{project_id}", delete_topology, methods=["DELETE"]),
]
