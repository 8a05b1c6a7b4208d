"""Manage and unmanage: adopting data a backend already holds as a volume or snapshot,
and letting a volume or snapshot go while its data stays (Block Storage v3 api-ref:
"Volume manage extension (os-volume-manage)", "Snapshot manage extension
(os-snapshot-manage)", "Manageable volumes"/"Manageable snapshots" (3.8+), and a
volume's `os-unmanage` action; a snapshot's is in cumulo.volume.api.snapshots).

A reference is what the backend's driver understands: the file backend takes
`{"source-name": <file name>}` (cumulo.volume.drivers.file). The backend is asked
first (size, readable, not in use, the backend's format): a bad reference is 400 and
nothing is written. Then the row is written (`managing`, shown as `creating`) and the
backend renames the data to it; the volume is `available` when the request returns.
"""

from __future__ import annotations

import json as jsonlib
import uuid
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound, ServiceUnavailable
from cumulo.volume import quotas, states
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    element,
    json,
    page_params,
    parse_bool,
    service_of,
    version,
)
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.api.microversion import fmt
from cumulo.volume.api.snapshots import snapshot_bodies
from cumulo.volume.api.volumes import load_volume, volume_response, volume_type_for
from cumulo.volume.attach import backend_call
from cumulo.volume.models import Snapshot, SnapshotMetadata, Volume, VolumeMetadata
from cumulo.volume.scheduler import (
    VOLUME_BINARY,
    BackendState,
    RequestSpec,
    backend_named,
    backend_states,
    capabilities_filter,
    type_multiattach,
)

REFUSALS = ("InvalidReference",)
VOLUME_KEYS = {
    "description", "availability_zone", "bootable", "volume_type", "name", "host", "ref",
    "metadata",
}  # fmt: skip
SNAPSHOT_KEYS = {"description", "metadata", "name", "volume_id", "ref"}


def _require_3_8(request: Request) -> None:
    if not at_least(request, 3, 8):
        raise NotFound(f"API version {fmt(version(request))} is not supported on this method.")


def _text(spec: dict[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 255):
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}.")
    return value.strip() if isinstance(value, str) else None


def _host_param(request: Request, params: dict[str, Any]) -> str:
    """Cinder's get_cluster_host: the host (clusters from 3.16/3.17 are named, but this
    cloud has none: a cluster names no service)."""
    cluster_version = (3, 17) if "manageable" in request.url.path else (3, 16)
    host, cluster = params.get("host"), params.get("cluster")
    if version(request) >= cluster_version:
        if bool(host) == bool(cluster):
            raise BadRequest(
                "Invalid input received: One and only one of cluster and host must be set."
            )
    elif not host:
        raise BadRequest("Invalid input received: Host field is missing.")
    target = host or cluster
    if not isinstance(target, str) or len(target) > 255:
        raise BadRequest(f"Invalid input for field/attribute host. Value: {target}.")
    return target if host else f"cluster:{target}"


async def _backend(request: Request, host: str, *, missing: str) -> BackendState:
    """The backend a host@backend[#pool] names, up and enabled (Cinder's
    _get_service_by_host_cluster); `missing`: "400" as manage answers an unknown host,
    "404" as the manageable lists do."""
    service = service_of(request)
    async with service.db.read() as session:
        backends = await backend_states(session, service.config.volume.service_down_time)
    backend = backend_named(backends, host)
    if backend is None:
        if missing == "404":
            raise NotFound(f"Service {VOLUME_BINARY} could not be found on host {host}.")
        raise BadRequest(f"Host '{host}' not found")
    if not backend.up or backend.disabled:
        raise BadRequest("Service is unavailable at this time.")
    return backend


def _named_id(ref: Any, prefix: str) -> str | None:
    """The id in a `source-name` of the backend's own naming (volume-<id>), if any."""
    name = ref.get("source-name") if isinstance(ref, dict) else None
    if isinstance(name, str) and name.startswith(prefix):
        candidate = name.removeprefix(prefix)
        try:
            return str(uuid.UUID(candidate))
        except ValueError:
            return None
    return None


# -- volumes -------------------------------------------------------------------------


