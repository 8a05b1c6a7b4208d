"""/v2.0/ports/{port_id}/bindings (api-ref: Port Binding, Port Bindings Extended).

A compute port has one ACTIVE binding (the port's own `binding:host_id`, `vnic_type`
and `profile`) and any number of INACTIVE ones on other hosts (cumulo.network.models.
PortBinding): a live migration binds the port to its destination inactive while the
guest still runs on the source, and activates that binding once the guest has
arrived. Only the active binding is wired and filtered by its host's agent.

Each binding's `vif_type`/`vif_details` are worked out as the port's own are
(cumulo.network.binding); a binding that would fail on its host is refused (Neutron's
PortBindingError). Admins and the compute service see them; only the compute service
(role service) changes them, as Neutron's policy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import BadRequest
from cumulo.network.api.common import (
    caller,
    list_response,
    no_content,
    resource_body,
    service_of,
    show,
    to_str,
)
from cumulo.network.api.ports import VNIC_TYPES, visible_port
from cumulo.network.binding import BINDING_FAILED, host_agents, segments_of, vif_binding
from cumulo.network.core import NetworkService
from cumulo.network.errors import (
    HTTPNotFound,
    InvalidInput,
    PortBindingAlreadyActive,
    PortBindingAlreadyExists,
    PortBindingError,
    PortBindingNotFound,
    PortNotFound,
)
from cumulo.network.models import Port, PortBinding
from cumulo.network.ports import touch, write_retrying

ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"
# Neutron binds only compute (and shared filesystem) ports to several hosts.
MULTI_BINDING_OWNERS = ("compute:", "manila:")
CREATE_ATTRS = ("host", "vnic_type", "profile")


async def _port(service: NetworkService, ctx, port_id: str, rule: str) -> Port:
    """The port, when the caller may see it, may do this, and it may have several
    bindings (404, 403, 400 as Neutron)."""
    port = await visible_port(service, ctx, port_id)
    service.enforce(ctx, rule)
    if not port.device_owner.startswith(MULTI_BINDING_OWNERS):
        raise BadRequest(
            f"Bad port request: Invalid port {port_id}. Operation only valid on compute and "
            "shared filesystem ports."
        )
    return port


async def _vifs(
    service: NetworkService, network_id: str, hosts: list[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """binding:vif_type and vif_details of a port of the network bound on each host."""
    agents = await host_agents(service, hosts)
    segment = (await segments_of(service, [network_id])).get(network_id)
    return {host: vif_binding(agents, network_id, segment, host) for host in hosts}


def render_binding(
    host: str,
    vnic_type: str,
    profile: dict[str, Any] | None,
    status: str,
    vif: tuple[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "host": host,
        "vif_type": vif[0],
        "vif_details": vif[1],
        "vnic_type": vnic_type,
        "profile": profile or {},
        "status": status,
    }


async def _bindings(service: NetworkService, port: Port) -> list[dict[str, Any]]:
    """The port's bindings: the active one (host "" while the port is unbound, as
    Neutron's), then the inactive ones."""
    async with service.db.read() as session:
        inactive = list(
            await session.scalars(select(PortBinding).where(PortBinding.port_id == port.id))
        )
    vifs = await _vifs(service, port.network_id, [port.host, *(b.host for b in inactive)])
    active = render_binding(
        port.host, port.vnic_type, port.binding_profile, ACTIVE, vifs[port.host]
    )
    return [active] + [
        render_binding(b.host, b.vnic_type, b.profile, INACTIVE, vifs[b.host]) for b in inactive
    ]


