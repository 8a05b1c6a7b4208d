"""Version discovery, availability zones, extensions, limits, quota sets, services
and backend capacity (scheduler-stats)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest
from cumulo.volume import quotas
from cumulo.volume.api.common import (
    authorize,
    base_url,
    isotime,
    json,
    parse_bool,
    parse_int,
    service_of,
)
from cumulo.volume.api.microversion import MAX_VERSION, MIN_VERSION, fmt
from cumulo.volume.models import QuotaLimit


def _v3(request: Request) -> dict[str, Any]:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": fmt(MAX_VERSION),
        "min_version": fmt(MIN_VERSION),
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": f"{base_url(request)}/v3/"},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


async def list_versions(request: Request) -> Response:
    # Cinder answers 300 Multiple Choices at the root.
    return json({"versions": [_v3(request)]}, 300)


async def show_v3(request: Request) -> Response:
    return json({"versions": [_v3(request)]})


async def availability_zones(request: Request) -> Response:
    await authorize(request, "volume:get_all")
    zone = service_of(request).config.volume.availability_zone
    return json({"availabilityZoneInfo": [{"zoneName": zone, "zoneState": {"available": True}}]})


EXTENSIONS = [
    ("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes"),
    ("os-vol-tenant-attr", "VolumeTenantAttribute"),
    ("os-vol-host-attr", "VolumeHostAttribute"),
    ("os-vol-image-meta", "VolumeImageMetadata"),
    ("os-volume-actions", "VolumeActions"),
    ("os-admin-actions", "AdminActions"),
    ("os-availability-zone", "AvailabilityZones"),
    ("os-quota-sets", "Quotas"),
    ("os-services", "Services"),
    ("os-types-manage", "TypesManage"),
    ("os-types-extra-specs", "TypesExtraSpecs"),
    ("scheduler-stats", "Scheduler_stats"),
]


async def extensions(request: Request) -> Response:
    await authorize(request, "volume:get_all")
    return json(
        {
            "extensions": [
                {
                    "alias": alias,
                    "description": f"{name} support.",
                    "links": [],
                    "name": name,
                    "updated": "2013-01-01T00:00:00+00:00",
                }
                for alias, name in EXTENSIONS
            ]
        }
    )


async def limits(request: Request) -> Response:
    ctx = await authorize(request, "volume:get_all")
    service = service_of(request)
    async with service.db.read() as session:
        limit = await quotas.limits(session, service.config.volume.quota, ctx.project_id or "")
        used = await quotas.usage(session, ctx.project_id or "")
    absolute = {
        "maxTotalVolumes": limit["volumes"],
        "maxTotalSnapshots": limit["snapshots"],
        "maxTotalVolumeGigabytes": limit["gigabytes"],
        "maxTotalBackups": limit["backups"],
        "maxTotalBackupGigabytes": limit["backup_gigabytes"],
        "totalVolumesUsed": used["volumes"],
        "totalSnapshotsUsed": used["snapshots"],
        "totalGigabytesUsed": used["gigabytes"],
        "totalBackupsUsed": 0,
        "totalBackupGigabytesUsed": 0,
    }
    return json({"limits": {"rate": [], "absolute": absolute}})


async def _quota_set(request: Request, project_id: str, *, defaults: bool) -> dict[str, Any]:
    service = service_of(request)
    async with service.db.read() as session:
        if defaults:
            limit = {r: service.config.volume.quota.get(r, -1) for r in quotas.RESOURCES}
        else:
            limit = await quotas.limits(session, service.config.volume.quota, project_id)
        used = await quotas.usage(session, project_id)
    body: dict[str, Any] = {"id": project_id}
    if parse_bool(request.query_params.get("usage"), "usage") and not defaults:
        for r in quotas.RESOURCES:
            body[r] = {"limit": limit[r], "in_use": used[r], "reserved": 0, "allocated": 0}
    else:
        body.update(limit)
    return {"quota_set": body}


async def show_quotas(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    await authorize(request, "volume_extension:quotas:show", project_id)
    return json(await _quota_set(request, project_id, defaults=False))


async def show_default_quotas(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    await authorize(request, "volume_extension:quotas:show", project_id)
    return json(await _quota_set(request, project_id, defaults=True))


async def update_quotas(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    body = await json_body(request)
    spec = body.get("quota_set") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest("Missing required element 'quota_set' in request body.")
    await authorize(request, "volume_extension:quotas:update", project_id)
    values: dict[str, int] = {}
    for key, raw in spec.items():
        if key in ("id", "tenant_id"):
            continue
        if key not in quotas.RESOURCES:
            raise BadRequest(f"Bad key(s) in quota set: {key}")
        values[key] = parse_int(raw, key, minimum=-1)
    async with service_of(request).db.write() as session:
        for key, value in values.items():
            row = await session.get(QuotaLimit, {"project_id": project_id, "resource": key})
            if row is None:
                session.add(QuotaLimit(project_id=project_id, resource=key, hard_limit=value))
            else:
                row.hard_limit = value
    out = await _quota_set(request, project_id, defaults=False)
    out["quota_set"].pop("id", None)
    return json(out)


async def delete_quotas(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    await authorize(request, "volume_extension:quotas:delete", project_id)
    async with service_of(request).db.write() as session:
        await session.execute(delete(QuotaLimit).where(QuotaLimit.project_id == project_id))
    return Response(status_code=200)


async def services(request: Request) -> Response:
    await authorize(request, "volume_extension:services:index")
    service = service_of(request)
    zone = service.config.volume.availability_zone
    now = isotime(utcnow())
    rows = [
        {"binary": "cinder-scheduler", "host": service.host},
        {"binary": "cinder-volume", "host": f"{service.host}@{service.driver.name}"},
    ]
    out = []
    for row in rows:
        item = {**row, "zone": zone, "status": "enabled", "state": "up",
                "updated_at": now, "disabled_reason": None}  # fmt: skip
        if row["binary"] == "cinder-volume":
            item.update(replication_status="disabled", active_backend_id=None, frozen=False)
        out.append(item)
    binary = request.query_params.get("binary")
    host = request.query_params.get("host")
    out = [
        s for s in out if (not binary or s["binary"] == binary) and (not host or s["host"] == host)
    ]
    return json({"services": out})


async def pools(request: Request) -> Response:
    """Backend capacity as the volume scheduler sees it (`/scheduler-stats/get_pools`)."""
    await authorize(request, "volume_extension:capacity")
    service = service_of(request)
    cap = await service.driver.capacity()
    pool: dict[str, Any] = {"name": service.backend_host}
    if parse_bool(request.query_params.get("detail"), "detail"):
        pool["capabilities"] = {
            "volume_backend_name": service.driver.name,
            "vendor_name": "cumulo",
            "driver_version": "1.0",
            "storage_protocol": "file",
            "total_capacity_gb": cap.total_gb,
            "free_capacity_gb": cap.free_gb,
            "reserved_percentage": 0,
            "thin_provisioning_support": True,
            "timestamp": isotime(utcnow()),
        }
    return json({"pools": [pool]})


routes = [
    Route("/", list_versions, methods=["GET"]),
    Route("/v3", show_v3, methods=["GET"]),
    Route("/v3/", show_v3, methods=["GET"]),
    Route("/v3/os-availability-zone", availability_zones, methods=["GET"]),
    Route("/v3/extensions", extensions, methods=["GET"]),
    Route("/v3/limits", limits, methods=["GET"]),
    Route("/v3/os-quota-sets/{project_id}", show_quotas, methods=["GET"]),
    Route("/v3/os-quota-sets/{project_id}", update_quotas, methods=["PUT"]),
    Route("/v3/os-quota-sets/{project_id}", delete_quotas, methods=["DELETE"]),
    Route("/v3/os-quota-sets/{project_id}/defaults", show_default_quotas, methods=["GET"]),
    Route("/v3/os-services", services, methods=["GET"]),
    Route("/v3/scheduler-stats/get_pools", pools, methods=["GET"]),
]
