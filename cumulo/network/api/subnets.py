"""/v2.0/subnets (api-ref: Subnets; subnet_allocation from subnet pools)."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network import ipam, rbac
from cumulo.network.agents import DHCP_AGENT, schedule
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
    to_list,
)
from cumulo.network.api.networks import visible_network
from cumulo.network.core import ACCESS_SHARED, NetworkService, granted, new_id
from cumulo.network.errors import (
    InvalidInput,
    SubnetInUse,
    SubnetNotFound,
    SubnetPoolNotFound,
)
from cumulo.network.models import IpAllocation, Network, Port, Subnet, SubnetPool, Tag
from cumulo.network.ports import (
    AUTO_ADDRESS_MODES,
    DHCP,
    ROUTER_INTERFACES,
    is_auto_address,
    network_subnets,
    sync_dhcp_port,
    touch,
    write_retrying,
)

IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
UPDATABLE = (
    "name", "description", "gateway_ip", "allocation_pools", "host_routes",
    "dns_nameservers", "enable_dhcp",
)  # fmt: skip
CREATE_ATTRS = (
    *UPDATABLE, "network_id", "ip_version", "cidr", "subnetpool_id", "prefixlen",
    "ipv6_ra_mode", "ipv6_address_mode", "use_default_subnet_pool", "service_types",
    "segment_id",
)  # fmt: skip


def render_subnet(s: Subnet, tags: list[str]) -> dict[str, Any]:
    return {
        **standard(s, tags),
        "network_id": s.network_id,
        "ip_version": s.ip_version,
        "cidr": s.cidr,
        "gateway_ip": s.gateway_ip,
        "allocation_pools": s.allocation_pools,
        "host_routes": s.host_routes,
        "dns_nameservers": s.dns_nameservers,
        "enable_dhcp": s.enable_dhcp,
        "ipv6_ra_mode": s.ipv6_ra_mode,
        "ipv6_address_mode": s.ipv6_address_mode,
        "subnetpool_id": s.subnetpool_id,
        "service_types": [],
        "segment_id": None,
        "dns_publish_fixed_ip": False,
    }


async def render_subnets(service: NetworkService, subnets: list[Subnet]) -> list[dict[str, Any]]:
    async with service.db.read() as session:
        tags = await tags_of(session, [s.id for s in subnets])
    return [render_subnet(s, tags[s.id]) for s in subnets]


def subnets_visible(service: NetworkService, ctx: RequestContext):
    if service.is_admin(ctx):
        return True
    shared = granted("network", ctx.project_id, (ACCESS_SHARED,))
    return or_(Subnet.project_id == ctx.project_id, Subnet.network_id.in_(shared))


async def visible_subnet(service: NetworkService, ctx: RequestContext, subnet_id: str) -> Subnet:
    async with service.db.read() as session:
        subnet = await session.scalar(
            select(Subnet).where(Subnet.id == subnet_id, subnets_visible(service, ctx))
        )
    if subnet is None:
        raise SubnetNotFound(f"Subnet {subnet_id} could not be found.")
    return subnet


def _check_gateway(net: ipam.IpNetwork, gateway: Any) -> str | None:
    if gateway is None:
        return None
    ip = ipam.parse_ip(gateway, "gateway_ip")
    first, last = ipam.usable_range(net)
    if ip.version != net.version or not first <= ip <= last:
        raise InvalidInput(f"Gateway ip {gateway} is not valid for the subnet cidr {net}.")
    return str(ip)


def _nameservers(value: Any) -> list[str]:
    servers = [str(ipam.parse_ip(v, "dns_nameservers")) for v in to_list("dns_nameservers", value)]
    if len(set(servers)) != len(servers):
        raise InvalidInput("Invalid input for dns_nameservers. Reason: Duplicate nameserver.")
    return servers


def _host_routes(value: Any, net: ipam.IpNetwork) -> list[dict[str, str]]:
    routes = []
    for r in to_list("host_routes", value):
        if not isinstance(r, dict) or set(r) != {"destination", "nexthop"}:
            raise InvalidInput("Invalid input for host_routes: each needs destination, nexthop.")
        dest = ipam.parse_cidr(r["destination"], "destination")
        hop = ipam.parse_ip(r["nexthop"], "nexthop")
        if dest.version != net.version or hop.version != net.version:
            raise InvalidInput("Invalid input for host_routes: IP version mismatch.")
        routes.append({"destination": str(dest), "nexthop": str(hop)})
    return routes


def _apply_update(subnet: Subnet, a: dict[str, Any]) -> None:
    net = ipaddress.ip_network(subnet.cidr)
    apply_standard(subnet, a)
    if "gateway_ip" in a:
        subnet.gateway_ip = _check_gateway(net, a["gateway_ip"])
    if "allocation_pools" in a:
        pools = to_list("allocation_pools", a["allocation_pools"])
        ipam.check_pools(net, pools, subnet.gateway_ip)
        subnet.allocation_pools = [
            {"start": str(ipam.parse_ip(p["start"])), "end": str(ipam.parse_ip(p["end"]))}
            for p in pools
        ]
    elif "gateway_ip" in a:
        ipam.check_pools(net, subnet.allocation_pools, subnet.gateway_ip)
    if "dns_nameservers" in a:
        subnet.dns_nameservers = _nameservers(a["dns_nameservers"])
    if "host_routes" in a:
        subnet.host_routes = _host_routes(a["host_routes"], net)
    if "enable_dhcp" in a:
        subnet.enable_dhcp = to_bool("enable_dhcp", a["enable_dhcp"])


async def _schedule_dhcp(session, subnet: Subnet) -> None:
    """A subnet the network's DHCP port serves: the network goes to the DHCP agents."""
    if subnet.enable_dhcp and subnet.ip_version == 4:
        await schedule(session, DHCP_AGENT, subnet.network_id)


