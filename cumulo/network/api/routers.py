"""/v2.0/routers (api-ref: Routers; ext-gw-mode, extraroute, extraroute-atomic, dvr,
l3-ha)."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Conflict
from cumulo.common.openapi import describes, wrapped
from cumulo.network import ipam, l3_ha, rbac
from cumulo.network.agents import L3_AGENT, reschedule_router, schedule
from cumulo.network.api.common import (
    apply_standard,
    caller,
    json,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    standard,
    tags_of,
    to_bool,
    to_list,
)
from cumulo.network.api.ports import visible_port
from cumulo.network.api.subnets import visible_subnet
from cumulo.network.core import NetworkService, new_id
from cumulo.network.errors import (
    DistributedHARouterNotSupported,
    InvalidInput,
    PortInUse,
    PortNotFound,
    RouterInterfaceNotFoundForSubnet,
    RouterInUse,
    RouterNotFound,
)
from cumulo.network.models import FloatingIp, IpAllocation, Network, Port, Router, Subnet, Tag
from cumulo.network.ports import (
    ROUTER_GATEWAY,
    ROUTER_INTERFACES,
    delete_port_row,
    fixed_ips_of,
    interface_owner,
    new_port,
    resolve_fixed_ips,
    set_fixed_ips,
    touch,
    write_retrying,
)

UPDATABLE = ("name", "description", "admin_state_up", "external_gateway_info", "routes")
CREATE_ATTRS = (*UPDATABLE, "distributed", "ha", "availability_zone_hints", "flavor_id")
# Neutron's BadRequest for a migration between centralized and distributed of a router
# that is up (router-admin-state-down-before-update: before and after the update).
ACTIVE_MIGRATION = (
    "Bad router request: Cannot change the 'distributed' attribute of active routers. "
    "Please set router admin_state_up to False prior to upgrade."
)
# ...and between HA and not (l3_hamode_db's _validate_migration: after the update).
# Distributed HA routers: refused (as Neutron did before its DVR+HA support), with the
# message Neutron gave.
DVR_HA = "Currently distributed HA routers are not supported."
ACTIVE_HA_MIGRATION = (
    "Bad router request: Cannot change HA attribute of active routers. Please set router "
    "admin_state_up to False prior to upgrade"
)


def _attrs(service: NetworkService, names: tuple[str, ...]) -> tuple[str, ...]:
    """The router attributes of a request: `distributed` only with the dvr extension
    (without it Neutron does not know the attribute: 400 unrecognized)."""
    if service.config.network.enable_dvr:
        return names
    return tuple(n for n in names if n != "distributed")


async def render_routers(
    service: NetworkService, routers: list[Router], admin: bool
) -> list[dict[str, Any]]:
    """Routers' bodies; `distributed` only for admins (Neutron's get_router:distributed)
    and only with the dvr extension; `ha` only for admins (get_router:ha)."""
    shows_distributed = admin and service.config.network.enable_dvr
    async with service.db.read() as session:
        gw_ports = {
            p.id: p
            for p in await session.scalars(
                select(Port).where(Port.id.in_([r.gw_port_id for r in routers if r.gw_port_id]))
            )
        }
        gw_ips = await fixed_ips_of(session, list(gw_ports))
        tags = await tags_of(session, [r.id for r in routers])
    bodies = []
    for r in routers:
        gw = gw_ports.get(r.gw_port_id or "")
        info = None
        if gw is not None:
            info = {
                "network_id": gw.network_id,
                "enable_snat": r.enable_snat,
                "external_fixed_ips": gw_ips[gw.id],
            }
        bodies.append(
            {
                **standard(r, tags[r.id]),
                "admin_state_up": r.admin_state_up,
                "status": r.status,
                "external_gateway_info": info,
                "routes": r.routes,
                **({"distributed": r.distributed} if shows_distributed else {}),
                **({"ha": r.ha} if admin else {}),
                "availability_zone_hints": [],
                "availability_zones": ["nova"],
                "flavor_id": None,
            }
        )
    return bodies


def routers_visible(service: NetworkService, ctx: RequestContext):
    return True if service.is_admin(ctx) else Router.project_id == ctx.project_id


async def visible_router(service: NetworkService, ctx: RequestContext, router_id: str) -> Router:
    async with service.db.read() as session:
        router = await session.scalar(
            select(Router).where(Router.id == router_id, routers_visible(service, ctx))
        )
    if router is None:
        raise RouterNotFound(f"Router {router_id} could not be found")
    return router


async def interface_subnets(session: AsyncSession, router_id: str) -> list[tuple[Port, Subnet]]:
    rows = await session.execute(
        select(Port, Subnet)
        .join(IpAllocation, IpAllocation.port_id == Port.id)
        .join(Subnet, Subnet.id == IpAllocation.subnet_id)
        .where(Port.device_id == router_id, Port.device_owner.in_(ROUTER_INTERFACES))
    )
    return [(p, s) for p, s in rows]


async def _set_gateway(
    session: AsyncSession, service: NetworkService, ctx: RequestContext, router: Router, info: Any
) -> None:
    """Replace the router's gateway port (None or {} clears it)."""
    if info is not None and not isinstance(info, dict):
        raise InvalidInput("Invalid input for external_gateway_info: an object is required.")
    old = await session.get(Port, router.gw_port_id) if router.gw_port_id else None
    if info and old is not None and info.get("network_id") == old.network_id:
        if "enable_snat" in info:
            router.enable_snat = to_bool("enable_snat", info["enable_snat"])
        if info.get("external_fixed_ips"):
            service.enforce(ctx, "network:admin_only")
            network = await session.get(Network, old.network_id)
            await session.execute(delete(IpAllocation).where(IpAllocation.port_id == old.id))
            ips = await resolve_fixed_ips(
                session, network, info["external_fixed_ips"], device_owner=ROUTER_GATEWAY
            )
            await set_fixed_ips(session, old, ips)
        return
    if old is not None:
        fip = await session.scalar(
            select(FloatingIp.id).where(FloatingIp.router_id == router.id).limit(1)
        )
        if fip:
            raise Conflict(
                f"Gateway cannot be updated for router {router.id}, since a gateway to external "
                f"network {old.network_id} is required by one or more floating IPs."
            )
        router.gw_port_id = None
        await session.flush()
        await delete_port_row(session, old)
    if not info:
        return
    network = await rbac.usable_network(
        session, service, ctx, str(info.get("network_id")), router.project_id
    )
    if not network.external:
        raise BadRequest(f"Bad router request: Network {network.id} is not an external network.")
    if "enable_snat" in info:
        snat = to_bool("enable_snat", info["enable_snat"])
        if not snat:
            service.enforce(ctx, "network:admin_only")
        router.enable_snat = snat
    else:
        router.enable_snat = True
    requested = info.get("external_fixed_ips")
    if requested:
        service.enforce(ctx, "network:admin_only")
    port = await new_port(
        session,
        network,
        project_id="",
        fixed_ips=to_list("external_fixed_ips", requested) if requested else None,
        device_owner=ROUTER_GATEWAY,
        device_id=router.id,
        status="ACTIVE",
        port_security_enabled=False,
    )
    if not (await fixed_ips_of(session, [port.id]))[port.id]:
        raise BadRequest(f"Bad router request: external network {network.id} has no subnet.")
    router.gw_port_id = port.id


