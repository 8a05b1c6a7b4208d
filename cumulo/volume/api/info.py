"""Version discovery, availability zones, extensions, limits, quota sets, services
and backend capacity (scheduler-stats)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.auth import request_context
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound, ServiceUnavailable
from cumulo.volume import quotas
from cumulo.volume.api.common import (
    authorize,
    base_url,
    element,
    isotime,
    json,
    parse_bool,
    parse_int,
    service_of,
)
from cumulo.volume.api.microversion import MAX_VERSION, MIN_VERSION, fmt
from cumulo.volume.attach import backend_call
from cumulo.volume.models import (
    QuotaClass,
    QuotaLimit,
    VolumeServiceRow,
    VolumeType,
    VolumeTypeExtraSpec,
)
from cumulo.volume.scheduler import (
    VOLUME_BINARY,
    RequestSpec,
    backend_states,
    capabilities_filter,
    is_up,
)


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
    service = service_of(request)
    async with service.db.read() as session:
        backends = await backend_states(session, service.config.volume.service_down_time)
    zones = {service.config.volume.availability_zone: False}
    for b in backends:
        zones[b.availability_zone] = zones.get(b.availability_zone, False) or b.up
    if not backends:  # no storage host has reported yet: the configured zone
        zones[service.config.volume.availability_zone] = True
    return json(
        {
            "availabilityZoneInfo": [
                {"zoneName": z, "zoneState": {"available": up}} for z, up in sorted(zones.items())
            ]
        }
    )


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
    ("os-hosts", "Hosts"),
    ("qos-specs", "Qos_specs_manage"),
    ("os-volume-transfer", "VolumeTransfer"),
    ("os-quota-class-sets", "QuotaClasses"),
    ("os-volume-type-access", "VolumeTypeAccess"),
    ("os-extended-services", "ExtendedServices"),
    ("scheduler-stats", "Scheduler_stats"),
    ("capabilities", "Capabilities"),
    ("os-volume-manage", "VolumeManage"),
    ("os-volume-unmanage", "VolumeUnmanage"),
    ("os-snapshot-manage", "SnapshotManage"),
    ("os-snapshot-unmanage", "SnapshotUnmanage"),
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
            limit = await quotas.class_limits(session, service.config.volume.quota)
        else:
            limit = await quotas.limits(session, service.config.volume.quota, project_id)
        used = await quotas.usage(session, project_id)
    body: dict[str, Any] = {"id": project_id}
    if parse_bool(request.query_params.get("usage"), "usage") and not defaults:
        for r in limit:
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
    spec = await element(request, "quota_set")
    await authorize(request, "volume_extension:quotas:update", project_id)
    service = service_of(request)
    async with service.db.write() as session:
        values = _quota_values(
            spec, await quotas.class_limits(session, service.config.volume.quota)
        )
        for key, value in values.items():
            await _set_limit(session, QuotaLimit(project_id=project_id, resource=key), value)
    out = await _quota_set(request, project_id, defaults=False)
    out["quota_set"].pop("id", None)
    return json(out)


async def _set_limit(session: Any, row: QuotaLimit | QuotaClass, value: int) -> None:
    """Insert or update a limit row (`row` carries its primary key)."""
    row.hard_limit = value
    await session.merge(row)


def _quota_values(spec: dict[str, Any], known: dict[str, int]) -> dict[str, int]:
    values: dict[str, int] = {}
    for key, raw in spec.items():
        if key in ("id", "tenant_id"):
            continue
        if key not in known:
            raise BadRequest(f"Bad key(s) in quota set: {key}")
        values[key] = parse_int(raw, key, minimum=-1)
    return values


async def show_quota_class(request: Request) -> Response:
    await authorize(request, "volume_extension:quota_classes")
    class_name = request.path_params["class_name"]
    service = service_of(request)
    async with service.db.read() as session:
        limit = await quotas.class_limits(session, service.config.volume.quota, class_name)
    return json({"quota_class_set": {"id": class_name, **limit}})


async def update_quota_class(request: Request) -> Response:
    """PUT os-quota-class-sets/{class}: class "default" changes every project's defaults."""
    class_name = request.path_params["class_name"]
    spec = await element(request, "quota_class_set")
    await authorize(request, "volume_extension:quota_classes:update")
    if len(class_name) > 255:
        raise BadRequest("Invalid input received: quota class name is too long.")
    service = service_of(request)
    async with service.db.write() as session:
        known = await quotas.class_limits(session, service.config.volume.quota, class_name)
        for key, value in _quota_values(spec, known).items():
            await _set_limit(session, QuotaClass(class_name=class_name, resource=key), value)
        await session.flush()
        limit = await quotas.class_limits(session, service.config.volume.quota, class_name)
    return json({"quota_class_set": limit})