def _check_ipv6_modes(a: dict[str, Any]) -> None:
    """Neutron's combinations: both modes set means the same mode, and DHCP enabled."""
    ra, address = a.get("ipv6_ra_mode"), a.get("ipv6_address_mode")
    if ra is not None and address is not None and ra != address:
        raise InvalidInput(
            f"Invalid input for operation: ipv6_ra_mode set to '{ra}' with ipv6_address_mode "
            f"set to '{address}' is not valid. If both attributes are set, they must be the "
            "same value"
        )
    if (ra or address) and not to_bool("enable_dhcp", a.get("enable_dhcp", True)):
        raise InvalidInput(
            "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when "
            "enable_dhcp is set to False."
        )


async def _cidr_from_pool(
    session, service: NetworkService, ctx: RequestContext, a: dict[str, Any], version: int
) -> tuple[str, SubnetPool]:
    pool_id = a.get("subnetpool_id")
    if pool_id is None:
        pool = await session.scalar(
            select(SubnetPool).where(SubnetPool.is_default, SubnetPool.ip_version == version)
        )
        if pool is None:
            raise BadRequest("No default subnetpool found for IPv4")
    else:
        pool = await session.get(SubnetPool, pool_id)
        visible = pool is not None and (
            pool.shared
            or pool.project_id == ctx.project_id
            or service.is_admin(ctx)
            or await rbac.has_access(
                session, "subnetpool", pool.id, ctx.project_id or "", ACCESS_SHARED
            )
        )
        if not visible:
            raise SubnetPoolNotFound(f"Subnet pool {pool_id} could not be found.")
    assert pool is not None
    if "cidr" in a:
        cidr = str(ipam.parse_cidr(a["cidr"]))
        if not any(ipam.overlaps(cidr, p) for p in pool.prefixes):
            raise BadRequest(f"Cidr {cidr} is not within the prefixes of subnet pool {pool.id}.")
        return cidr, pool
    length = to_int(
        "prefixlen",
        a.get("prefixlen", pool.default_prefixlen),
        pool.min_prefixlen,
        pool.max_prefixlen,
    )
    used = list(await session.scalars(select(Subnet.cidr).where(Subnet.subnetpool_id == pool.id)))
    cidr = ipam.allocate_prefix(pool.prefixes, used, length)
    if cidr is None:
        raise BadRequest(f"Insufficient prefix space to allocate subnet size /{length}.")
    return cidr, pool


