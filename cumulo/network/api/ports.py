"""/v2.0/ports (api-ref: Ports; binding, port-security, allowed-address-pairs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import ApiError, BadRequest, Conflict
from cumulo.common.openapi import describes, wrapped
from cumulo.network import ipam, rbac
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
    to_list,
    to_str,
)
from cumulo.network.api.networks import visible_network
from cumulo.network.api.port_attrs import address_pairs, dhcp_opts
from cumulo.network.binding import (
    UNBOUND,
    HostAgent,
    Segment,
    host_agents,
    segments_of,
    vif_binding,
)
from cumulo.network.core import ACCESS_SHARED, NetworkService, new_id
from cumulo.network.errors import (
    InvalidInput,
    PortNotFound,
    PortSecurityAndIPRequiredForSecurityGroups,
    SecurityGroupNotFound,
)
from cumulo.network.ipam_plan import Fallback, PortPlan, batcher_of, plan_port
from cumulo.network.models import (
    FloatingIp,
    IpAllocation,
    Network,
    Port,
    PortBinding,
    PortSecurityGroup,
    SecurityGroup,
    Tag,
)
from cumulo.network.ports import (
    ROUTER_OWNERS,
    delete_port_row,
    fixed_ips_of,
    new_port,
    resolve_fixed_ips,
    set_fixed_ips,
    touch,
    write_retrying,
)

BINDING = ("binding:host_id", "binding:profile", "binding:vnic_type")
UPDATABLE = (
    "name", "description", "admin_state_up", "fixed_ips", "device_id", "device_owner",
    "security_groups", "allowed_address_pairs", "port_security_enabled", "extra_dhcp_opts",
    *BINDING,
)  # fmt: skip
CREATE_ATTRS = (*UPDATABLE, "network_id", "mac_address")
VNIC_TYPES = ("normal", "direct", "macvtap", "baremetal", "direct-physical", "virtio-forwarder")


def render_port(
    p: Port,
    fixed_ips: list[dict],
    groups: list[str],
    tags: list[str],
    admin: bool,
    vif_type: str = UNBOUND,
    vif_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = {
        **standard(p, tags),
        "network_id": p.network_id,
        "admin_state_up": p.admin_state_up,
        "mac_address": p.mac_address,
        "fixed_ips": fixed_ips,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "status": p.status,
        "security_groups": groups,
        "allowed_address_pairs": p.allowed_address_pairs,
        "extra_dhcp_opts": p.extra_dhcp_opts,
        "port_security_enabled": p.port_security_enabled,
        "ip_allocation": "immediate",
        "propagate_uplink_status": False,
    }
    if admin:
        body["binding:host_id"] = p.host
        body["binding:profile"] = p.binding_profile
        body["binding:vnic_type"] = p.vnic_type
        body["binding:vif_type"] = vif_type if p.host else UNBOUND
        body["binding:vif_details"] = (vif_details or {}) if p.host else {}
    return body


async def render_ports(
    service: NetworkService, ctx: RequestContext, ports: list[Port]
) -> list[dict[str, Any]]:
    ids = [p.id for p in ports]
    groups: dict[str, list[str]] = {i: [] for i in ids}
    async with service.db.read() as session:
        ips = await fixed_ips_of(session, ids)
        for chunk in range(0, len(ids), 500):
            rows = await session.scalars(
                select(PortSecurityGroup).where(
                    PortSecurityGroup.port_id.in_(ids[chunk : chunk + 500])
                )
            )
            for row in rows:
                groups[row.port_id].append(row.security_group_id)
        tags = await tags_of(session, ids)
    # Binding attributes: admins, and the compute service that binds ports.
    admin = service.policy.check("network:get_binding", ctx)
    agents, segments = await _bindings(service, ports) if admin else ({}, {})
    return [
        render_port(
            p,
            ips[p.id],
            sorted(groups[p.id]),
            tags[p.id],
            admin,
            *vif_binding(agents, p.network_id, segments.get(p.network_id), p.host),
        )
        for p in ports
    ]


async def _bindings(
    service: NetworkService, ports: list[Port]
) -> tuple[dict[str, HostAgent], dict[str, Segment]]:
    """What the bound ports' binding:vif_type needs: their hosts' agents and their
    networks' segments (cumulo.network.binding)."""
    bound = [p for p in ports if p.host]
    if not bound:
        return {}, {}
    agents = await host_agents(service, {p.host for p in bound})
    return agents, await segments_of(service, {p.network_id for p in bound})


