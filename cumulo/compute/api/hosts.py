"""/os-hosts (admin), below microversion 2.43: the hosts of the compute services, a
host's resources, enabling or disabling its compute service (api-ref: Hosts
(os-hosts) (DEPRECATED))."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound, NotImplementedYet
from cumulo.common.openapi import describes
from cumulo.compute.api.common import authorize, compute_of, json
from cumulo.compute.api.proxy import require_below
from cumulo.compute.api.wire import mapping, reject_unknown
from cumulo.compute.models import ComputeNode, ComputeService, Instance
from cumulo.compute.scheduler.claims import COMPUTE_BINARY

REMOVED_AT = (2, 43)
_SWITCH = {"enable": True, "disable": False}


async def _context(request: Request):
    require_below(request, REMOVED_AT)
    return await authorize(request, "compute:hosts")


def _topic(service: ComputeService) -> str:
    return "compute" if service.binary == COMPUTE_BINARY else service.topic or service.binary


async def list_hosts(request: Request) -> Response:
    """GET /os-hosts?zone=: one row per service (its host, topic and zone)."""
    await _context(request)
    zone = request.query_params.get("zone")
    async with compute_of(request).db.read() as s:
        services = list(await s.scalars(select(ComputeService).order_by(ComputeService.id)))
    hosts = [
        {"host_name": svc.host, "service": _topic(svc), "zone": svc.availability_zone}
        for svc in services
        if not zone or svc.availability_zone == zone
    ]
    return json({"hosts": hosts})


async def _compute_service(s, host: str) -> ComputeService:
    service = await s.scalar(
        select(ComputeService).where(
            ComputeService.host == host, ComputeService.binary == COMPUTE_BINARY
        )
    )
    if service is None:
        raise NotFound(f"Compute host {host} could not be found.")
    return service


def _resource(host: str, project: str, cpu: int, memory_mb: int, disk_gb: int) -> dict[str, Any]:
    return {
        "resource": {
            "host": host,
            "project": project,
            "cpu": cpu,
            "memory_mb": memory_mb,
            "disk_gb": disk_gb,
        }
    }


def _sums(nodes: list[ComputeNode], *columns: str) -> list[int]:
    return [sum(getattr(n, column) for n in nodes) for column in columns]


async def show_host(request: Request) -> Response:
    """GET /os-hosts/{host}: (total), (used_now), (used_max), then each project's use."""
    await _context(request)
    host = request.path_params["host_name"]
    async with compute_of(request).db.read() as s:
        await _compute_service(s, host)
        nodes = list(await s.scalars(select(ComputeNode).where(ComputeNode.host == host)))
        instances = list(
            await s.scalars(
                select(Instance).where(Instance.host == host, Instance.deleted.is_(False))
            )
        )
    if not nodes:
        raise NotFound(f"Compute host {host} could not be found.")
    totals = [0, 0, 0]
    by_project: dict[str, list[int]] = {}
    for inst in instances:
        use = [
            inst.vcpus,
            inst.memory_mb,
            inst.flavor.get("root_gb", 0) + inst.flavor.get("ephemeral_gb", 0),
        ]
        project = by_project.setdefault(inst.project_id, [0, 0, 0])
        for i, amount in enumerate(use):
            totals[i] += amount
            project[i] += amount
    resources = [
        _resource(host, "(total)", *_sums(nodes, "vcpus", "memory_mb", "local_gb")),
        _resource(
            host, "(used_now)", *_sums(nodes, "vcpus_used", "memory_mb_used", "local_gb_used")
        ),
        _resource(host, "(used_max)", *totals),
        *(_resource(host, project, *use) for project, use in sorted(by_project.items())),
    ]
    return json({"host": resources})


def _switch(body: dict[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in _SWITCH:
        raise BadRequest(
            f"Invalid input for field/attribute {field}. Value: {value}. "
            f"{value!r} is not one of ['enable', 'disable']"
        )
    return _SWITCH[value.strip().lower()]


@describes(
    statuses={501: "No virt driver here has a host maintenance mode."},
)
async def update_host(request: Request) -> Response:
    """PUT /os-hosts/{host}: `status` enables or disables the host's compute service;
    `maintenance_mode` needs driver support no driver here has (501, as libvirt's)."""
    await _context(request)
    host = request.path_params["host_name"]
    body = mapping(await json_body(request))
    reject_unknown(body, {"status", "maintenance_mode"})
    enabled = _switch(body, "status")
    maintenance = _switch(body, "maintenance_mode")
    if enabled is None and maintenance is None:
        raise BadRequest("'status' or 'maintenance_mode' needed for host update")
    service = compute_of(request)
    async with service.db.write() as s:
        record = await _compute_service(s, host)
        if maintenance is not None:
            raise NotImplementedYet("Virt driver does not implement host maintenance mode.")
        if enabled is not None:
            record.disabled = not enabled
            record.disabled_reason = None
            record.updated_at = utcnow()
    return json({"host": host, "status": "enabled" if enabled else "disabled"})


@describes(statuses={501: "No virt driver here powers hosts."})
async def host_power_action(request: Request) -> Response:
    """GET /os-hosts/{host}/startup|shutdown|reboot: no driver here powers hosts (501,
    as Nova's libvirt driver answers)."""
    await _context(request)
    async with compute_of(request).db.read() as s:
        await _compute_service(s, request.path_params["host_name"])
    raise NotImplementedYet("Virt driver does not implement host power management.")


routes = [
    Route("/v2.1/os-hosts", list_hosts, methods=["GET"]),
    Route("/v2.1/os-hosts/{host_name}", show_host, methods=["GET"]),
    Route("/v2.1/os-hosts/{host_name}", update_host, methods=["PUT"]),
    Route("/v2.1/os-hosts/{host_name}/startup", host_power_action, methods=["GET"]),
    Route("/v2.1/os-hosts/{host_name}/shutdown", host_power_action, methods=["GET"]),
    Route("/v2.1/os-hosts/{host_name}/reboot", host_power_action, methods=["GET"]),
]
