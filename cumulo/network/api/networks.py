"""/v2.0/networks (api-ref: Networks; provider and external-net extensions)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.openapi import describes, wrapped
from cumulo.network import rbac
from cumulo.network.api.auto_allocated_topology import check_default_external
from cumulo.network.api.common import (
    apply_standard,
    caller,
    create_bodies,
    created,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    standard,
    tags_of,
    to_bool,
    to_int,
)
from cumulo.network.core import ACCESS_EXTERNAL, ACCESS_SHARED, NetworkService, new_id
from cumulo.network.errors import (
    ExternalNetworkInUse,
    InvalidInput,
    InvalidSharedSetting,
    NetworkInUse,
    NetworkNotFound,
    RbacPolicyInUse,
)
from cumulo.network.models import FloatingIp, IpAllocation, Network, Port, RbacPolicy, Subnet, Tag
from cumulo.network.ports import (
    DHCP,
    ROUTER_GATEWAY,
    delete_port_row,
    touch,
    write_retrying,
)

PROVIDER = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")
CREATE_ATTRS = (
    "name", "description", "admin_state_up", "shared", "router:external", "mtu",
    "port_security_enabled", "is_default", "availability_zone_hints", *PROVIDER,
)  # fmt: skip


def render_network(
    net: Network, subnet_ids: list[str], tags: list[str], admin: bool, shared: bool
) -> dict[str, Any]:
    """`shared`: shared with every project or the caller's (Neutron shows it per caller)."""
    body = {
        **standard(net, tags),
        "admin_state_up": net.admin_state_up,
        "status": net.status,
        "subnets": subnet_ids,
        "shared": shared,
        "router:external": net.external,
        "is_default": net.is_default,
        "mtu": net.mtu,
        "port_security_enabled": net.port_security_enabled,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
    }
    if admin:
        body["provider:network_type"] = net.network_type
        body["provider:physical_network"] = net.physical_network
        body["provider:segmentation_id"] = net.segmentation_id
    return body


async def render_networks(
    service: NetworkService, ctx: RequestContext, nets: list[Network]
) -> list[dict[str, Any]]:
    ids = [n.id for n in nets]
    subnets: dict[str, list[str]] = {i: [] for i in ids}
    async with service.db.read() as session:
        for chunk in range(0, len(ids), 500):
            rows = await session.execute(
                select(Subnet.network_id, Subnet.id)
                .where(Subnet.network_id.in_(ids[chunk : chunk + 500]))
                .order_by(Subnet.created_at)
            )
            for net_id, subnet_id in rows:
                subnets[net_id].append(subnet_id)
        tags = await tags_of(session, ids)
        shared = await rbac.shared_with(session, "network", ids, ctx.project_id)
    admin = service.is_admin(ctx)
    return [render_network(n, subnets[n.id], tags[n.id], admin, n.id in shared) for n in nets]


async def visible_network(service: NetworkService, ctx: RequestContext, network_id: str) -> Network:
    async with service.db.read() as session:
        net = await session.scalar(
            select(Network).where(Network.id == network_id, service.networks_visible(ctx))
        )
    if net is None:
        raise NetworkNotFound(f"Network {network_id} could not be found.")
    return net


def _apply(service: NetworkService, ctx: RequestContext, net: Network, a: dict[str, Any]) -> None:
    """Set the plain attributes; `shared` and `router:external` are policies (_set_access)."""
    apply_standard(net, a)
    if "admin_state_up" in a:
        net.admin_state_up = to_bool("admin_state_up", a["admin_state_up"])
    if "port_security_enabled" in a:
        net.port_security_enabled = to_bool("port_security_enabled", a["port_security_enabled"])
    if "mtu" in a:
        net.mtu = to_int("mtu", a["mtu"], 68, 9000)
    if "shared" in a and to_bool("shared", a["shared"]) != net.shared:
        service.enforce(ctx, "network:set_shared")
    if "router:external" in a and to_bool("router:external", a["router:external"]) != net.external:
        service.enforce(ctx, "network:set_external")
    if "is_default" in a:
        service.enforce(ctx, "network:set_external")
        net.is_default = to_bool("is_default", a["is_default"])
    if any(k in a for k in PROVIDER):
        service.enforce(ctx, "network:set_provider")
        current = (net.network_type, net.physical_network, net.segmentation_id)
        if None not in (net.id, net.network_type):  # an update: ML2 changes no segment
            seg = a.get("provider:segmentation_id", current[2])
            if isinstance(seg, str) and seg.isdecimal():
                seg = int(seg)  # as Neutron converts it
            given = (
                a.get("provider:network_type", current[0]),
                a.get("provider:physical_network", current[1]),
                seg,
            )
            if given != current:
                raise InvalidInput("Plugin does not support updating provider attributes")
            return
        net.network_type, net.physical_network, net.segmentation_id = service.segments.check(a)


async def _set_access(session, net: Network, a: dict[str, Any]) -> None:
    """`shared` is a `*` access_as_shared policy and `router:external` access_as_external
    ones, as in Neutron; taking either away is refused while other projects depend on it."""
    if "shared" in a:
        try:
            await rbac.set_wildcard(session, net, "network", ACCESS_SHARED, a["shared"])
        except RbacPolicyInUse:
            raise InvalidSharedSetting(
                f"Unable to reconfigure sharing settings for network {net.id}. "
                "Multiple tenants are using it."
            ) from None
    if "router:external" in a and a["router:external"]:
        await rbac.set_wildcard(session, net, "network", ACCESS_EXTERNAL, True)
    elif "router:external" in a and net.external:
        gateway = select(Port.id).where(
            Port.network_id == net.id, Port.device_owner == ROUTER_GATEWAY
        )
        if await session.scalar(gateway.limit(1)):
            raise ExternalNetworkInUse(
                f"External network {net.id} cannot be updated to be made non-external, "
                "since it has existing gateway ports."
            )
        await session.execute(
            delete(RbacPolicy).where(
                RbacPolicy.object_type == "network",
                RbacPolicy.object_id == net.id,
                RbacPolicy.action == ACCESS_EXTERNAL,
            )
        )
        await rbac.sync_flags(session, net, "network")