async def manage_volume(request: Request) -> Response:
    """POST /os-volume-manage (and /manageable_volumes from 3.8)."""
    ctx = await authorize(request, "volume_extension:volume_manage")
    spec = await element(request, "volume")
    allowed = VOLUME_KEYS | ({"cluster"} if at_least(request, 3, 16) else set())
    if set(spec) - allowed:
        raise BadRequest(
            f"Invalid input for field/attribute volume. Additional properties are not "
            f"allowed ({', '.join(sorted(set(spec) - allowed))} were unexpected)."
        )
    if "ref" not in spec:
        raise BadRequest("Invalid input for field/attribute volume. 'ref' is a required property.")
    ref = spec["ref"]
    host = _host_param(request, spec)
    name, description = _text(spec, "name"), _text(spec, "description")
    zone = _text(spec, "availability_zone")
    metadata = check_metadata(spec.get("metadata") or {})
    # null is the default (non-bootable): openstackclient sends it without --bootable.
    bootable = spec.get("bootable") or False
    if not isinstance(bootable, bool):
        bootable = bool(parse_bool(str(bootable), "bootable"))
    type_ref = _text(spec, "volume_type")
    service = service_of(request)
    backend = await _backend(request, host, missing="400")
    if zone and zone != backend.availability_zone:
        raise BadRequest(f"Invalid input received: Availability zone '{zone}' is invalid.")
    already = _named_id(ref, "volume-")
    if already:
        async with service.db.read() as session:
            if await session.get(Volume, already) is not None:
                raise BadRequest(
                    "Invalid volume: Unable to manage existing volume. The volume is already "
                    "managed"
                )
    async with service.db.read() as session:
        vtype, specs = await _volume_type(session, request, ctx, type_ref)
    if not capabilities_filter(backend, RequestSpec(0, extra_specs=specs)):
        raise BadRequest(
            f"Invalid volume type: backend {backend.host} does not match the extra specs of "
            f"volume type {vtype.name}."
        )
    rpc = service.volume_rpc
    size = await backend_call(
        rpc.manage_existing_get_size(ctx.to_dict(), backend.pool_host, ref, "volume"), REFUSALS
    )
    volume_id = str(uuid.uuid4())
    async with service.db.write() as session:
        await quotas.check(
            session, service.config.volume.quota, ctx.project_id or "", volumes=1,
            gigabytes=size, size=size,
        )  # fmt: skip
        session.add(
            Volume(
                id=volume_id,
                project_id=ctx.project_id,
                user_id=ctx.user_id,
                name=name,
                description=description,
                size=size,
                status=states.MANAGING,
                availability_zone=zone or backend.availability_zone,
                type_id=vtype.id,
                host=backend.pool_host,
                bootable=bootable,
                multiattach=type_multiattach(specs),
            )
        )
        await session.flush()
        for key, value in metadata.items():
            session.add(VolumeMetadata(volume_id=volume_id, kind="user", key=key, value=value))
    try:
        size = await backend_call(
            rpc.manage_existing(ctx.to_dict(), backend.pool_host, volume_id, ref), REFUSALS
        )
    except BaseException as exc:
        await _abandon(service, Volume, volume_id, exc, states.ERROR_MANAGING)
        raise
    async with service.db.write() as session:
        row = await session.get(Volume, volume_id)
        if row is not None and row.status == states.MANAGING:
            row.status, row.size, row.updated_at = states.AVAILABLE, size, utcnow()
    # Cinder answers with its legacy detail view whatever the microversion.
    return accepted(await volume_response(request, ctx, volume_id, extended=False, legacy=True))


async def _abandon(service: Any, model: Any, row_id: str, exc: BaseException, error: str) -> None:
    """A manage the backend refused or failed leaves no row (the data keeps its name);
    one it did not answer may have adopted the data: the row stays, in error."""
    async with service.db.write() as session:
        row = await session.get(model, row_id)
        if row is None:
            return
        if isinstance(exc, ServiceUnavailable):
            row.status, row.updated_at = error, utcnow()
        else:
            await session.delete(row)


async def _volume_type(
    session: Any, request: Request, ctx: RequestContext, ref: str | None
) -> tuple[Any, dict[str, str]]:
    try:
        return await volume_type_for(session, request, ctx, ref)
    except NotFound:
        raise BadRequest(
            f"Invalid volume type: Cannot find requested '{ref}' volume type"
        ) from None