async def _check_routes(session: AsyncSession, router: Router, routes: Any) -> list[dict]:
    connected = [
        ipaddress.ip_network(s.cidr) for _, s in await interface_subnets(session, router.id)
    ]
    if router.gw_port_id:
        for a in await session.scalars(
            select(IpAllocation).where(IpAllocation.port_id == router.gw_port_id)
        ):
            subnet = await session.get(Subnet, a.subnet_id)
            connected.append(ipaddress.ip_network(subnet.cidr))
    checked = []
    for r in to_list("routes", routes):
        if not isinstance(r, dict) or set(r) != {"destination", "nexthop"}:
            raise InvalidInput("Invalid input for routes: each needs destination and nexthop.")
        dest = ipaddress.ip_network(str(r["destination"]), strict=False)
        hop = ipam.parse_ip(r["nexthop"], "nexthop")
        if not any(hop in net for net in connected):
            raise BadRequest(
                f"Invalid format for routes: {r}, the nexthop is not connected with router"
            )
        entry = {"destination": str(dest), "nexthop": str(hop)}
        if entry not in checked:
            checked.append(entry)
    return checked


async def list_routers(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        routers = list(await session.scalars(select(Router).where(routers_visible(service, ctx))))
    bodies = await render_routers(service, routers, service.is_admin(ctx))
    return list_response(request, "routers", bodies)


@describes(body=wrapped("router", CREATE_ATTRS), resource="router")
async def create_router(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "router", _attrs(service, CREATE_ATTRS))
    project_id = owner_of(service, ctx, a)
    service.enforce(ctx, "network:owner", project_id)
    router = Router(id=new_id(), project_id=project_id, routes=[])
    router.distributed = service.config.network.router_distributed
    if "distributed" in a:
        # Neutron's policy: only admins name it, whatever its value (its default is
        # "not given", so any value given is checked).
        service.enforce(ctx, "network:create_router:distributed")
        router.distributed = to_bool("distributed", a["distributed"])
    # A distributed router is not HA unless asked (and then refused: cumulo's data
    # planes do not run the two together).
    router.ha = service.config.network.l3_ha and not router.distributed
    if "ha" in a:
        # As `distributed`: only admins name it, whatever its value.
        service.enforce(ctx, "network:create_router:ha")
        router.ha = to_bool("ha", a["ha"])
    _check_kind(router)
    apply_standard(router, a)
    router.admin_state_up = to_bool("admin_state_up", a.get("admin_state_up", True))
    max_agents = service.config.network.max_l3_agents_per_router

    async def work(session):
        await service.check_quota(session, project_id, "router")
        router.ha_vr_id = None  # (a retried transaction allocates again)
        if router.ha:
            await l3_ha.ensure_ha_network(session, service, project_id)
            await l3_ha.allocate_vr_id(session, router)
        session.add(router)
        await session.flush()
        await schedule(session, L3_AGENT, router.id, max_agents)
        if a.get("external_gateway_info"):
            await _set_gateway(session, service, ctx, router, a["external_gateway_info"])
        return router

    router = await write_retrying(service.db, work)
    await service.changed()
    return await _router_response(request, service, ctx, router, 201)


async def _router_response(
    request: Request, service: NetworkService, ctx: RequestContext, router: Router, status=200
) -> Response:
    body = (await render_routers(service, [router], service.is_admin(ctx)))[0]
    return show(request, "router", body, status)


async def show_router(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    router = await visible_router(service, ctx, request.path_params["router_id"])
    return await _router_response(request, service, ctx, router)


def _check_kind(router: Router) -> None:
    if router.ha and router.distributed:
        raise DistributedHARouterNotSupported(DVR_HA)


async def _retag_interfaces(session: AsyncSession, row: Router) -> None:
    """The router's interfaces owned as its kind's (router_interface[_distributed],
    ha_router_replicated_interface), as Neutron's migrations change them."""
    owner = interface_owner(row)
    for port in await session.scalars(
        select(Port).where(Port.device_id == row.id, Port.device_owner.in_(ROUTER_INTERFACES))
    ):
        if port.device_owner != owner:
            port.device_owner = owner
            touch(port)
    await session.flush()


async def _migrate(
    session: AsyncSession, service: NetworkService, row: Router, distributed: bool, was_up: bool
) -> None:
    """Centralized <-> distributed (Neutron's _validate_router_migration with
    router-admin-state-down-before-update): only a router that was down and stays down;
    its interfaces change owner as Neutron's (router_interface[_distributed])."""
    if distributed == row.distributed:
        return
    if was_up or row.admin_state_up:
        raise BadRequest(ACTIVE_MIGRATION)
    row.distributed = distributed
    _check_kind(row)
    await _retag_interfaces(session, row)
    await reschedule_router(session, row.id, service.config.network.max_l3_agents_per_router)


async def _migrate_ha(
    session: AsyncSession, service: NetworkService, row: Router, ha: bool
) -> None:
    """HA <-> not (Neutron's _validate_migration and _reconfigure_ha_resources): only a
    router that is down after the update; unbound from every agent and scheduled again
    (with its HA ports, or without them), its VRRP id and the project's HA network kept
    only while it has HA routers."""
    if ha == row.ha:
        return
    if row.admin_state_up:
        raise BadRequest(ACTIVE_HA_MIGRATION)
    row.ha = ha
    _check_kind(row)
    if ha:
        await l3_ha.ensure_ha_network(session, service, row.project_id)
        await l3_ha.allocate_vr_id(session, row)
    else:
        row.ha_vr_id = None
    await session.flush()
    await _retag_interfaces(session, row)
    await reschedule_router(
        session, row.id, service.config.network.max_l3_agents_per_router, unbind=True
    )
    if not ha:
        await l3_ha.drop_unused_ha_network(session, row.project_id)


@describes(body=wrapped("router", (*UPDATABLE, "distributed", "ha")), resource="router")
async def update_router(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    router_id = request.path_params["router_id"]
    a = await resource_body(request, "router", _attrs(service, (*UPDATABLE, "distributed", "ha")))
    a.pop("project_id", None)
    router = await visible_router(service, ctx, router_id)
    service.enforce(ctx, "network:owner", router.project_id)
    if "distributed" in a:
        service.enforce(ctx, "network:update_router:distributed")
        distributed = to_bool("distributed", a["distributed"])
    if "ha" in a:
        service.enforce(ctx, "network:update_router:ha")
        ha = to_bool("ha", a["ha"])

    async def work(session):
        row = await session.get(Router, router_id)
        was_up = row.admin_state_up
        apply_standard(row, a)
        if "admin_state_up" in a:
            row.admin_state_up = to_bool("admin_state_up", a["admin_state_up"])
        if "ha" in a:
            await _migrate_ha(session, service, row, ha)
        if "distributed" in a:
            await _migrate(session, service, row, distributed, was_up)
        if "external_gateway_info" in a:
            await _set_gateway(session, service, ctx, row, a["external_gateway_info"])
        if "routes" in a:
            row.routes = await _check_routes(session, row, a["routes"] or [])
        touch(row)
        return row

    router = await write_retrying(service.db, work)
    await service.changed()
    return await _router_response(request, service, ctx, router)


async def delete_router(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    router_id = request.path_params["router_id"]
    router = await visible_router(service, ctx, router_id)
    service.enforce(ctx, "network:owner", router.project_id)

    async def work(session):
        if await interface_subnets(session, router_id):
            raise RouterInUse(f"Router {router_id} still has ports")
        row = await session.get(Router, router_id)
        await _set_gateway(session, service, ctx, row, None)
        await session.execute(delete(Tag).where(Tag.resource_id == router_id))
        await l3_ha.delete_router_row(session, row)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


# -- interfaces ---------------------------------------------------------------------------


def _interface_body(router: Router, port: Port, subnet_ids: list[str]) -> dict[str, Any]:
    return {
        "id": router.id,
        "tenant_id": router.project_id,
        "project_id": router.project_id,
        "port_id": port.id,
        "network_id": port.network_id,
        "subnet_id": subnet_ids[0] if subnet_ids else None,
        "subnet_ids": subnet_ids,
    }


async def _interface_request(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("Bad router request: a JSON object is required.")
    if ("subnet_id" in body) == ("port_id" in body):
        raise BadRequest("Bad router request: Either subnet_id or port_id must be specified.")
    return body


async def add_interface(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    router = await visible_router(service, ctx, request.path_params["router_id"])
    service.enforce(ctx, "network:owner", router.project_id)
    body = await _interface_request(request)
    if "subnet_id" in body:
        subnet = await visible_subnet(service, ctx, str(body["subnet_id"]))
        if not subnet.gateway_ip:
            raise BadRequest(
                "Bad router request: Subnet for router interface must have a gateway IP."
            )
    else:
        port = await visible_port(service, ctx, str(body["port_id"]))
        if port.device_id or port.device_owner:
            raise PortInUse(
                f"Unable to complete operation on port {port.id} for network {port.network_id}. "
                f"Port already has an attached device {port.device_id}."
            )

    async def work(session):
        existing = await interface_subnets(session, router.id)
        if "subnet_id" in body:
            new_subnets = [subnet]
        else:
            ips = (await fixed_ips_of(session, [port.id]))[port.id]
            if not ips:
                raise BadRequest(f"Bad router request: Router port {port.id} has no fixed IP.")
            new_subnets = [await session.get(Subnet, ip["subnet_id"]) for ip in ips]
        for s in new_subnets:
            for _, other in existing:
                if other.id == s.id:
                    raise BadRequest(
                        f"Bad router request: Router already has a port on subnet {s.id}."
                    )
                if ipam.overlaps(other.cidr, s.cidr):
                    raise BadRequest(
                        f"Bad router request: Cidr {s.cidr} of subnet {s.id} overlaps with cidr "
                        f"{other.cidr} of subnet {other.id}."
                    )
        if "subnet_id" in body:
            network = await session.get(Network, subnet.network_id)
            iface = await new_port(
                session,
                network,
                project_id=router.project_id,
                fixed_ips=[{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
                device_owner=interface_owner(router),
                device_id=router.id,
                status="ACTIVE",
                port_security_enabled=False,
            )
        else:
            iface = await session.get(Port, port.id)
            iface.device_owner, iface.device_id, iface.status = (
                interface_owner(router),
                router.id,
                "ACTIVE",
            )
            touch(iface)
        touch(await session.get(Router, router.id))
        return iface, [s.id for s in new_subnets]

    iface, subnet_ids = await write_retrying(service.db, work)
    await service.changed()
    return json(_interface_body(router, iface, subnet_ids))


async def remove_interface(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    router = await visible_router(service, ctx, request.path_params["router_id"])
    service.enforce(ctx, "network:owner", router.project_id)
    body = await _interface_request(request)

    async def work(session):
        pairs = await interface_subnets(session, router.id)
        if "subnet_id" in body:
            match = [(p, s) for p, s in pairs if s.id == body["subnet_id"]]
            if not match:
                raise RouterInterfaceNotFoundForSubnet(
                    f"Router {router.id} has no interface on subnet {body['subnet_id']}"
                )
        else:
            match = [(p, s) for p, s in pairs if p.id == body["port_id"]]
            if not match:
                raise PortNotFound(
                    f"Router {router.id} does not have an interface with id {body['port_id']}"
                )
        port = match[0][0]
        subnet_ids = [s.id for _, s in match]
        fips = await session.scalar(
            select(FloatingIp.id)
            .join(IpAllocation, IpAllocation.port_id == FloatingIp.port_id)
            .where(FloatingIp.router_id == router.id, IpAllocation.subnet_id.in_(subnet_ids))
            .limit(1)
        )
        if fips:
            raise Conflict(
                f"Cannot remove the interface of router {router.id} on subnet {subnet_ids[0]}: "
                "one or more floating IPs need it."
            )
        await delete_port_row(session, port)
        touch(await session.get(Router, router.id))
        return port, subnet_ids

    port, subnet_ids = await write_retrying(service.db, work)
    await service.changed()
    return json(_interface_body(router, port, subnet_ids))


@describes(body=wrapped("router", ("routes",)), resource="router")
async def _change_routes(request: Request, adding: bool) -> Response:
    service, ctx = service_of(request), await caller(request)
    router_id = request.path_params["router_id"]
    a = await resource_body(request, "router", ("routes",))
    router = await visible_router(service, ctx, router_id)
    service.enforce(ctx, "network:owner", router.project_id)

    async def work(session):
        row = await session.get(Router, router_id)
        changes = await _check_routes(session, row, a.get("routes") or [])
        if adding:
            row.routes = row.routes + [r for r in changes if r not in row.routes]
        else:
            row.routes = [r for r in row.routes if r not in changes]
        touch(row)
        return row

    router = await write_retrying(service.db, work)
    await service.changed()
    return await _router_response(request, service, ctx, router)


async def add_routes(request: Request) -> Response:
    return await _change_routes(request, adding=True)


async def remove_routes(request: Request) -> Response:
    return await _change_routes(request, adding=False)


routes = [
    Route("/v2.0/routers", list_routers, methods=["GET"]),
    Route("/v2.0/routers", create_router, methods=["POST"]),
    Route("/v2.0/routers/{router_id}", show_router, methods=["GET"]),
    Route("/v2.0/routers/{router_id}", update_router, methods=["PUT"]),
    Route("/v2.0/routers/{router_id}", delete_router, methods=["DELETE"]),
    Route("/v2.0/routers/{router_id}/add_router_interface", add_interface, methods=["PUT"]),
    Route("/v2.0/routers/{router_id}/remove_router_interface", remove_interface, methods=["PUT"]),
    Route("/v2.0/routers/{router_id}/add_extraroutes", add_routes, methods=["PUT"]),
    Route("/v2.0/routers/{router_id}/remove_extraroutes", remove_routes, methods=["PUT"]),
]