def _access_attrs(a: dict[str, Any]) -> dict[str, bool]:
    return {k: to_bool(k, a[k]) for k in ("shared", "router:external") if k in a}


async def list_networks(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        nets = list(await session.scalars(select(Network).where(service.networks_visible(ctx))))
    return list_response(request, "networks", await render_networks(service, ctx, nets))


@describes(body=wrapped("network", CREATE_ATTRS), resource="network")
async def create_network(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    bodies, bulk = await create_bodies(request, "network", "networks", CREATE_ATTRS)
    plans = [_plan_network(service, ctx, attrs) for attrs in bodies]

    async def work(session):
        return [await plan(session) for plan in plans]

    nets = await write_retrying(service.db, work)
    return created(request, "network", "networks", await render_networks(service, ctx, nets), bulk)


def _plan_network(
    service: NetworkService, ctx: RequestContext, attrs: dict[str, Any]
) -> Callable[[AsyncSession], Awaitable[Network]]:
    """Check what a new network asks for; the returned step writes it in a transaction."""
    project_id = owner_of(service, ctx, attrs)
    service.enforce(ctx, "network:owner", project_id)
    net = Network(
        project_id=project_id,
        mtu=service.config.network.mtu,
        shared=False,
        external=False,
    )
    _apply(service, ctx, net, attrs)
    net.id = new_id()
    if net.network_type is None:  # no provider attributes: a tenant network
        net.network_type = service.segments.tenant_type()
    access = {k: v for k, v in _access_attrs(attrs).items() if v}

    requested = (net.physical_network, net.segmentation_id)

    async def write(session: AsyncSession) -> Network:
        await service.check_quota(session, project_id, "network")
        # (A retried transaction allocates again from what it asked for.)
        net.physical_network, net.segmentation_id = requested
        await service.segments.claim(session, net)
        session.add(net)
        await session.flush()
        await _set_access(session, net, access)
        if net.is_default:
            await check_default_external(session, net.id)
        net.revision_number = 0
        return net

    return write


async def show_network(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    net = await visible_network(service, ctx, request.path_params["network_id"])
    return show(request, "network", (await render_networks(service, ctx, [net]))[0])


@describes(body=wrapped("network", CREATE_ATTRS), resource="network")
async def update_network(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    network_id = request.path_params["network_id"]
    attrs = await resource_body(request, "network", CREATE_ATTRS)
    attrs.pop("project_id", None)
    net = await visible_network(service, ctx, network_id)
    service.enforce(ctx, "network:owner", net.project_id)

    async def work(session):
        row = await session.get(Network, network_id)
        if row is None:
            raise NetworkNotFound(f"Network {network_id} could not be found.")
        _apply(service, ctx, row, attrs)
        await _set_access(session, row, _access_attrs(attrs))
        if "is_default" in attrs and row.is_default:
            await check_default_external(session, row.id)
        touch(row)
        return row

    net = await write_retrying(service.db, work)
    await service.changed()
    return show(request, "network", (await render_networks(service, ctx, [net]))[0])


async def delete_network(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    network_id = request.path_params["network_id"]
    net = await visible_network(service, ctx, network_id)
    service.enforce(ctx, "network:owner", net.project_id)

    async def work(session):
        # Unassociated floating IPs go with their external network, as in Neutron.
        idle = (
            await session.execute(
                select(FloatingIp.id, FloatingIp.floating_port_id).where(
                    FloatingIp.floating_network_id == network_id, FloatingIp.port_id.is_(None)
                )
            )
        ).all()
        idle_ports = {port_id for _, port_id in idle}
        await session.execute(delete(Tag).where(Tag.resource_id.in_([i for i, _ in idle])))
        await session.execute(delete(FloatingIp).where(FloatingIp.id.in_([i for i, _ in idle])))
        ports = []
        for port in await session.scalars(select(Port).where(Port.network_id == network_id)):
            if port.id in idle_ports:
                await delete_port_row(session, port)
            else:
                ports.append(port)
        if any(p.device_owner != DHCP for p in ports):
            raise NetworkInUse(
                f"Unable to complete operation on network {network_id}. There are one or more "
                "ports still in use on the network."
            )
        for port in ports:
            await delete_port_row(session, port)
        await delete_network_rows(session, network_id)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


routes = [
    Route("/v2.0/networks", list_networks, methods=["GET"]),
    Route("/v2.0/networks", create_network, methods=["POST"]),
    Route("/v2.0/networks/{network_id}", show_network, methods=["GET"]),
    Route("/v2.0/networks/{network_id}", update_network, methods=["PUT"]),
    Route("/v2.0/networks/{network_id}", delete_network, methods=["DELETE"]),
]


async def delete_network_rows(session: AsyncSession, network_id: str) -> None:
    """A network whose ports are gone: its subnets, addresses, tags, RBAC policies, and
    itself."""
    subnet_ids = list(
        await session.scalars(select(Subnet.id).where(Subnet.network_id == network_id))
    )
    await session.execute(delete(IpAllocation).where(IpAllocation.network_id == network_id))
    await session.execute(delete(Tag).where(Tag.resource_id.in_([network_id, *subnet_ids])))
    await session.execute(delete(Subnet).where(Subnet.network_id == network_id))
    await rbac.drop_policies(session, "network", network_id)
    await session.execute(delete(Network).where(Network.id == network_id))