async def unmanage_volume(request: Request, volume_id: str, _args: Any) -> Response:
    """os-unmanage (admin): the volume leaves Block Storage, its data stays on the
    backend; the checks are delete's (not attached, migrating, or with snapshots)."""
    ctx, _ = await load_volume(request, volume_id, "volume_extension:volume_unmanage")
    service = service_of(request)
    async with service.db.write() as session:
        volume = await session.scalar(
            select(Volume).where(Volume.id == volume_id).with_for_update()
        )
        if volume is None:
            raise NotFound(f"Volume {volume_id} could not be found.")
        snapshots = await session.scalar(
            select(func.count(Snapshot.id)).where(Snapshot.volume_id == volume_id)
        )
        if (
            volume.status not in states.DELETABLE
            or volume.attach_status == states.ATTACHED
            or states.is_migrating(volume.migration_status)
            or volume.group_id
            or snapshots
        ):
            raise BadRequest(
                f"Invalid volume: Volume status must be {' or '.join(states.DELETABLE)} and "
                "must not be migrating, attached, belong to a group, have snapshots, awaiting "
                f"a transfer, or be disassociated from snapshots after volume transfer "
                f"(status: {volume.status})."
            )
        if not volume.host:  # never placed: no data anywhere
            await session.delete(volume)
            return accepted()
        volume.status, volume.updated_at = states.UNMANAGING, utcnow()
        host = volume.host
    await service.volume_rpc.unmanage_volume(ctx.to_dict(), host, volume_id)
    return accepted()


# -- snapshots ------------------------------------------------------------------------


async def manage_snapshot(request: Request) -> Response:
    """POST /os-snapshot-manage (and /manageable_snapshots from 3.8): a snapshot of
    `volume_id` adopting the data `ref` names on the volume's backend."""
    ctx = await authorize(request, "snapshot_extension:snapshot_manage")
    spec = await element(request, "snapshot")
    if set(spec) - SNAPSHOT_KEYS:
        raise BadRequest(
            "Invalid input for field/attribute snapshot. Additional properties are not "
            f"allowed ({', '.join(sorted(set(spec) - SNAPSHOT_KEYS))} were unexpected)."
        )
    for key in ("ref", "volume_id"):
        if key not in spec:
            raise BadRequest(
                f"Invalid input for field/attribute snapshot. '{key}' is a required property."
            )
    if not isinstance(spec["volume_id"], str):
        raise BadRequest(
            f"Invalid input for field/attribute volume_id. Value: {spec['volume_id']}."
        )
    ref = spec["ref"]
    name, description = _text(spec, "name"), _text(spec, "description")
    metadata = check_metadata(spec.get("metadata") or {})
    _, volume = await load_volume(request, spec["volume_id"])
    if not volume.host:
        raise NotFound(f"Service {VOLUME_BINARY} could not be found on host {volume.host}.")
    backend = await _backend(request, volume.host, missing="404")
    # Cinder's create_snapshot_in_db with force: an in-use volume too, not a moving one.
    states.require_volume_status(volume.status, states.SNAPSHOTTABLE_FORCED, "manage a snapshot")
    states.require_not_migrating(volume.id, volume.migration_status, "snapshot")
    service = service_of(request)
    already = _named_id(ref, "snapshot-")
    if already:
        async with service.db.read() as session:
            if await session.get(Snapshot, already) is not None:
                raise BadRequest(
                    "Invalid snapshot: Unable to manage existing snapshot. The snapshot is "
                    "already managed"
                )
    rpc = service.volume_rpc
    size = await backend_call(
        rpc.manage_existing_get_size(ctx.to_dict(), backend.pool_host, ref, "snapshot"), REFUSALS
    )
    snapshot_id = str(uuid.uuid4())
    async with service.db.write() as session:
        await quotas.check(
            session, service.config.volume.quota, volume.project_id, snapshots=1, gigabytes=size
        )
        session.add(
            Snapshot(
                id=snapshot_id,
                volume_id=volume.id,
                project_id=volume.project_id,
                user_id=ctx.user_id,
                name=name,
                description=description,
                size=size,
                status=states.MANAGING,
            )
        )
        await session.flush()
        for key, value in metadata.items():
            session.add(SnapshotMetadata(snapshot_id=snapshot_id, key=key, value=value))
    try:
        size = await backend_call(
            rpc.manage_existing_snapshot(ctx.to_dict(), backend.pool_host, snapshot_id, ref),
            REFUSALS,
        )
    except BaseException as exc:
        await _abandon(service, Snapshot, snapshot_id, exc, states.ERROR)
        raise
    async with service.db.write() as session:
        row = await session.get(Snapshot, snapshot_id)
        if row is not None and row.status == states.MANAGING:
            row.status, row.size, row.updated_at = states.AVAILABLE, size, utcnow()
        snap = row
    assert snap is not None
    body = await snapshot_bodies(request, [snap], extended=False, legacy=True)
    return accepted({"snapshot": body[0]})


