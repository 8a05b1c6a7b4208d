"""Hypervisors and their statistics (api-ref: Hypervisors (os-hypervisors)).

A hypervisor is a compute node; its state and status are its compute service's.
Ids are integers before 2.53 and UUIDs from 2.53 (which also brings the
hypervisor_hostname_pattern and with_servers query parameters).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound
from cumulo.common.rpc import RemoteError, RpcTimeout
from cumulo.compute.api import wire
from cumulo.compute.api.common import (
    authorize,
    compute_of,
    json,
    limit_and_marker,
    next_link,
    version,
)
from cumulo.compute.api.services import is_up, service_id
from cumulo.compute.models import ComputeNode, ComputeService, Instance
from cumulo.compute.scheduler.claims import COMPUTE_BINARY

LOG = logging.getLogger(__name__)


class _Hosts:
    """The compute services and non-deleted servers of the nodes being shown."""

    def __init__(self, services: dict[str, ComputeService], now: datetime) -> None:
        self.services = services
        self.now = now
        self.servers: dict[str, list[dict[str, str]]] = {}
        self.busy: dict[str, int] = {}

    @classmethod
    async def load(cls, s: AsyncSession, with_servers: bool) -> _Hosts:
        services = {
            svc.host: svc
            for svc in await s.scalars(
                select(ComputeService).where(ComputeService.binary == COMPUTE_BINARY)
            )
        }
        hosts = cls(services, utcnow())
        rows = await s.execute(
            select(Instance.node, Instance.display_name, Instance.uuid, Instance.task_state).where(
                Instance.deleted.is_(False), Instance.node.is_not(None)
            )
        )
        for node, name, uuid, task_state in rows:
            if with_servers:
                hosts.servers.setdefault(node, []).append({"name": name, "uuid": uuid})
            if task_state is not None:
                hosts.busy[node] = hosts.busy.get(node, 0) + 1
        return hosts


def _node_id(request: Request, node: ComputeNode) -> int | str:
    return node.uuid if version(request) >= (2, 53) else node.id


def _summary(request: Request, node: ComputeNode, hosts: _Hosts) -> dict[str, Any]:
    service = hosts.services.get(node.host)
    return {
        "id": _node_id(request, node),
        "hypervisor_hostname": node.hypervisor_hostname,
        "state": "up" if is_up(request, service, hosts.now) else "down",
        "status": "disabled" if service is None or service.disabled else "enabled",
    }


def _usage(node: ComputeNode, busy: int) -> dict[str, int]:
    """Nova's resource tracker counts the host's reserved memory and disk as used."""
    memory_used = node.memory_mb_used + node.reserved_host_memory_mb
    disk_used = node.local_gb_used + node.reserved_host_disk_gb
    return {
        "vcpus": node.vcpus,
        "memory_mb": node.memory_mb,
        "local_gb": node.local_gb,
        "vcpus_used": node.vcpus_used,
        "memory_mb_used": memory_used,
        "local_gb_used": disk_used,
        "free_ram_mb": node.memory_mb - memory_used,
        "free_disk_gb": node.local_gb - disk_used,
        "current_workload": busy,
        "running_vms": node.running_vms,
        "disk_available_least": node.local_gb - disk_used,
    }


def _detail(
    request: Request,
    node: ComputeNode,
    hosts: _Hosts,
    with_servers: bool,
    uptimes: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    body = _summary(request, node, hosts)
    service = hosts.services.get(node.host)
    body.update(
        hypervisor_type=node.hypervisor_type,
        hypervisor_version=node.hypervisor_version,
        host_ip=node.host_ip,
        service={
            "host": node.host,
            "id": service_id(request, service) if service else None,
            "disabled_reason": service.disabled_reason if service else None,
        },
    )
    if version(request) < (2, 88):
        # 2.88 dropped the usage figures (often misleading, Nova says) and cpu_info...
        body.update(_usage(node, hosts.busy.get(node.hypervisor_hostname, 0)))
        cpu_info = node.cpu_info or {}
        body["cpu_info"] = cpu_info if version(request) >= (2, 28) else jsonlib.dumps(cpu_info)
    else:
        # ...and shows the host's uptime here instead of at /uptime.
        body["uptime"] = (uptimes or {}).get(node.host)
    _add_servers(request, body, node, hosts, with_servers)
    return body


async def _uptimes(
    request: Request, ctx: RequestContext, nodes: list[ComputeNode], hosts: _Hosts
) -> dict[str, str | None]:
    """2.88: each up host's `uptime` line, asked of its compute service (none for a
    host that is down or does not answer, as Nova)."""
    if version(request) < (2, 88):
        return {}
    service = compute_of(request)
    up = sorted({n.host for n in nodes if is_up(request, hosts.services.get(n.host), hosts.now)})

    async def one(host: str) -> str | None:
        try:
            return await service.compute_rpc.get_host_uptime(service.rpc_context(ctx), host)
        except (RemoteError, RpcTimeout) as exc:
            LOG.info("no uptime from %s: %s", host, exc)
            return None

    return dict(zip(up, await asyncio.gather(*(one(h) for h in up)), strict=True))


def _add_servers(
    request: Request, body: dict[str, Any], node: ComputeNode, hosts: _Hosts, wanted: bool
) -> None:
    """`servers` when asked for; before 2.75 only when there are some."""
    servers = hosts.servers.get(node.hypervisor_hostname, [])
    if wanted and (servers or version(request) >= (2, 75)):
        body["servers"] = servers


def _with_servers(request: Request) -> bool:
    raw = request.query_params.get("with_servers")
    if raw is None or version(request) < (2, 53):
        return False
    return wire.query_boolean("with_servers", raw)


async def _list(request: Request, detail: bool) -> Response:
    ctx = await authorize(request, "compute:hypervisors")
    v = version(request)
    with_servers = _with_servers(request)
    pattern = request.query_params.get("hypervisor_hostname_pattern") if v >= (2, 53) else None
    paged = v >= (2, 33)
    limit, marker = limit_and_marker(request) if paged else (None, None)
    if pattern is not None and (marker is not None or "limit" in request.query_params):
        raise BadRequest(
            "Paging over hypervisors with the hypervisor_hostname_pattern query "
            "parameter is not supported."
        )
    query = select(ComputeNode).order_by(ComputeNode.id)
    if pattern is not None:
        query = query.where(ComputeNode.hypervisor_hostname.contains(pattern, autoescape=True))
    async with compute_of(request).db.read() as s:
        if marker is not None:
            column = ComputeNode.uuid if v >= (2, 53) else ComputeNode.id
            value: Any = marker if v >= (2, 53) else (int(marker) if marker.isdecimal() else None)
            after = await s.scalar(select(ComputeNode.id).where(column == value))
            if after is None:
                raise BadRequest(f"marker [{marker}] not found")
            query = query.where(ComputeNode.id > after)
        if limit is not None:
            query = query.limit(limit + 1)
        nodes = list((await s.scalars(query)).all())
        hosts = await _Hosts.load(s, with_servers)
    if pattern is not None and not nodes:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    more = limit is not None and len(nodes) > limit
    nodes = nodes[:limit] if limit is not None else nodes
    uptimes = await _uptimes(request, ctx, nodes, hosts) if detail else {}
    views = []
    for node in nodes:
        if detail:
            views.append(_detail(request, node, hosts, with_servers, uptimes))
        else:
            view = _summary(request, node, hosts)
            _add_servers(request, view, node, hosts, with_servers)
            views.append(view)
    body: dict[str, Any] = {"hypervisors": views}
    if more and nodes:
        collection = "os-hypervisors/detail" if detail else "os-hypervisors"
        body["hypervisors_links"] = next_link(
            request, collection, str(_node_id(request, nodes[-1]))
        )
    return json(body)


async def list_hypervisors(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_hypervisors_detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def _find(s: AsyncSession, request: Request, raw_id: str) -> ComputeNode:
    if version(request) >= (2, 53):
        if not wire.is_uuid(raw_id):
            raise BadRequest(f"Invalid uuid {raw_id}")
        node = await s.scalar(select(ComputeNode).where(ComputeNode.uuid == raw_id))
    else:
        node = await s.get(ComputeNode, int(raw_id)) if raw_id.isdecimal() else None
    if node is None:
        raise NotFound(f"Hypervisor with ID '{raw_id}' could not be found.")
    return node


async def show_hypervisor(request: Request) -> Response:
    ctx = await authorize(request, "compute:hypervisors")
    with_servers = _with_servers(request)
    async with compute_of(request).db.read() as s:
        node = await _find(s, request, request.path_params["hypervisor_id"])
        hosts = await _Hosts.load(s, with_servers)
    uptimes = await _uptimes(request, ctx, [node], hosts)
    return json({"hypervisor": _detail(request, node, hosts, with_servers, uptimes)})


async def hypervisor_uptime(request: Request) -> Response:
    """GET /os-hypervisors/{id}/uptime: the host's `uptime` line, asked of its compute
    service (400 when that service is down, as Nova's ComputeServiceUnavailable); gone
    from 2.88 (show and detail have it)."""
    if version(request) >= (2, 88):
        raise NotFound("The resource could not be found.")
    ctx = await authorize(request, "compute:hypervisors")
    service = compute_of(request)
    async with service.db.read() as s:
        node = await _find(s, request, request.path_params["hypervisor_id"])
        hosts = await _Hosts.load(s, False)
    view = _summary(request, node, hosts)
    if view["state"] != "up":
        raise BadRequest(f"Compute service of {node.host} is unavailable at this time.")
    view["uptime"] = await service.compute_rpc.get_host_uptime(service.rpc_context(ctx), node.host)
    return json({"hypervisor": view})


async def _matching(request: Request, with_servers: bool) -> Response:
    """Before 2.53: GET /os-hypervisors/{pattern}/search and /{pattern}/servers."""
    if version(request) >= (2, 53):
        raise NotFound("The resource could not be found.")
    await authorize(request, "compute:hypervisors")
    pattern = request.path_params["pattern"]
    async with compute_of(request).db.read() as s:
        nodes = list(
            (
                await s.scalars(
                    select(ComputeNode)
                    .where(ComputeNode.hypervisor_hostname.contains(pattern, autoescape=True))
                    .order_by(ComputeNode.id)
                )
            ).all()
        )
        hosts = await _Hosts.load(s, with_servers)
    if not nodes:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    views = []
    for node in nodes:
        view = _summary(request, node, hosts)
        _add_servers(request, view, node, hosts, with_servers)
        views.append(view)
    return json({"hypervisors": views})


async def search_hypervisors(request: Request) -> Response:
    return await _matching(request, with_servers=False)


async def hypervisor_servers(request: Request) -> Response:
    return await _matching(request, with_servers=True)


async def hypervisor_statistics(request: Request) -> Response:
    """GET /os-hypervisors/statistics: the sums over every compute node (gone from 2.88)."""
    if version(request) >= (2, 88):
        raise NotFound("The resource could not be found.")
    await authorize(request, "compute:hypervisors")
    async with compute_of(request).db.read() as s:
        nodes = list((await s.scalars(select(ComputeNode))).all())
        busy = await s.scalar(
            select(func.count(Instance.id)).where(
                Instance.deleted.is_(False),
                Instance.node.is_not(None),
                Instance.task_state.is_not(None),
            )
        )
    totals: dict[str, int] = {}
    for node in nodes:
        for key, value in _usage(node, 0).items():
            totals[key] = totals.get(key, 0) + value
    stats = {
        "count": len(nodes),
        **{
            key: totals.get(key, 0)
            for key in (
                "vcpus",
                "memory_mb",
                "local_gb",
                "vcpus_used",
                "memory_mb_used",
                "local_gb_used",
                "free_ram_mb",
                "free_disk_gb",
                "running_vms",
                "disk_available_least",
            )
        },
        "current_workload": busy or 0,
    }
    return json({"hypervisor_statistics": stats})


routes = [
    Route("/v2.1/os-hypervisors", list_hypervisors, methods=["GET"]),
    Route("/v2.1/os-hypervisors/detail", list_hypervisors_detail, methods=["GET"]),
    Route("/v2.1/os-hypervisors/statistics", hypervisor_statistics, methods=["GET"]),
    Route("/v2.1/os-hypervisors/{hypervisor_id}", show_hypervisor, methods=["GET"]),
    Route("/v2.1/os-hypervisors/{hypervisor_id}/uptime", hypervisor_uptime, methods=["GET"]),
    Route("/v2.1/os-hypervisors/{pattern}/search", search_hypervisors, methods=["GET"]),
    Route("/v2.1/os-hypervisors/{pattern}/servers", hypervisor_servers, methods=["GET"]),
]