async def list_bindings(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    port_id = request.path_params["port_id"]
    port = await visible_port(service, ctx, port_id)
    if not service.policy.check("network:get_binding", ctx):
        # Neutron leaves out what policy hides.
        return list_response(request, "bindings", [], id_key="host")
    await _port(service, ctx, port_id, "network:get_binding")
    return list_response(request, "bindings", await _bindings(service, port), id_key="host")


async def show_binding(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    port_id, host = request.path_params["port_id"], request.path_params["host"]
    port = await visible_port(service, ctx, port_id)
    if not service.policy.check("network:get_binding", ctx):
        raise HTTPNotFound("The resource could not be found.")
    await _port(service, ctx, port_id, "network:get_binding")
    for binding in await _bindings(service, port):
        if binding["host"] == host:
            return show(request, "binding", binding)
    raise PortBindingNotFound(f"Binding for port {port_id} for host {host} could not be found.")


async def _port_row(session, port_id: str) -> Port:
    """The port's row in a write transaction (deleted since the request began: 404)."""
    row = await session.get(Port, port_id)
    if row is None:
        raise PortNotFound(f"Port {port_id} could not be found.")
    return row


async def _inactive_binding(session, port_id: str, host: str) -> PortBinding:
    binding = await session.get(PortBinding, (port_id, host))
    if binding is None:
        raise PortBindingNotFound(f"Binding for port {port_id} for host {host} could not be found.")
    return binding


def _binding_attrs(a: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    a.pop("project_id", None)
    if "host" not in a:
        raise BadRequest("Failed to parse request. Required attribute 'host' not specified")
    host = to_str("host", a["host"])
    if not host:
        raise InvalidInput("Invalid input for host. Reason: '' is not a valid host.")
    vnic_type = a.get("vnic_type", "normal")
    if vnic_type not in VNIC_TYPES:
        raise InvalidInput(f"Invalid input for vnic_type: {vnic_type}")
    profile = a.get("profile") or {}
    if not isinstance(profile, dict):
        raise InvalidInput("Invalid input for profile: an object is required.")
    return host, vnic_type, profile


async def create_binding(request: Request) -> Response:
    """An INACTIVE binding of the port on `host` (the port keeps its active one)."""
    service, ctx = service_of(request), await caller(request)
    port_id = request.path_params["port_id"]
    a = await resource_body(request, "binding", CREATE_ATTRS)
    port = await _port(service, ctx, port_id, "network:manage_bindings")
    host, vnic_type, profile = _binding_attrs(a)
    vif = (await _vifs(service, port.network_id, [host]))[host]
    exists = PortBindingAlreadyExists(f"Binding for port {port_id} on host {host} already exists.")

    async def work(session) -> None:
        row = await _port_row(session, port_id)
        if row.host == host or await session.get(PortBinding, (port_id, host)) is not None:
            raise exists
        if vif[0] == BINDING_FAILED:
            # ML2 could not bind it there: nothing is kept.
            raise PortBindingError(
                f"Binding for port {port_id} on host {host} could not be created or updated."
            )
        session.add(PortBinding(port_id=port_id, host=host, vnic_type=vnic_type, profile=profile))

    await write_retrying(service.db, work)
    return show(request, "binding", render_binding(host, vnic_type, profile, INACTIVE, vif), 201)


async def activate_binding(request: Request) -> Response:
    """The binding on `host` becomes the port's active one (its `binding:host_id`
    follows); the one active before becomes INACTIVE. The port is DOWN until the new
    host's agent has wired it."""
    service, ctx = service_of(request), await caller(request)
    port_id, host = request.path_params["port_id"], request.path_params["host"]
    await _port(service, ctx, port_id, "network:manage_bindings")

    async def work(session) -> Port:
        row = await _port_row(session, port_id)
        if row.host == host:
            raise PortBindingAlreadyActive(
                f"Binding for port {port_id} on host {host} is already active."
            )
        binding = await _inactive_binding(session, port_id, host)
        previous = (row.host, row.vnic_type, row.binding_profile)
        row.host, row.vnic_type, row.binding_profile = host, binding.vnic_type, binding.profile
        await session.delete(binding)
        await session.flush()
        if previous[0]:
            session.add(
                PortBinding(
                    port_id=port_id, host=previous[0], vnic_type=previous[1], profile=previous[2]
                )
            )
        if not row.device_owner.startswith("network:"):
            row.status = "DOWN"  # until the new host's agent reports it wired
        touch(row)
        return row

    row = await write_retrying(service.db, work)
    await service.changed()
    vif = (await _vifs(service, row.network_id, [host]))[host]
    return show(
        request,
        "binding",
        render_binding(host, row.vnic_type, row.binding_profile, ACTIVE, vif),
    )


async def delete_binding(request: Request) -> Response:
    """Delete the port's binding on `host`; deleting the active one leaves the port
    unbound (Neutron deletes whichever binding the host has)."""
    service, ctx = service_of(request), await caller(request)
    port_id, host = request.path_params["port_id"], request.path_params["host"]
    await _port(service, ctx, port_id, "network:manage_bindings")

    async def work(session) -> bool:
        row = await _port_row(session, port_id)
        if row.host == host:
            row.host, row.vnic_type, row.binding_profile = "", "normal", {}
            row.status = "DOWN"
            touch(row)
            return True
        binding = await _inactive_binding(session, port_id, host)
        await session.delete(binding)
        return False

    if await write_retrying(service.db, work):
        await service.changed()
    return no_content()


routes = [
    Route("/v2.0/ports/{port_id}/bindings", list_bindings, methods=["GET"]),
    Route("/v2.0/ports/{port_id}/bindings", create_binding, methods=["POST"]),
    Route("/v2.0/ports/{port_id}/bindings/{host}", show_binding, methods=["GET"]),
    Route("/v2.0/ports/{port_id}/bindings/{host}", delete_binding, methods=["DELETE"]),
    Route("/v2.0/ports/{port_id}/bindings/{host}/activate", activate_binding, methods=["PUT"]),
]