def ports_visible(service: NetworkService, ctx: RequestContext):
    if service.is_admin(ctx) or service.is_service(ctx):
        return True
    own_networks = select(Network.id).where(Network.project_id == ctx.project_id)
    return or_(Port.project_id == ctx.project_id, Port.network_id.in_(own_networks))


async def visible_port(service: NetworkService, ctx: RequestContext, port_id: str) -> Port:
    async with service.db.read() as session:
        port = await session.scalar(
            select(Port).where(Port.id == port_id, ports_visible(service, ctx))
        )
    if port is None:
        raise PortNotFound(f"Port {port_id} could not be found.")
    return port


async def resolve_security_groups(
    session, service: NetworkService, ctx: RequestContext, project_id: str, ids: Any
) -> list[str]:
    ids = [to_str("security_groups", i) for i in to_list("security_groups", ids)]
    for sg_id in set(ids):
        sg = await session.get(SecurityGroup, sg_id)
        usable = sg is not None and (
            sg.project_id == project_id
            or service.is_admin(ctx)
            or await rbac.has_access(session, "security_group", sg_id, project_id, ACCESS_SHARED)
        )
        if not usable:
            raise SecurityGroupNotFound(f"Security group {sg_id} does not exist")
    return sorted(set(ids))


def _status(port: Port) -> str:
    """Neutron's port status: a guest's port is ACTIVE only once the network agent of
    the host it is bound to has wired it (ports_up); the compute host waits for that
    before it plugs the guest in, so a bound port is not made ACTIVE here."""
    if not port.admin_state_up:
        return "DOWN"
    if port.device_owner.startswith("network:"):
        return "ACTIVE"
    return port.status if port.host else "DOWN"


def _apply(service: NetworkService, ctx: RequestContext, port: Port, a: dict[str, Any]) -> None:
    apply_standard(port, a)
    if "admin_state_up" in a:
        port.admin_state_up = to_bool("admin_state_up", a["admin_state_up"])
    if "device_id" in a:
        port.device_id = to_str("device_id", a["device_id"] or "")
    if "device_owner" in a:
        port.device_owner = to_str("device_owner", a["device_owner"] or "")
    if "port_security_enabled" in a:
        port.port_security_enabled = to_bool("port_security_enabled", a["port_security_enabled"])
    if "allowed_address_pairs" in a:
        port.allowed_address_pairs = address_pairs(a["allowed_address_pairs"] or [])
    if "extra_dhcp_opts" in a:
        port.extra_dhcp_opts = dhcp_opts(port.extra_dhcp_opts or [], a["extra_dhcp_opts"] or [])
    if any(k in a for k in BINDING):
        service.enforce(ctx, "network:set_binding")
        if "binding:host_id" in a:
            host = to_str("binding:host_id", a["binding:host_id"] or "")
            if host != port.host:
                # DOWN until the new host's agent has wired it (it reports ports_up).
                port.status = "DOWN"
            port.host = host
        if "binding:profile" in a:
            if not isinstance(a["binding:profile"] or {}, dict):
                raise InvalidInput("Invalid input for binding:profile: an object is required.")
            port.binding_profile = a["binding:profile"] or {}
        if "binding:vnic_type" in a:
            if a["binding:vnic_type"] not in VNIC_TYPES:
                raise InvalidInput(f"Invalid input for binding:vnic_type: {a['binding:vnic_type']}")
            port.vnic_type = a["binding:vnic_type"]
    if not port.port_security_enabled and port.allowed_address_pairs:
        raise Conflict(
            "Port Security must be enabled in order to have allowed address pairs on a port."
        )
    port.status = _status(port)