async def list_subnets(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        subnets = list(await session.scalars(select(Subnet).where(subnets_visible(service, ctx))))
    return list_response(request, "subnets", await render_subnets(service, subnets))


@describes(body=wrapped("subnet", CREATE_ATTRS), resource="subnet")
async def create_subnet(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    bodies, bulk = await create_bodies(request, "subnet", "subnets", CREATE_ATTRS)
    plans = [await _plan_subnet(service, ctx, a) for a in bodies]

    async def work(session):
        return [await plan(session) for plan in plans]

    subnets = await write_retrying(service.db, work)
    await service.changed()
    return created(request, "subnet", "subnets", await render_subnets(service, subnets), bulk)


async def _plan_subnet(
    service: NetworkService, ctx: RequestContext, a: dict[str, Any]
) -> Callable[[AsyncSession], Awaitable[Subnet]]:
    """Check what a new subnet asks for; the returned step writes it in a transaction."""
    if "network_id" not in a:
        raise BadRequest("Failed to parse request. Required attribute 'network_id' not specified")
    network = await visible_network(service, ctx, str(a["network_id"]))
    project_id = owner_of(service, ctx, a)
    service.enforce(ctx, "network:owner", network.project_id)
    version = to_int("ip_version", a.get("ip_version", 4), 4, 6)
    if version not in (4, 6):
        raise InvalidInput(f"Invalid input for ip_version. Reason: '{version}' is not in [4, 6].")
    for mode in ("ipv6_ra_mode", "ipv6_address_mode"):
        if a.get(mode) is not None and (version != 6 or a[mode] not in IPV6_MODES):
            raise InvalidInput(f"Invalid input for {mode}: '{a[mode]}'.")
    _check_ipv6_modes(a)
    use_pool = a.get("subnetpool_id") is not None or a.get("use_default_subnet_pool")
    if not use_pool and "cidr" not in a:
        raise BadRequest("a subnetpool must be specified in the absence of a cidr")

    async def work(session):
        await service.check_quota(session, project_id, "subnet")
        pool = None
        if use_pool:
            cidr, pool = await _cidr_from_pool(session, service, ctx, a, version)
        else:
            cidr = str(ipam.parse_cidr(a["cidr"]))
        net = ipaddress.ip_network(cidr)
        if net.version != version:
            raise InvalidInput(
                f"Invalid input for operation: cidr {cidr} does not match ip_version {version}."
            )
        slaac = {a.get("ipv6_ra_mode"), a.get("ipv6_address_mode")} & set(AUTO_ADDRESS_MODES)
        if slaac and net.prefixlen != 64:
            raise InvalidInput(
                f"Invalid input for operation: Invalid CIDR {cidr} for IPv6 address mode. "
                "OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
            )
        if version == 4 and net.prefixlen > 30 or version == 6 and net.prefixlen > 126:
            raise InvalidInput(f"Invalid input for cidr. Reason: {cidr} is too small.")
        for other in await network_subnets(session, network.id):
            if ipam.overlaps(other.cidr, cidr):
                raise InvalidInput(
                    f"Invalid input for operation: Requested subnet with cidr: {cidr} for "
                    f"network: {network.id} overlaps with another subnet."
                )
        gateway = ipam.default_gateway(net)
        subnet = Subnet(
            id=new_id(),
            project_id=project_id,
            network_id=network.id,
            subnetpool_id=pool.id if pool else None,
            ip_version=version,
            cidr=cidr,
            gateway_ip=gateway,
            ipv6_ra_mode=a.get("ipv6_ra_mode"),
            ipv6_address_mode=a.get("ipv6_address_mode"),
            allocation_pools=[],
            host_routes=[],
            dns_nameservers=[],
        )
        _apply_update(subnet, {k: v for k, v in a.items() if k != "allocation_pools"})
        pools = a.get("allocation_pools")
        if pools is None:
            subnet.allocation_pools = ipam.default_pools(net, subnet.gateway_ip)
        else:
            _apply_update(subnet, {"allocation_pools": pools})
        session.add(subnet)
        await session.flush()
        await sync_dhcp_port(session, network)
        await _schedule_dhcp(session, subnet)
        return subnet

    return work


async def show_subnet(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    subnet = await visible_subnet(service, ctx, request.path_params["subnet_id"])
    return show(request, "subnet", (await render_subnets(service, [subnet]))[0])


@describes(body=wrapped("subnet", CREATE_ATTRS), resource="subnet")
async def update_subnet(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    subnet_id = request.path_params["subnet_id"]
    a = await resource_body(request, "subnet", CREATE_ATTRS)
    read_only = sorted(set(a) - set(UPDATABLE))
    if read_only:
        raise BadRequest(f"Cannot update read-only attribute {read_only[0]}")
    subnet = await visible_subnet(service, ctx, subnet_id)
    service.enforce(ctx, "network:owner", subnet.project_id)

    async def work(session):
        row = await session.get(Subnet, subnet_id)
        if row is None:
            raise SubnetNotFound(f"Subnet {subnet_id} could not be found.")
        _apply_update(row, a)
        touch(row)
        await session.flush()
        await sync_dhcp_port(session, await session.get(Network, row.network_id))
        await _schedule_dhcp(session, row)
        return row

    subnet = await write_retrying(service.db, work)
    await service.changed()
    return show(request, "subnet", (await render_subnets(service, [subnet]))[0])


async def delete_subnet(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    subnet_id = request.path_params["subnet_id"]
    subnet = await visible_subnet(service, ctx, subnet_id)
    service.enforce(ctx, "network:owner", subnet.project_id)

    # A SLAAC subnet's addresses go with it, as in Neutron; only a router holds it.
    holders = ROUTER_INTERFACES if is_auto_address(subnet) else None

    async def work(session):
        users = select(Port.id).join(IpAllocation, IpAllocation.port_id == Port.id)
        users = users.where(IpAllocation.subnet_id == subnet_id, Port.device_owner != DHCP)
        if holders is not None:
            users = users.where(Port.device_owner.in_(holders))
        in_use = await session.scalar(users.limit(1))
        if in_use:
            raise SubnetInUse(
                f"Unable to complete operation on subnet {subnet_id}: One or more ports have "
                "an IP allocation from this subnet."
            )
        await session.execute(delete(IpAllocation).where(IpAllocation.subnet_id == subnet_id))
        await session.execute(delete(Tag).where(Tag.resource_id == subnet_id))
        await session.execute(delete(Subnet).where(Subnet.id == subnet_id))
        await session.flush()
        await sync_dhcp_port(session, await session.get(Network, subnet.network_id))

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


routes = [
    Route("/v2.0/subnets", list_subnets, methods=["GET"]),
    Route("/v2.0/subnets", create_subnet, methods=["POST"]),
    Route("/v2.0/subnets/{subnet_id}", show_subnet, methods=["GET"]),
    Route("/v2.0/subnets/{subnet_id}", update_subnet, methods=["PUT"]),
    Route("/v2.0/subnets/{subnet_id}", delete_subnet, methods=["DELETE"]),
]
