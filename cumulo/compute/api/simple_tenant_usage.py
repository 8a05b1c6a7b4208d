"""/os-simple-tenant-usage: what each project's servers used over a period, in hours
of vCPUs, memory and disk (api-ref: Usage reports (os-simple-tenant-usage))."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest
from cumulo.compute.api.common import authorize, compute_of, json
from cumulo.compute.models import Instance

_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")


def _when(raw: str | None) -> datetime:
    if not raw:
        return utcnow()
    for fmt in _FORMATS:
        try:
            return datetime.strptime(raw, fmt)
        except ValueError:
            continue
    raise BadRequest("Datetime is in invalid format")


def _period(request: Request) -> tuple[datetime, datetime, bool]:
    q = request.query_params
    start, stop = _when(q.get("start")), _when(q.get("end"))
    if not start < stop:
        raise BadRequest("Invalid start time. The start time cannot occur after the end time.")
    return start, stop, q.get("detailed") == "1"


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _hours(inst: Instance, start: datetime, stop: datetime) -> float:
    """Hours of the period the server ran (launched, not yet terminated)."""
    if inst.launched_at is None or inst.launched_at > stop:
        return 0.0
    if inst.terminated_at is not None and inst.terminated_at < start:
        return 0.0
    end = min(stop, inst.terminated_at) if inst.terminated_at else stop
    return (end - max(inst.launched_at, start)).total_seconds() / 3600.0


def _server_usage(inst: Instance, hours: float, now: datetime) -> dict[str, Any]:
    flavor = inst.flavor or {}
    ended = inst.terminated_at
    return {
        "instance_id": inst.uuid,
        "name": inst.display_name,
        "tenant_id": inst.project_id,
        "hours": hours,
        "memory_mb": flavor.get("memory_mb", inst.memory_mb),
        "local_gb": flavor.get("root_gb", 0) + flavor.get("ephemeral_gb", 0),
        "vcpus": flavor.get("vcpus", inst.vcpus),
        "flavor": flavor.get("name", ""),
        "started_at": _time(inst.launched_at),
        "ended_at": _time(ended),
        "state": "terminated" if ended else inst.vm_state,
        "uptime": int(((ended or now) - inst.launched_at).total_seconds())
        if inst.launched_at
        else 0,
    }


async def _usages(
    request: Request, start: datetime, stop: datetime, detailed: bool, project: str | None
) -> list[dict[str, Any]]:
    """One summary per project with servers active in the period (deleted ones too)."""
    query = select(Instance).where(
        or_(Instance.terminated_at.is_(None), Instance.terminated_at > start),
        Instance.launched_at < stop,
    )
    if project is not None:
        query = query.where(Instance.project_id == project)
    async with compute_of(request).db.read() as s:
        instances = list(await s.scalars(query.order_by(Instance.id)))
    now = utcnow()
    summaries: dict[str, dict[str, Any]] = {}
    for inst in instances:
        usage = _server_usage(inst, _hours(inst, start, stop), now)
        summary = summaries.setdefault(
            inst.project_id,
            {
                "tenant_id": inst.project_id,
                **({"server_usages": []} if detailed else {}),
                "total_local_gb_usage": 0,
                "total_vcpus_usage": 0,
                "total_memory_mb_usage": 0,
                "total_hours": 0,
                "start": _time(start),
                "stop": _time(stop),
            },
        )
        summary["total_local_gb_usage"] += usage["local_gb"] * usage["hours"]
        summary["total_vcpus_usage"] += usage["vcpus"] * usage["hours"]
        summary["total_memory_mb_usage"] += usage["memory_mb"] * usage["hours"]
        summary["total_hours"] += usage["hours"]
        if detailed:
            summary["server_usages"].append(usage)
    return list(summaries.values())


async def list_usages(request: Request) -> Response:
    await authorize(request, "compute:usage:list")
    start, stop, detailed = _period(request)
    return json({"tenant_usages": await _usages(request, start, stop, detailed, None)})


async def show_usage(request: Request) -> Response:
    project = request.path_params["tenant_id"]
    await authorize(request, "compute:usage:show", {"project_id": project})
    start, stop, _ = _period(request)
    found = await _usages(request, start, stop, True, project)
    return json({"tenant_usage": found[0] if found else {}})


routes = [
    Route("/v2.1/os-simple-tenant-usage", list_usages, methods=["GET"]),
    Route("/v2.1/os-simple-tenant-usage/{tenant_id}", show_usage, methods=["GET"]),
]