# -- what a backend holds ---------------------------------------------------------------


def _sorted_page(request: Request, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cinder's paginate_entries_list: sorted by reference and/or size (default
    reference, desc), after the marker (a JSON reference), offset, limit."""
    params = request.query_params
    pairs: list[tuple[str, str]] = []
    if params.get("sort"):
        for item in params["sort"].split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
    else:
        pairs.append((params.get("sort_key", "reference"), params.get("sort_dir", "desc")))
    bad_keys = sorted({k for k, _ in pairs} - {"reference", "size"})
    if bad_keys:
        raise BadRequest(f"Invalid sort keys passed: {', '.join(bad_keys)}")
    bad_dirs = sorted({d for _, d in pairs} - {"asc", "desc"})
    if bad_dirs:
        raise BadRequest(f"Invalid sort dirs passed: {', '.join(bad_dirs)}")

    def value(entry: dict[str, Any], key: str) -> Any:
        found = entry[key]
        return sorted(found.values())[0] if isinstance(found, dict) else found

    ordered = list(entries)
    for key, direction in reversed(pairs):
        ordered.sort(key=lambda e, k=key: value(e, k), reverse=direction == "desc")
    limit, marker, offset = page_params(request, service_of(request).config.volume.list_limit)
    start = 0
    if marker:
        try:
            wanted = jsonlib.loads(marker)
        except ValueError:
            raise BadRequest(
                f"Invalid input received: marker {marker} can not be analysed, please use "
                "json like format"
            ) from None
        start = next((i + 1 for i, e in enumerate(ordered) if e["reference"] == wanted), -1)
        if start < 0:
            raise BadRequest(f"Invalid input received: marker not found: {marker}")
    return ordered[start + offset : start + offset + limit]


_SUMMARY = ("reference", "size", "safe_to_manage")


async def _manageable(request: Request, kind: str, detail: bool) -> Response:
    scope = "volume_extension" if kind == "volume" else "snapshot_extension"
    ctx = await authorize(request, f"{scope}:list_manageable")
    host = _host_param(request, dict(request.query_params))
    backend = await _backend(request, host, missing="404")
    call = service_of(request).volume_rpc.get_manageable(ctx.to_dict(), backend.pool_host, kind)
    entries = _sorted_page(request, await backend_call(call))
    if not detail:
        keys = (*_SUMMARY, "source_reference") if kind == "snapshot" else _SUMMARY
        entries = [{k: e[k] for k in keys} for e in entries]
    return json({f"manageable-{kind}s": entries})


def _endpoint(kind: str, detail: bool, since_3_8: bool):
    """The handler of one of the eight paths: the `os-*-manage` extension forms and their
    3.8 `manageable_*` twins; a collection lists (GET) or manages (POST)."""
    manage = manage_volume if kind == "volume" else manage_snapshot

    async def endpoint(request: Request) -> Response:
        if since_3_8:
            _require_3_8(request)
        if request.method == "POST":
            return await manage(request)
        return await _manageable(request, kind, detail)

    return endpoint


routes = [
    Route(
        f"/v3/{path}{'/detail' if detail else ''}",
        _endpoint(kind, detail, since_3_8=path.startswith("manageable")),
        methods=["GET"] if detail else ["GET", "POST"],
    )
    for kind in ("volume", "snapshot")
    for path in (f"os-{kind}-manage", f"manageable_{kind}s")
    for detail in (False, True)
]
