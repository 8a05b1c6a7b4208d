"""Snapshots: create, list (summary and detail), show, update, delete, metadata
(Block Storage v3 api-ref, "Volume snapshots")."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.volume import quotas, states
from cumulo.volume.api import views
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    json,
    list_body,
    load_owned,
    owned_page,
    parse_bool,
    run_action,
    service_of,
)
from cumulo.volume.api.metadata import MetadataRoutes, check_metadata
from cumulo.volume.models import Snapshot, SnapshotMetadata, Volume

SORT_COLUMNS = {
    "created_at": Snapshot.created_at,
    "updated_at": Snapshot.updated_at,
    "id": Snapshot.id,
    "name": Snapshot.name,
    "display_name": Snapshot.name,
    "size": Snapshot.size,
    "status": Snapshot.status,
}


async def load_snapshot(
    request: Request, snapshot_id: str, rule: str = "volume:get_snapshot"
) -> tuple[RequestContext, Snapshot]:
    return await load_owned(request, Snapshot, snapshot_id, "Snapshot", "volume:get_snapshot", rule)


async def snapshot_bodies(
    request: Request, snaps: list[Snapshot], *, extended: bool = True, legacy: bool = False
) -> list[dict[str, Any]]:
    meta: dict[str, dict[str, str]] = {s.id: {} for s in snaps}
    if snaps:
        async with service_of(request).db.read() as session:
            for m in await session.scalars(
                select(SnapshotMetadata).where(SnapshotMetadata.snapshot_id.in_(meta))
            ):
                meta[m.snapshot_id][m.key] = m.value
    return [views.snapshot(request, s, meta[s.id], extended=extended, legacy=legacy) for s in snaps]


async def _one(request: Request, snapshot_id: str, status: int = 200) -> Response:
    """The snapshot as create and update answer (without the extended attributes)."""
    async with service_of(request).db.read() as session:
        snap = await session.get(Snapshot, snapshot_id)
    assert snap is not None
    return json({"snapshot": (await snapshot_bodies(request, [snap], extended=False))[0]}, status)


@describes(
    body=wrapped(
        "snapshot",
        ("volume_id", "name", "description", "force", "metadata"),
        required=("volume_id",),
    ),
    resource="snapshot",
)
async def create_snapshot(request: Request) -> Response:
    body = await json_body(request)
    spec = body.get("snapshot") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest("Missing required element 'snapshot' in request body.")
    ctx = await authorize(request, "volume:create_snapshot")
    service = service_of(request)
    if "volume_id" not in spec:
        raise BadRequest(
            "Invalid input for field/attribute snapshot. 'volume_id' is a required property."
        )
    force = parse_bool(str(spec["force"]), "force") if "force" in spec else False
    metadata = check_metadata(spec.get("metadata") or {})
    for key in ("name", "description", "display_name", "display_description"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}.")
    snapshot_id = str(uuid.uuid4())
    async with service.db.write() as session:
        volume = (
            await session.get(Volume, spec["volume_id"])
            if isinstance(spec.get("volume_id"), str)
            else None
        )
        if volume is None or (volume.project_id != ctx.project_id and not service.is_admin(ctx)):
            raise NotFound(f"Volume {spec['volume_id']} could not be found.")
        # 3.66: an in-use volume may be snapshotted without force.
        allowed = (
            states.SNAPSHOTTABLE_FORCED
            if force or at_least(request, 3, 66)
            else states.SNAPSHOTTABLE
        )
        states.require_volume_status(volume.status, allowed, "create a snapshot")
        states.require_not_migrating(volume.id, volume.migration_status, "snapshot")
        await quotas.check(
            session,
            service.config.volume.quota,
            volume.project_id,
            snapshots=1,
            gigabytes=volume.size,
        )
        session.add(
            Snapshot(
                id=snapshot_id,
                volume_id=volume.id,
                project_id=volume.project_id,
                user_id=ctx.user_id,
                name=spec.get("name", spec.get("display_name")),
                description=spec.get("description", spec.get("display_description")),
                size=volume.size,
                status=states.CREATING,
            )
        )
        await session.flush()
        for key, value in metadata.items():
            session.add(SnapshotMetadata(snapshot_id=snapshot_id, key=key, value=value))
    await service.volume_rpc.create_snapshot(ctx.to_dict(), volume.host, snapshot_id, volume.id)
    return await _one(request, snapshot_id, 202)


async def _list(request: Request, detail: bool) -> Response:
    await authorize(request, "volume:get_all_snapshots")
    _, _, snaps, more = await owned_page(
        request, Snapshot, ("name", "status", "volume_id"), SORT_COLUMNS
    )
    page = [s.id for s in snaps]
    items = await snapshot_bodies(request, snaps, extended=detail)
    collection = "snapshots/detail" if detail else "snapshots"
    return json(list_body(request, "snapshots", items, collection, page, more))


async def list_snapshots(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_snapshots_detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def show_snapshot(request: Request) -> Response:
    _, snap = await load_snapshot(request, request.path_params["id"])
    return json({"snapshot": (await snapshot_bodies(request, [snap]))[0]})


async def update_snapshot(request: Request) -> Response:
    body = await json_body(request)
    spec = body.get("snapshot") if isinstance(body, dict) else None
    if not isinstance(spec, dict) or not spec:
        raise BadRequest("Missing required element 'snapshot' in request body.")
    _, snap = await load_snapshot(request, request.path_params["id"], "volume:update_snapshot")
    async with service_of(request).db.write() as session:
        row = await session.get(Snapshot, snap.id)
        assert row is not None
        for field, names in (("name", ("name", "display_name")),
                             ("description", ("description", "display_description"))):  # fmt: skip
            for name in names:
                if name in spec:
                    value = spec[name]
                    if value is not None and (not isinstance(value, str) or len(value) > 255):
                        raise BadRequest(
                            f"Invalid input for field/attribute {name}. Value: {value}."
                        )
                    setattr(row, field, value)
        row.updated_at = utcnow()
    return await _one(request, snap.id)


async def delete_snapshot(request: Request) -> Response:
    ctx, snap = await load_snapshot(request, request.path_params["id"], "volume:delete_snapshot")
    await _delete(request, ctx, snap.id, force=False)
    return accepted()


async def _delete(request: Request, ctx: RequestContext, snapshot_id: str, force: bool) -> None:
    """Delete (force: os-force_delete, whatever the status)."""
    service = service_of(request)
    async with service.db.write() as session:
        row = await session.get(Snapshot, snapshot_id)
        if row is None:
            raise NotFound(f"Snapshot {snapshot_id} could not be found.")
        if not force:
            states.require_snapshot_status(row.status, states.SNAPSHOT_DELETABLE, "delete it")
        row.status, row.updated_at = states.DELETING, utcnow()
        host = await session.scalar(select(Volume.host).where(Volume.id == row.volume_id))
    await service.volume_rpc.delete_snapshot(ctx.to_dict(), host or "", snapshot_id)


async def reset_snapshot_status(request: Request, snapshot_id: str, args: Any) -> Response:
    await load_snapshot(
        request, snapshot_id, "volume_extension:snapshot_admin_actions:reset_status"
    )
    status = args.get("status") if isinstance(args, dict) else None
    if status not in states.SNAPSHOT_STATUSES:
        raise BadRequest(f"Invalid input received: Invalid status '{status}'.")
    async with service_of(request).db.write() as session:
        await session.execute(
            update(Snapshot)
            .where(Snapshot.id == snapshot_id)
            .values(status=status, progress=None, updated_at=utcnow())
        )
    return accepted()


async def update_snapshot_status(request: Request, snapshot_id: str, args: Any) -> Response:
    """os-update_snapshot_status: what a driver outside Cinder (Nova's assisted
    snapshots) reports; only creating -> available/error, deleting -> error_deleting."""
    _, snap = await load_snapshot(
        request, snapshot_id, "snapshot_extension:snapshot_actions:update_snapshot_status"
    )
    status = args.get("status") if isinstance(args, dict) else None
    allowed = states.SNAPSHOT_STATUS_UPDATES.get(snap.status, ())
    if status not in allowed:
        raise BadRequest(
            f"Invalid input received: Snapshot status {snap.status} not allowed to update "
            f"to status {status}."
        )
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if isinstance(args.get("progress"), str):
        values["progress"] = args["progress"]
    async with service_of(request).db.write() as session:
        await session.execute(update(Snapshot).where(Snapshot.id == snapshot_id).values(**values))
    return accepted()


async def force_delete_snapshot(request: Request, snapshot_id: str, _args: Any) -> Response:
    ctx, snap = await load_snapshot(
        request, snapshot_id, "volume_extension:snapshot_admin_actions:force_delete"
    )
    await _delete(request, ctx, snap.id, force=True)
    return accepted()


async def unmanage_snapshot(request: Request, snapshot_id: str, _args: Any) -> Response:
    """os-unmanage on a snapshot (admin): its row goes, its data stays on the backend."""
    ctx, _ = await load_snapshot(request, snapshot_id, "snapshot_extension:snapshot_unmanage")
    service = service_of(request)
    async with service.db.write() as session:
        snap = await session.get(Snapshot, snapshot_id)
        if snap is None:
            raise NotFound(f"Snapshot {snapshot_id} could not be found.")
        if snap.status not in states.SNAPSHOT_DELETABLE or snap.group_snapshot_id:
            raise BadRequest(
                "Invalid snapshot: Snapshot status must be available or error and must not "
                f"be part of a group (status: {snap.status})."
            )
        snap.status, snap.updated_at = states.UNMANAGING, utcnow()
        host = await session.scalar(select(Volume.host).where(Volume.id == snap.volume_id))
    await service.volume_rpc.unmanage_snapshot(ctx.to_dict(), host or "", snapshot_id)
    return accepted()


SNAPSHOT_ACTIONS = {
    "os-reset_status": reset_snapshot_status,
    "os-update_snapshot_status": update_snapshot_status,
    "os-force_delete": force_delete_snapshot,
    "os-unmanage": unmanage_snapshot,
}


async def snapshot_action(request: Request) -> Response:
    return await run_action(request, SNAPSHOT_ACTIONS)


async def _metadata_owner(request: Request, snapshot_id: str, write: bool) -> str:
    rule = "volume:update_snapshot" if write else "volume:get_snapshot"
    _, snap = await load_snapshot(request, snapshot_id, rule)
    return snap.project_id


snapshot_metadata = MetadataRoutes("snapshots", SnapshotMetadata, "snapshot_id", _metadata_owner)

routes = [
    Route("/v3/snapshots", create_snapshot, methods=["POST"]),
    Route("/v3/snapshots", list_snapshots, methods=["GET"]),
    Route("/v3/snapshots/detail", list_snapshots_detail, methods=["GET"]),
    Route("/v3/snapshots/{id}", show_snapshot, methods=["GET"]),
    Route("/v3/snapshots/{id}", update_snapshot, methods=["PUT"]),
    Route("/v3/snapshots/{id}", delete_snapshot, methods=["DELETE"]),
    Route("/v3/snapshots/{id}/action", snapshot_action, methods=["POST"]),
    *snapshot_metadata.routes(),
]
