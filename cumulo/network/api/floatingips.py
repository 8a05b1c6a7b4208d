"""/v2.0/floatingips (api-ref: Floating IPs)."""

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
from cumulo.common.openapi import describes, wrapped
from cumulo.network import rbac
from cumulo.network.api.common import (
    caller,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    standard,
    tags_of,
    to_str,
)
from cumulo.network.core import NetworkService, new_id
from cumulo.network.errors import (
    ExternalGatewayForFloatingIPNotFound,
    FloatingIPNotFound,
    FloatingIPPortAlreadyAssociated,
    PortNotFound,
)
from cumulo.network.models import FloatingIp, IpAllocation, Port, Router, Tag
from cumulo.network.ports import (
    FLOATING_IP,
    ROUTER_INTERFACES,
    delete_port_row,
    fixed_ips_of,
    new_port,
    touch,
    write_retrying,
)

CREATE_ATTRS = (
    "floating_network_id", "floating_ip_address", "subnet_id", "port_id", "fixed_ip_address",
    "description", "dns_domain", "dns_name", "qos_policy_id",
)  # fmt: skip
UPDATABLE = ("port_id", "fixed_ip_address", "description")


def render_fip(f: FloatingIp, tags: list[str]) -> dict[str, Any]:
    body = standard(f, tags)
    del body["name"]
    return {
        **body,
        "floating_ip_address": f.floating_ip_address,
        "floating_network_id": f.floating_network_id,
        "router_id": f.router_id,
        "port_id": f.port_id,
        "fixed_ip_address": f.fixed_ip_address,
        "status": f.status,
        "qos_policy_id": None,
        "port_forwardings": [],
    }


async def _render(service: NetworkService, fips: list[FloatingIp]) -> list[dict[str, Any]]:
    async with service.db.read() as session:
        tags = await tags_of(session, [f.id for f in fips])
    return [render_fip(f, tags[f.id]) for f in fips]


def fips_visible(service: NetworkService, ctx: RequestContext):
    # The compute service reads any server's floating IPs for its network info cache.
    if service.is_admin(ctx) or service.is_service(ctx):
        return True
    return FloatingIp.project_id == ctx.project_id


async def visible_fip(service: NetworkService, ctx: RequestContext, fip_id: str) -> FloatingIp:
    async with service.db.read() as session:
        fip = await session.scalar(
            select(FloatingIp).where(FloatingIp.id == fip_id, fips_visible(service, ctx))
        )
    if fip is None:
        raise FloatingIPNotFound(f"Floating IP {fip_id} could not be found")
    return fip


async def _associate(
    session: AsyncSession,
    service: NetworkService,
    ctx: RequestContext,
    fip: FloatingIp,
    port_id: Any,
    fixed_ip: Any,
) -> None:
    """Point the floating IP at a port's fixed IPv4 through a router on its subnet."""
    if port_id is None:
        fip.port_id = fip.fixed_ip_address = fip.router_id = None
        fip.status = "DOWN"
        return
    port = await session.get(Port, str(port_id))
    if port is None or (port.project_id != fip.project_id and not service.is_admin(ctx)):
        raise PortNotFound(f"Port {port_id} could not be found.")
    ips = [i for i in (await fixed_ips_of(session, [port.id]))[port.id]]
    ips = [i for i in ips if ipaddress.ip_address(i["ip_address"]).version == 4]
    if fixed_ip is not None:
        ips = [i for i in ips if i["ip_address"] == fixed_ip]
        if not ips:
            raise BadRequest(
                f"Bad floatingip request: Port {port.id} does not have fixed ip {fixed_ip}."
            )
    if not ips:
        raise BadRequest(
            f"Bad floatingip request: Port {port.id} does not have any IPv4 address; cannot "
            "associate it with a floating IP."
        )
    chosen = ips[0]
    gateways = select(Router.id).join(Port, Port.id == Router.gw_port_id)
    gateways = gateways.where(Port.network_id == fip.floating_network_id)
    router_id = await session.scalar(
        select(Port.device_id)
        .join(IpAllocation, IpAllocation.port_id == Port.id)
        .where(
            Port.device_owner.in_(ROUTER_INTERFACES),
            IpAllocation.subnet_id == chosen["subnet_id"],
            Port.device_id.in_(gateways),
        )
        .limit(1)
    )
    if router_id is None:
        raise ExternalGatewayForFloatingIPNotFound(
            f"External network {fip.floating_network_id} is not reachable from subnet "
            f"{chosen['subnet_id']}.  Therefore, cannot associate Port {port.id} with a "
            "Floating IP."
        )
    taken = await session.scalar(
        select(FloatingIp.id).where(
            FloatingIp.port_id == port.id,
            FloatingIp.fixed_ip_address == chosen["ip_address"],
            FloatingIp.id != fip.id,
        )
    )
    if taken:
        raise FloatingIPPortAlreadyAssociated(
            f"Cannot associate floating IP {fip.floating_ip_address} ({fip.id}) with port "
            f"{port.id} using fixed IP {chosen['ip_address']}, as that fixed IP already has a "
            f"floating IP on external network {fip.floating_network_id}."
        )
    fip.port_id, fip.fixed_ip_address, fip.router_id = port.id, chosen["ip_address"], router_id
    fip.status = "ACTIVE"