def _check_fixed_ip_policy(service, ctx, network: Network, fixed_ips: Any) -> None:
    """Only an admin or the network's owner picks addresses (Neutron's default policy)."""
    if fixed_ips is None:
        return
    to_list("fixed_ips", fixed_ips)
    if any(isinstance(f, dict) and "ip_address" in f for f in fixed_ips):
        service.enforce(ctx, "network:owner", network.project_id)


async def _set_groups(session, port: Port, groups: list[str], *, new: bool = False) -> None:
    if groups and not port.port_security_enabled:
        raise PortSecurityAndIPRequiredForSecurityGroups(
            "Port security must be enabled and port must have an IP address in order to use "
            "security groups."
        )
    if not new:
        await session.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id))
    for sg in groups:
        session.add(PortSecurityGroup(port_id=port.id, security_group_id=sg))


async def list_ports(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        query = select(Port).where(ports_visible(service, ctx))
        # The filters clients use most, narrowed in SQL before rendering.
        for attr in ("network_id", "device_id", "device_owner"):
            if attr in request.query_params:
                query = query.where(getattr(Port, attr).in_(request.query_params.getlist(attr)))
        ports = list(await session.scalars(query))
    return list_response(request, "ports", await render_ports(service, ctx, ports))


@describes(body=wrapped("port", CREATE_ATTRS), resource="port")
async def create_port(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    bodies, bulk = await create_bodies(request, "port", "ports", CREATE_ATTRS)
    # One port is written on the hot path when it can be (see _prepare_port).
    prepared = [await _prepare_port(service, ctx, a, hot=not bulk) for a in bodies]
    result = None
    if not bulk and prepared[0][1] is not None:
        result = await prepared[0][1]()
    if result is not None:
        made = [result]
    else:

        async def work(session):
            return [await write(session) for write, _ in prepared]

        made = await write_retrying(service.db, work)
    await service.changed()
    # Rendered from what the transaction wrote: a new port has no tags yet.
    binding = service.policy.check("network:get_binding", ctx)
    made_ports = [port for port, _, _ in made]
    agents, segments = await _bindings(service, made_ports) if binding else ({}, {})
    rendered = [
        render_port(
            port,
            ips,
            groups,
            [],
            binding,
            *vif_binding(agents, port.network_id, segments.get(port.network_id), port.host),
        )  # fmt: skip
        for port, ips, groups in made
    ]
    return created(request, "port", "ports", rendered, bulk)


NewPort = tuple[Port, list[dict], list[str]]


async def _prepare_port(
    service: NetworkService, ctx: RequestContext, a: dict[str, Any], *, hot: bool
) -> tuple[
    Callable[[AsyncSession], Awaitable[NewPort]], Callable[[], Awaitable[NewPort | None]] | None
]:
    """Check what a new port asks for. Returns the step that writes it in a transaction,
    and (hot, and nothing but defaults asked for) the hot path's write, which answers
    None when the port must take the transaction instead."""
    if "network_id" not in a:
        raise BadRequest("Failed to parse request. Required attribute 'network_id' not specified")
    project_id = owner_of(service, ctx, a)
    # The hot path (no fixed IPs or MAC asked for) plans the port while it reads the
    # network: see cumulo.network.ipam_plan.
    plan = None
    simple = a.get("fixed_ips") is None and a.get("mac_address") is None
    if hot and simple:
        plan = await plan_port(service, ctx, str(a["network_id"]), project_id)
        network = plan.network
    else:
        network = await visible_network(service, ctx, str(a["network_id"]))
    service.enforce(ctx, "network:owner", project_id)
    if network.project_id != project_id and not network.shared:
        async with service.db.read() as session:
            shared = await rbac.has_access(
                session, "network", network.id, project_id, ACCESS_SHARED
            )
        if not shared:
            service.enforce(ctx, "network:admin_only")
    _check_fixed_ip_policy(service, ctx, network, a.get("fixed_ips"))
    mac = a.get("mac_address")
    if mac is not None:
        if not ipam.valid_mac(mac):
            raise InvalidInput(
                f"Invalid input for mac_address. Reason: '{mac}' is not a valid MAC."
            )
        mac = mac.lower()
    probe = Port(
        status="DOWN",
        admin_state_up=True,
        device_id="",
        device_owner="",
        host="",
        port_security_enabled=network.port_security_enabled,
        allowed_address_pairs=[],
        extra_dhcp_opts=[],
        binding_profile={},
        vnic_type="normal",
    )
    _apply(service, ctx, probe, {k: v for k, v in a.items() if k not in ("name", "description")})
    attrs = {
        k: getattr(probe, k)
        for k in (
            "admin_state_up",
            "device_id",
            "device_owner",
            "host",
            "port_security_enabled",
            "allowed_address_pairs",
            "extra_dhcp_opts",
            "binding_profile",
            "vnic_type",
            "status",
        )  # fmt: skip
    }

    name = to_str("name", a.get("name", ""))
    description = to_str("description", a.get("description", ""))

    async def write(session: AsyncSession) -> NewPort:
        await service.check_quota(session, project_id, "port")
        port = await new_port(
            session,
            network,
            project_id=project_id,
            fixed_ips=a.get("fixed_ips"),
            mac_address=mac,
            name=name,
            description=description,
            **attrs,
        )
        groups = await groups_of(session, port)
        await _set_groups(session, port, groups, new=True)
        ips = (await fixed_ips_of(session, [port.id]))[port.id]
        return port, ips, groups

    async def groups_of(session, port: Port) -> list[str]:
        if "security_groups" in a:
            return await resolve_security_groups(
                session, service, ctx, project_id, a["security_groups"] or []
            )
        if port.port_security_enabled and not port.device_owner.startswith("network:"):
            return [await service.default_security_group(session, project_id)]
        return []

    async def write_hot() -> NewPort | None:
        assert plan is not None
        groups = None
        if "security_groups" in a:
            # Read before the write (a group deleted meanwhile fails the batch's foreign
            # key, and the long way answers); any refusal is left to the long way, so the
            # answer is the same whichever path the port takes.
            try:
                async with service.db.read() as session:
                    groups = await resolve_security_groups(
                        session, service, ctx, project_id, a["security_groups"] or []
                    )
            except ApiError:
                return None
        return await _create_planned(service, plan, project_id, name, description, attrs, groups)

    return write, (write_hot if plan is not None else None)


async def _create_planned(
    service: NetworkService,
    plan: PortPlan,
    project_id: str,
    name: str,
    description: str,
    attrs: dict[str, Any],
    requested_groups: list[str] | None,
) -> tuple[Port, list[dict], list[str]] | None:
    """The hot path: addresses and the default group (or the groups asked for) read
    before the write, the port written in a batch (cumulo.network.ipam_plan); None when
    it must go the long way."""
    port = Port(
        id=new_id(),
        network_id=plan.network.id,
        project_id=project_id,
        mac_address=ipam.random_mac(),
        name=name,
        description=description,
        **attrs,
    )
    if requested_groups is not None:
        if requested_groups and not port.port_security_enabled:
            return None  # refused the long way
        groups = requested_groups
    else:
        wants_group = port.port_security_enabled and not port.device_owner.startswith("network:")
        if wants_group and plan.default_group is None:
            return None  # the project's first port: its default group is made in the write
        groups = [plan.default_group] if wants_group and plan.default_group else []
    try:
        ips = await batcher_of(service).write(plan, port, groups)
    except Fallback:
        return None
    ips.sort(key=lambda f: ipam.address_order(f["ip_address"]))
    return port, ips, groups


async def show_port(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    port = await visible_port(service, ctx, request.path_params["port_id"])
    return show(request, "port", (await render_ports(service, ctx, [port]))[0])


@describes(body=wrapped("port", UPDATABLE), resource="port")
async def update_port(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    port_id = request.path_params["port_id"]
    a = await resource_body(request, "port", UPDATABLE)
    a.pop("project_id", None)
    port = await visible_port(service, ctx, port_id)
    service.enforce(ctx, "network:update_port", port.project_id)
    # Binding a port to a host is a step of a build (or a move) under way: it goes
    # before the waiting writes that start more work (other tenants' networks, routers).
    first = "binding:host_id" in a
    if not a.keys() & {"fixed_ips", "security_groups"}:
        # Attributes of the port row only (a binding, a device): one call on the writer.
        port = await service.db.run_write_retrying(
            _update_port_row, service, ctx, port_id, a, first=first
        )
        await service.changed()
        return show(request, "port", (await render_ports(service, ctx, [port]))[0])

    async def work(session):
        row = await session.get(Port, port_id)
        if row is None:
            raise PortNotFound(f"Port {port_id} could not be found.")
        network = await session.get(Network, row.network_id)
        _check_fixed_ip_policy(service, ctx, network, a.get("fixed_ips"))
        host = row.host
        _apply(service, ctx, row, a)
        if row.host != host:
            await session.execute(_inactive_binding_of(row))
        if "fixed_ips" in a:
            # Addresses the port keeps are not "in use" by someone else.
            await session.execute(delete(IpAllocation).where(IpAllocation.port_id == port_id))
            await session.flush()
            ips = await resolve_fixed_ips(
                session,
                network,
                a["fixed_ips"] or [],
                device_owner=row.device_owner,
                mac=row.mac_address,
            )
            await set_fixed_ips(session, row, ips)
        if "security_groups" in a:
            groups = await resolve_security_groups(
                session, service, ctx, row.project_id, a["security_groups"] or []
            )
            await _set_groups(session, row, groups)
        elif not row.port_security_enabled:
            _check_no_groups(await session.scalar(_groups_held(port_id)))
        touch(row)
        return row

    port = await write_retrying(service.db, work, first=first)
    await service.changed()
    return show(request, "port", (await render_ports(service, ctx, [port]))[0])


def _update_port_row(
    session: Session, service: NetworkService, ctx: RequestContext, port_id: str, a: dict
) -> Port:
    """update_port's transaction when only the port's own row changes (run_write)."""
    row = session.get(Port, port_id)
    if row is None:
        raise PortNotFound(f"Port {port_id} could not be found.")
    host = row.host
    _apply(service, ctx, row, a)
    if row.host != host:
        session.execute(_inactive_binding_of(row))
    if not row.port_security_enabled:
        _check_no_groups(session.scalar(_groups_held(port_id)))
    touch(row)
    return row


def _inactive_binding_of(row: Port):
    """Bound to a new host now: an inactive binding that host had is the active one."""
    return delete(PortBinding).where(PortBinding.port_id == row.id, PortBinding.host == row.host)


def _groups_held(port_id: str):
    return select(PortSecurityGroup.port_id).where(PortSecurityGroup.port_id == port_id).limit(1)


def _check_no_groups(held: str | None) -> None:
    if held:
        raise Conflict(
            "Port has security group associated. Cannot disable port security or ip "
            "address until security group is removed"
        )


async def delete_port(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    port_id = request.path_params["port_id"]
    port = await visible_port(service, ctx, port_id)
    service.enforce(ctx, "network:delete_port", port.project_id)
    if port.device_owner in ROUTER_OWNERS:
        raise Conflict(
            f"Port {port_id} cannot be deleted directly via the port API: has device owner "
            f"{port.device_owner}."
        )

    async def work(session):
        row = await session.get(Port, port_id)
        if row is None:
            raise PortNotFound(f"Port {port_id} could not be found.")
        await session.execute(
            update(FloatingIp)
            .where(FloatingIp.port_id == port_id)
            .values(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")
        )
        await session.execute(delete(Tag).where(Tag.resource_id == port_id))
        await delete_port_row(session, row)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


routes = [
    Route("/v2.0/ports", list_ports, methods=["GET"]),
    Route("/v2.0/ports", create_port, methods=["POST"]),
    Route("/v2.0/ports/{port_id}", show_port, methods=["GET"]),
    Route("/v2.0/ports/{port_id}", update_port, methods=["PUT"]),
    Route("/v2.0/ports/{port_id}", delete_port, methods=["DELETE"]),
]
