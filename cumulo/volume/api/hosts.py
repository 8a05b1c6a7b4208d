"""os-hosts (admin): the volume services' hosts, and what one cinder-volume host
(host@backend) holds per project (Block Storage v3 api-ref, "Hosts extension")."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.db import utcnow
from cumulo.common.faults import NotFound
from cumulo.volume.api.common import authorize, isotime, json, service_of
from cumulo.volume.models import Snapshot, Volume, VolumeServiceRow
from cumulo.volume.scheduler import VOLUME_BINARY, is_up

COUNTS = ("volume_count", "total_volume_gb", "snapshot_count", "total_snapshot_gb")


async def list_hosts(request: Request) -> Response:
    await authorize(request, "volume_extension:hosts")
    service = service_of(request)
    zone = request.query_params.get("zone")
    query = select(VolumeServiceRow).order_by(VolumeServiceRow.host, VolumeServiceRow.binary)
    if zone:
        query = query.where(VolumeServiceRow.availability_zone == zone)
    async with service.db.read() as session:
        rows = list(await session.scalars(query))
    now, down_time = utcnow(), service.config.volume.service_down_time
    hosts = [
        {
            "host_name": row.host,
            "service": row.binary,
            "zone": row.availability_zone,
            "service-status": "available"
            if is_up(row.updated_at, now, down_time)
            else "unavailable",
            "service-state": "disabled" if row.disabled else "enabled",
            "last-update": isotime(row.updated_at),
        }
        for row in rows
    ]
    return json({"hosts": hosts})


def _resource(host: str, project: str, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "resource": {
            "host": host,
            "project": project,
            "volume_count": str(counts["volume_count"]),
            "total_volume_gb": str(counts["total_volume_gb"]),
            "snapshot_count": str(counts["snapshot_count"]),
            "total_snapshot_gb": str(counts["total_snapshot_gb"]),
        }
    }


async def show_host(request: Request) -> Response:
    """The volumes and snapshots on an enabled cinder-volume host: "(total)" first,
    then one entry per project."""
    await authorize(request, "volume_extension:hosts")
    host = request.path_params["host"]
    async with service_of(request).db.read() as session:
        enabled = await session.scalar(
            select(VolumeServiceRow.id).where(
                VolumeServiceRow.host == host,
                VolumeServiceRow.binary == VOLUME_BINARY,
                VolumeServiceRow.disabled.is_(False),
            )
        )
        if enabled is None:
            raise NotFound(f"Host {host} could not be found.")
        on_host = or_(Volume.host == host, Volume.host.startswith(f"{host}#"))
        volumes = await session.execute(
            select(
                Volume.project_id, func.count(Volume.id), func.coalesce(func.sum(Volume.size), 0)
            )
            .where(on_host)
            .group_by(Volume.project_id)
        )
        snapshots = await session.execute(
            select(
                Snapshot.project_id,
                func.count(Snapshot.id),
                func.coalesce(func.sum(Snapshot.size), 0),
            )
            .join(Volume, Volume.id == Snapshot.volume_id)
            .where(on_host)
            .group_by(Snapshot.project_id)
        )
        per_project: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
        for project, count, size in volumes:
            per_project[project].update(volume_count=int(count), total_volume_gb=int(size))
        for project, count, size in snapshots:
            per_project[project].update(snapshot_count=int(count), total_snapshot_gb=int(size))
    total = {k: sum(c[k] for c in per_project.values()) for k in COUNTS}
    body = [_resource(host, "(total)", total)]
    body += [_resource(host, project, c) for project, c in sorted(per_project.items())]
    return json({"host": body})


routes = [
    Route("/v3/os-hosts", list_hosts, methods=["GET"]),
    Route("/v3/os-hosts/{host}", show_host, methods=["GET"]),
]