async def delete_quotas(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    await authorize(request, "volume_extension:quotas:delete", project_id)
    async with service_of(request).db.write() as session:
        await session.execute(delete(QuotaLimit).where(QuotaLimit.project_id == project_id))
    return Response(status_code=200)


async def services(request: Request) -> Response:
    """os-services: the scheduler(s) and one cinder-volume per backend (host@backend),
    up while their heartbeat is younger than service_down_time."""
    await authorize(request, "volume_extension:services:index")
    service = service_of(request)
    params = request.query_params
    query = select(VolumeServiceRow).order_by(VolumeServiceRow.binary, VolumeServiceRow.host)
    if params.get("binary"):
        query = query.where(VolumeServiceRow.binary == params["binary"])
    if params.get("host"):
        # A host names itself and its backends (host@backend), as in Cinder.
        host = params["host"]
        query = query.where(
            or_(VolumeServiceRow.host == host, VolumeServiceRow.host.startswith(f"{host}@"))
        )
    async with service.db.read() as session:
        rows = list(await session.scalars(query))
    now = utcnow()
    down_time = service.config.volume.service_down_time
    out = []
    for row in rows:
        item: dict[str, Any] = {
            "binary": row.binary,
            "host": row.host,
            "zone": row.availability_zone,
            "status": "disabled" if row.disabled else "enabled",
            "state": "up" if is_up(row.updated_at, now, down_time) else "down",
            "updated_at": isotime(row.updated_at),
            "disabled_reason": row.disabled_reason,
        }
        if row.binary == VOLUME_BINARY:
            item.update(replication_status="disabled", active_backend_id=None, frozen=False)
        out.append(item)
    return json({"services": out})


async def update_service(request: Request) -> Response:
    """PUT os-services/enable|disable|disable-log-reason: a disabled backend gets no new
    volumes from the scheduler; freeze|thaw: only for replicating backends (none here)."""
    await authorize(request, "volume_extension:services:update")
    action = request.path_params["action"]
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("Invalid input received: a body is required.")
    host, binary = body.get("host"), body.get("binary")
    service = service_of(request)
    if action in ("freeze", "thaw"):
        async with service.db.read() as session:
            known = await session.scalar(
                select(VolumeServiceRow.id).where(
                    VolumeServiceRow.binary == VOLUME_BINARY,
                    or_(
                        VolumeServiceRow.host == host, VolumeServiceRow.host.startswith(f"{host}@")
                    ),
                )
            )
        if known is None:
            raise BadRequest(f"Invalid input received: No service found with host {host}.")
        raise BadRequest(
            f"Invalid input received: host {host} has no replicating backend to {action}."
        )
    if action not in ("enable", "disable", "disable-log-reason"):
        raise NotFound("Could not find the requested resource.")
    if not isinstance(host, str) or not isinstance(binary, str):
        raise BadRequest("Invalid input received: 'host' and 'binary' must be specified.")
    reason = body.get("disabled_reason")
    if action == "disable-log-reason" and (
        not isinstance(reason, str) or not reason.strip() or len(reason) > 255
    ):
        raise BadRequest(
            "Invalid input received: Disabled reason contains invalid characters or is too long"
        )
    disabled = action != "enable"
    async with service.db.write() as session:
        row = await session.scalar(
            select(VolumeServiceRow).where(
                VolumeServiceRow.host == host, VolumeServiceRow.binary == binary
            )
        )
        if row is None:
            raise NotFound(f"Service {binary} on host {host} could not be found.")
        row.disabled = disabled
        row.disabled_reason = reason if action == "disable-log-reason" else None
    out: dict[str, Any] = {
        "host": host,
        "service": binary,
        "binary": binary,
        "disabled": disabled,
        "status": "disabled" if disabled else "enabled",
    }
    if action != "disable":
        out["disabled_reason"] = row.disabled_reason
    return json(out)


async def pools(request: Request) -> Response:
    """Backend pools as the scheduler sees them (`/scheduler-stats/get_pools`): the
    backends that are up, with their last report and what is allocated on them."""
    await authorize(request, "volume_extension:capacity")
    service = service_of(request)
    params = request.query_params
    detail = bool(parse_bool(params.get("detail"), "detail"))
    async with service.db.read() as session:
        backends = [
            b
            for b in await backend_states(session, service.config.volume.service_down_time)
            if b.up
        ]
        if params.get("volume_type"):
            vtype = await session.scalar(
                select(VolumeType).where(
                    or_(VolumeType.id == params["volume_type"],
                        VolumeType.name == params["volume_type"])
                )
            )  # fmt: skip
            if vtype is None:
                raise NotFound(f"Volume type {params['volume_type']} could not be found.")
            specs = {
                e.key: e.value
                for e in await session.scalars(
                    select(VolumeTypeExtraSpec).where(VolumeTypeExtraSpec.type_id == vtype.id)
                )
            }
            wanted = RequestSpec(0, extra_specs=specs)
            backends = [b for b in backends if capabilities_filter(b, wanted)]
    if params.get("name"):
        backends = [b for b in backends if b.pool_host == params["name"]]
    return json({"pools": [b.to_pool(detail) for b in backends]})


async def capabilities(request: Request) -> Response:
    """What a backend (host@backend) can be asked through extra specs; the storage host
    answers over the bus."""
    await authorize(request, "volume_extension:capabilities")
    service = service_of(request)
    host = request.path_params["host"]
    async with service.db.read() as session:
        row = await session.scalar(
            select(VolumeServiceRow).where(
                VolumeServiceRow.host == host.partition("#")[0],
                VolumeServiceRow.binary == VOLUME_BINARY,
            )
        )
    if row is None:
        raise NotFound(f"Service {host} could not be found.")
    if not is_up(row.updated_at, utcnow(), service.config.volume.service_down_time):
        raise ServiceUnavailable(f"Service {host} is down.")
    ctx = await request_context(request)
    return json(await backend_call(service.volume_rpc.get_capabilities(ctx.to_dict(), row.host)))


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
    Route("/v3/os-quota-class-sets/{class_name}", show_quota_class, methods=["GET"]),
    Route("/v3/os-quota-class-sets/{class_name}", update_quota_class, methods=["PUT"]),
    Route("/v3/os-services", services, methods=["GET"]),
    Route("/v3/os-services/{action}", update_service, methods=["PUT"]),
    Route("/v3/scheduler-stats/get_pools", pools, methods=["GET"]),
    Route("/v3/capabilities/{host}", capabilities, methods=["GET"]),
]