async def list_fips(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        fips = list(await session.scalars(select(FloatingIp).where(fips_visible(service, ctx))))
    return list_response(request, "floatingips", await _render(service, fips))


@describes(body=wrapped("floatingip", CREATE_ATTRS), resource="floatingip")
async def create_fip(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "floatingip", CREATE_ATTRS)
    if "floating_network_id" not in a:
        raise BadRequest(
            "Failed to parse request. Required attribute 'floating_network_id' not specified"
        )
    project_id = owner_of(service, ctx, a)
    service.enforce(ctx, "network:owner", project_id)
    if a.get("floating_ip_address") is not None:
        service.enforce(ctx, "network:admin_only")

    async def work(session):
        network = await rbac.usable_network(
            session, service, ctx, str(a["floating_network_id"]), project_id
        )
        if not network.external:
            raise BadRequest(
                f"Bad floatingip request: Network {network.id} is not a valid external network."
            )
        await service.check_quota(session, project_id, "floatingip")
        fip_id = new_id()
        spec: dict[str, Any] = {}
        if a.get("subnet_id") is not None:
            spec["subnet_id"] = a["subnet_id"]
        if a.get("floating_ip_address") is not None:
            spec["ip_address"] = a["floating_ip_address"]
        port = await new_port(
            session,
            network,
            project_id="",
            fixed_ips=[spec] if spec else None,
            device_owner=FLOATING_IP,
            device_id=fip_id,
            status="N/A",
            port_security_enabled=False,
        )
        ips = [
            i["ip_address"]
            for i in (await fixed_ips_of(session, [port.id]))[port.id]
            if ipaddress.ip_address(i["ip_address"]).version == 4
        ]
        if not ips:
            raise BadRequest(f"Bad floatingip request: no IPv4 subnet on network {network.id}.")
        fip = FloatingIp(
            id=fip_id,
            project_id=project_id,
            name="",
            description=to_str("description", a.get("description", "")),
            floating_network_id=network.id,
            floating_port_id=port.id,
            floating_ip_address=ips[0],
            status="DOWN",
        )
        await _associate(session, service, ctx, fip, a.get("port_id"), a.get("fixed_ip_address"))
        session.add(fip)
        return fip

    fip = await write_retrying(service.db, work)
    await service.changed()
    await service.ports_changed([fip.port_id])
    return show(request, "floatingip", (await _render(service, [fip]))[0], 201)


async def show_fip(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    fip = await visible_fip(service, ctx, request.path_params["fip_id"])
    return show(request, "floatingip", (await _render(service, [fip]))[0])


@describes(body=wrapped("floatingip", UPDATABLE), resource="floatingip")
async def update_fip(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    fip_id = request.path_params["fip_id"]
    a = await resource_body(request, "floatingip", UPDATABLE)
    a.pop("project_id", None)
    fip = await visible_fip(service, ctx, fip_id)
    service.enforce(ctx, "network:owner", fip.project_id)
    old_port_id = fip.port_id

    async def work(session):
        row = await session.get(FloatingIp, fip_id)
        if "description" in a:
            row.description = to_str("description", a["description"])
        if "port_id" in a:
            await _associate(session, service, ctx, row, a["port_id"], a.get("fixed_ip_address"))
        touch(row)
        return row

    fip = await write_retrying(service.db, work)
    await service.changed()
    if old_port_id != fip.port_id:
        await service.ports_changed([old_port_id, fip.port_id])
    return show(request, "floatingip", (await _render(service, [fip]))[0])


async def delete_fip(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    fip_id = request.path_params["fip_id"]
    fip = await visible_fip(service, ctx, fip_id)
    service.enforce(ctx, "network:owner", fip.project_id)

    async def work(session):
        row = await session.get(FloatingIp, fip_id)
        await session.execute(delete(Tag).where(Tag.resource_id == fip_id))
        await session.delete(row)
        await session.flush()
        port = await session.get(Port, row.floating_port_id)
        if port is not None:
            await delete_port_row(session, port)

    await write_retrying(service.db, work)
    await service.changed()
    await service.ports_changed([fip.port_id])
    return no_content()


routes = [
    Route("/v2.0/floatingips", list_fips, methods=["GET"]),
    Route("/v2.0/floatingips", create_fip, methods=["POST"]),
    Route("/v2.0/floatingips/{fip_id}", show_fip, methods=["GET"]),
    Route("/v2.0/floatingips/{fip_id}", update_fip, methods=["PUT"]),
    Route("/v2.0/floatingips/{fip_id}", delete_fip, methods=["DELETE"]),
]
