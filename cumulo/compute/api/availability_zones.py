"""Availability zones of the compute services (api-ref: Availability zones
(os-availability-zone)). A zone is available while one of its services is enabled."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.db import utcnow
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json
from cumulo.compute.api.services import is_up, wire_binary
from cumulo.compute.models import ComputeService
from cumulo.compute.scheduler.claims import COMPUTE_BINARY

INTERNAL_ZONE = "internal"


async def _zones(request: Request) -> tuple[dict[str, list[ComputeService]], list[str]]:
    """Services by zone, and the zones that are available (in Nova's order: sorted)."""
    async with compute_of(request).db.read() as s:
        services = list(await s.scalars(select(ComputeService).order_by(ComputeService.host)))
    by_zone: dict[str, list[ComputeService]] = {}
    for svc in services:
        zone = svc.availability_zone if svc.binary == COMPUTE_BINARY else INTERNAL_ZONE
        by_zone.setdefault(zone, []).append(svc)
    available = sorted(
        zone for zone, members in by_zone.items() if any(not m.disabled for m in members)
    )
    return by_zone, available


async def list_zones(request: Request) -> Response:
    """GET /os-availability-zone: every zone with whether it is available."""
    await authorize(request, "compute:availability_zones:list")
    by_zone, available = await _zones(request)
    zones = [
        {"zoneName": zone, "zoneState": {"available": zone in available}, "hosts": None}
        for zone in available + sorted(set(by_zone) - set(available))
        if zone != INTERNAL_ZONE
    ]
    return json({"availabilityZoneInfo": zones})


async def list_zones_detail(request: Request) -> Response:
    """GET /os-availability-zone/detail (admin): the hosts and services of each zone."""
    await authorize(request, "compute:availability_zones:detail")
    by_zone, available = await _zones(request)
    now = utcnow()
    zones: list[dict[str, Any]] = []
    for zone in available:
        hosts: dict[str, dict[str, Any]] = {}
        for svc in by_zone[zone]:
            hosts.setdefault(svc.host, {})[wire_binary(svc.binary)] = {
                "available": not svc.disabled and is_up(request, svc, now),
                "active": not svc.disabled,
                "updated_at": wire.timestamp(svc.last_seen_up or svc.updated_at),
            }
        zones.append({"zoneName": zone, "zoneState": {"available": True}, "hosts": hosts})
    for zone in sorted(set(by_zone) - set(available)):
        zones.append({"zoneName": zone, "zoneState": {"available": False}, "hosts": None})
    return json({"availabilityZoneInfo": zones})


routes = [
    Route("/v2.1/os-availability-zone", list_zones, methods=["GET"]),
    Route("/v2.1/os-availability-zone/detail", list_zones_detail, methods=["GET"]),
]
