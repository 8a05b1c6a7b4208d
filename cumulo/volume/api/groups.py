"""Generic volume groups (3.13+) and group snapshots (3.14+): Block Storage v3 api-ref,
"Generic volume groups" and "Group snapshots".

A group holds volumes of the volume types it names. Its members are made and removed
through this API's own volume and snapshot paths (validation, quotas and the backends'
work as for any volume), called in-process with the caller's token; a group made from a
source or a group snapshot being taken reads `creating` until every member is done.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, NotFound
from cumulo.common.service_client import ServiceClient, ServiceError
from cumulo.volume import states
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    element,
    find_by_id_or_name,
    isotime,
    json,
    service_of,
)
from cumulo.volume.api.snapshots import _delete as delete_member_snapshot
from cumulo.volume.api.volumes import remove_volume
from cumulo.volume.models import (
    Group,
    GroupSnapshot,
    GroupType,
    GroupVolumeType,
    Snapshot,
    Volume,
    VolumeType,
)

LOG = logging.getLogger(__name__)
GROUP_STATUSES = ("available", "creating", "deleting", "error", "error_deleting", "in-use",
                  "updating")  # fmt: skip
SNAPSHOT_STATUSES = ("available", "creating", "deleting", "error", "error_deleting")
# Member work the API waits for in the background (kept so the tasks are not collected).
_SETTLING: set[asyncio.Task] = set()


def _require(request: Request, minor: int) -> None:
    if not at_least(request, 3, minor):
        raise NotFound("Could not find the requested resource.")


def _self_client(request: Request) -> ServiceClient:
    """This API, in-process: members are made the way any volume or snapshot is."""
    return ServiceClient("block-storage", app=request.app)


async def _call(request: Request, ctx: RequestContext, method: str, path: str, body: dict):
    client = _self_client(request)
    try:
        return await client.json(
            method, path, ctx.auth_token or "", json=body,
            headers={"OpenStack-API-Version": "volume 3.13"},
        )  # fmt: skip
    except ServiceError as exc:
        raise BadRequest(f"A member of the group could not be made: {exc.body[:300]}") from None
    finally:
        await client.close()


async def _load_group(request: Request, ctx: RequestContext, group_id: str) -> Group:
    service = service_of(request)
    async with service.db.read() as session:
        group = await session.get(Group, group_id)
    if group is None or (group.project_id != ctx.project_id and not service.is_admin(ctx)):
        raise NotFound(f"Group {group_id} could not be found.")
    return group


async def _types_of(session: Any, group_ids: list[str]) -> dict[str, list[str]]:
    rows = await session.execute(
        select(GroupVolumeType.group_id, GroupVolumeType.volume_type_id).where(
            GroupVolumeType.group_id.in_(group_ids)
        )
    )
    found: dict[str, list[str]] = {g: [] for g in group_ids}
    for group_id, type_id in rows:
        found[group_id].append(type_id)
    return found


def _group_view(request: Request, g: Group, types: list[str], volumes: list[str] | None):
    body: dict[str, Any] = {
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "status": g.status,
        "availability_zone": g.availability_zone,
        "created_at": isotime(g.created_at),
        "group_type": g.group_type_id,
        "volume_types": types,
        "group_snapshot_id": g.group_snapshot_id,
        "source_group_id": g.source_group_id,
    }
    if at_least(request, 3, 25) and volumes is not None:
        body["volumes"] = volumes
    if at_least(request, 3, 38):
        body["replication_status"] = "disabled"
    return body


def _settle(coro) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _SETTLING.add(task)
    task.add_done_callback(_SETTLING.discard)


async def _wait_members(service: Any, model: Any, column: Any, owner_id: str, owner: Any):
    """When no member is `creating` any more: the owner (group or group snapshot)
    becomes available, or error when a member failed."""
    for _ in range(1200):
        await asyncio.sleep(0.5)
        async with service.db.read() as session:
            statuses = list(await session.scalars(select(model.status).where(column == owner_id)))
        if any(s in (states.CREATING, "downloading") for s in statuses):
            continue
        final = states.ERROR if states.ERROR in statuses else states.AVAILABLE
        async with service.db.write() as session:
            await session.execute(
                update(owner)
                .where(owner.id == owner_id, owner.status == states.CREATING)
                .values(status=final)
            )
        return
    LOG.warning("%s %s: members still creating after 10 minutes", owner.__tablename__, owner_id)


# -- groups -------------------------------------------------------------------------------


async def create_group(request: Request) -> Response:
    _require(request, 13)
    spec = await element(request, "group")
    ctx = await authorize(request, "group:create")
    service = service_of(request)
    if not spec.get("group_type"):
        raise BadRequest("Invalid input for field/attribute group_type: it is required.")
    wanted = spec.get("volume_types")
    if not isinstance(wanted, list) or not wanted or not all(isinstance(t, str) for t in wanted):
        raise BadRequest("Invalid input for field/attribute volume_types: a list is required.")
    for key in ("name", "description", "availability_zone"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise BadRequest(f"Invalid input for field/attribute {key}.")
    zone = spec.get("availability_zone") or service.config.volume.availability_zone
    group_id = str(uuid.uuid4())
    async with service.db.write() as session:
        gtype = await find_by_id_or_name(session, GroupType, spec["group_type"], "Group type")
        types = [await find_by_id_or_name(session, VolumeType, t, "Volume type") for t in wanted]
        session.add(
            Group(
                id=group_id, project_id=ctx.project_id, user_id=ctx.user_id,
                name=spec.get("name"), description=spec.get("description"),
                status=states.AVAILABLE, availability_zone=zone, group_type_id=gtype.id,
            )
        )  # fmt: skip
        await session.flush()
        for vtype in {t.id: t for t in types}.values():
            session.add(GroupVolumeType(group_id=group_id, volume_type_id=vtype.id))
    return accepted({"group": {"id": group_id, "name": spec.get("name") or ""}})


async def _list_groups(request: Request, detail: bool) -> Response:
    _require(request, 13)
    ctx = await authorize(request, "group:get_all")
    service = service_of(request)
    query = select(Group).order_by(Group.created_at.desc())
    if not (service.is_admin(ctx) and request.query_params.get("all_tenants") in ("1", "true")):
        query = query.where(Group.project_id == ctx.project_id)
    async with service.db.read() as session:
        groups = list(await session.scalars(query))
        types = await _types_of(session, [g.id for g in groups])
    if not detail:
        return json({"groups": [{"id": g.id, "name": g.name or ""} for g in groups]})
    return json({"groups": [_group_view(request, g, types[g.id], None) for g in groups]})


async def list_groups(request: Request) -> Response:
    return await _list_groups(request, detail=False)


async def list_groups_detail(request: Request) -> Response:
    return await _list_groups(request, detail=True)


async def show_group(request: Request) -> Response:
    _require(request, 13)
    ctx = await authorize(request, "group:get")
    group = await _load_group(request, ctx, request.path_params["id"])
    service = service_of(request)
    async with service.db.read() as session:
        types = await _types_of(session, [group.id])
        volumes = None
        if request.query_params.get("list_volume") in ("1", "true", "True"):
            volumes = list(
                await session.scalars(select(Volume.id).where(Volume.group_id == group.id))
            )
    return json({"group": _group_view(request, group, types[group.id], volumes)})


def _ids(raw: Any, name: str) -> list[str]:
    if raw in (None, ""):
        return []
    if not isinstance(raw, str):
        raise BadRequest(f"Invalid input for field/attribute {name}.")
    return [i.strip() for i in raw.split(",") if i.strip()]


async def update_group(request: Request) -> Response:
    _require(request, 13)
    spec = await element(request, "group")
    ctx = await authorize(request, "group:update")
    group = await _load_group(request, ctx, request.path_params["id"])
    add, remove = (
        _ids(spec.get("add_volumes"), "add_volumes"),
        _ids(spec.get("remove_volumes"), "remove_volumes"),
    )
    if not ({"name", "description"} & set(spec)) and not add and not remove:
        raise BadRequest(
            "Name, description, add_volumes, and remove_volumes can not be all empty in the "
            "request body."
        )
    if set(add) & set(remove):
        raise BadRequest("A volume cannot be added to and removed from a group at once.")
    if group.status != states.AVAILABLE:
        raise BadRequest(f"Invalid group: group status must be available, but is {group.status}.")
    service = service_of(request)
    async with service.db.write() as session:
        types = set((await _types_of(session, [group.id]))[group.id])
        for volume_id in add:
            vol = await session.get(Volume, volume_id)
            if vol is None or vol.project_id != group.project_id:
                raise BadRequest(f"Invalid volume: volume {volume_id} could not be found.")
            if vol.group_id is not None:
                raise BadRequest(f"Invalid volume: volume {volume_id} already belongs to a group.")
            if vol.type_id not in types:
                raise BadRequest(
                    f"Invalid volume: the type of volume {volume_id} is not one of the group's."
                )
            if vol.status not in (states.AVAILABLE, states.IN_USE):
                raise BadRequest(f"Invalid volume: volume {volume_id} is {vol.status}.")
            vol.group_id = group.id
        for volume_id in remove:
            vol = await session.get(Volume, volume_id)
            if vol is None or vol.group_id != group.id:
                raise BadRequest(f"Invalid volume: volume {volume_id} is not in group {group.id}.")
            vol.group_id = None
        row = await session.get(Group, group.id)
        assert row is not None
        for key in ("name", "description"):
            if key in spec:
                setattr(row, key, spec[key])
    return accepted()


async def _delete_group(request: Request, ctx: RequestContext, group: Group, with_volumes: bool):
    service = service_of(request)
    async with service.db.read() as session:
        members = list(await session.scalars(select(Volume).where(Volume.group_id == group.id)))
        snapshots = await session.scalar(
            select(GroupSnapshot.id).where(GroupSnapshot.group_id == group.id).limit(1)
        )
    if members and not with_volumes:
        raise BadRequest(
            f"Invalid group: group {group.id} still has volumes; delete-volumes is needed."
        )
    if snapshots is not None:
        raise BadRequest(f"Invalid group: group {group.id} has group snapshots.")
    for vol in members:
        await remove_volume(request, ctx, vol.id, cascade=True, force=False)
    async with service.db.write() as session:
        await session.execute(
            update(Volume).where(Volume.group_id == group.id).values(group_id=None)
        )
        await session.execute(delete(GroupVolumeType).where(GroupVolumeType.group_id == group.id))
        await session.execute(delete(Group).where(Group.id == group.id))


async def group_action(request: Request) -> Response:
    _require(request, 13)
    body = await _body(request)
    ctx = await authorize(request, "group:delete" if "delete" in body else "group:reset_status")
    group = await _load_group(request, ctx, request.path_params["id"])
    if "delete" in body:
        args = body["delete"] if isinstance(body["delete"], dict) else {}
        flag = args.get("delete-volumes", False)
        with_volumes = flag if isinstance(flag, bool) else str(flag).lower() in ("true", "1")
        await _delete_group(request, ctx, group, with_volumes)
        return accepted()
    if "reset_status" in body:
        _require(request, 20)
        status = (
            (body["reset_status"] or {}).get("status")
            if isinstance(body["reset_status"], dict)
            else None
        )
        if status not in GROUP_STATUSES:
            raise BadRequest(f"Invalid input for field/attribute status. Value: {status}.")
        async with service_of(request).db.write() as session:
            await session.execute(update(Group).where(Group.id == group.id).values(status=status))
        return accepted()
    raise BadRequest("There is no such action: " + ", ".join(body))


async def _body(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Malformed request body: one action is expected.")
    return body


async def create_group_from_source(request: Request) -> Response:
    """POST /groups/action {"create-from-src": ...} (3.14): a new group whose volumes
    are made from a group snapshot's snapshots or cloned from a group's volumes."""
    _require(request, 14)
    body = await _body(request)
    spec = body.get("create-from-src")
    if not isinstance(spec, dict):
        raise BadRequest("There is no such action: " + ", ".join(body))
    ctx = await authorize(request, "group:create")
    service = service_of(request)
    snapshot_id, source_id = spec.get("group_snapshot_id"), spec.get("source_group_id")
    if bool(snapshot_id) == bool(source_id):
        raise BadRequest("Either group_snapshot_id or source_group_id must be given, not both.")
    async with service.db.read() as session:
        if snapshot_id:
            gsnap = await session.get(GroupSnapshot, snapshot_id)
            if gsnap is None or (gsnap.project_id != ctx.project_id and not service.is_admin(ctx)):
                raise NotFound(f"GroupSnapshot {snapshot_id} could not be found.")
            if gsnap.status != states.AVAILABLE:
                raise BadRequest(f"Invalid group snapshot: it is {gsnap.status}.")
            source = await session.get(Group, gsnap.group_id)
            members = list(
                await session.execute(
                    select(Snapshot, Volume).join(Volume, Volume.id == Snapshot.volume_id)
                    .where(Snapshot.group_snapshot_id == snapshot_id)
                )
            )  # fmt: skip
        else:
            source = await session.get(Group, source_id)
            if source is None or (
                source.project_id != ctx.project_id and not service.is_admin(ctx)
            ):
                raise NotFound(f"Group {source_id} could not be found.")
            if source.status != states.AVAILABLE:
                raise BadRequest(f"Invalid group: source group is {source.status}.")
            members = [
                (None, v)
                for v in await session.scalars(select(Volume).where(Volume.group_id == source_id))
            ]
        assert source is not None
        types = (await _types_of(session, [source.id]))[source.id]
    group_id = str(uuid.uuid4())
    async with service.db.write() as session:
        session.add(
            Group(
                id=group_id, project_id=ctx.project_id, user_id=ctx.user_id,
                name=spec.get("name"), description=spec.get("description"),
                status=states.AVAILABLE, availability_zone=source.availability_zone,
                group_type_id=source.group_type_id, group_snapshot_id=snapshot_id,
                source_group_id=source_id,
            )
        )  # fmt: skip
        await session.flush()
        for type_id in types:
            session.add(GroupVolumeType(group_id=group_id, volume_type_id=type_id))
    try:
        for snap, vol in members:
            origin = {"snapshot_id": snap.id} if snap is not None else {"source_volid": vol.id}
            await _call(request, ctx, "POST", "/v3/volumes", {"volume": {
                **origin, "size": vol.size, "volume_type": vol.type_id, "group_id": group_id,
                "name": vol.name,
            }})  # fmt: skip
    except BadRequest:
        async with service.db.write() as session:
            await session.execute(
                update(Group).where(Group.id == group_id).values(status=states.ERROR)
            )
        raise
    async with service.db.write() as session:
        await session.execute(
            update(Group).where(Group.id == group_id).values(status=states.CREATING)
        )
    _settle(_wait_members(service, Volume, Volume.group_id, group_id, Group))
    return accepted({"group": {"id": group_id, "name": spec.get("name") or ""}})


# -- group snapshots ----------------------------------------------------------------------


def _snapshot_view(s: GroupSnapshot) -> dict[str, Any]:
    return {
        "id": s.id,
        "group_id": s.group_id,
        "name": s.name,
        "description": s.description,
        "status": s.status,
        "created_at": isotime(s.created_at),
        "group_type_id": s.group_type_id,
    }


async def _load_snapshot(request: Request, ctx: RequestContext, snapshot_id: str) -> GroupSnapshot:
    service = service_of(request)
    async with service.db.read() as session:
        snap = await session.get(GroupSnapshot, snapshot_id)
    if snap is None or (snap.project_id != ctx.project_id and not service.is_admin(ctx)):
        raise NotFound(f"GroupSnapshot {snapshot_id} could not be found.")
    return snap


async def create_group_snapshot(request: Request) -> Response:
    _require(request, 14)
    spec = await element(request, "group_snapshot")
    ctx = await authorize(request, "group:create_group_snapshot")
    if not isinstance(spec.get("group_id"), str):
        raise BadRequest("Invalid input for field/attribute group_id: it is required.")
    group = await _load_group(request, ctx, spec["group_id"])
    if group.status != states.AVAILABLE:
        raise BadRequest(f"Invalid group: group {group.id} is {group.status}.")
    service = service_of(request)
    async with service.db.read() as session:
        members = list(await session.scalars(select(Volume.id).where(Volume.group_id == group.id)))
    snapshot_id = str(uuid.uuid4())
    async with service.db.write() as session:
        session.add(
            GroupSnapshot(
                id=snapshot_id, group_id=group.id, project_id=group.project_id,
                user_id=ctx.user_id, name=spec.get("name"), description=spec.get("description"),
                status=states.CREATING, group_type_id=group.group_type_id,
            )
        )  # fmt: skip
    try:
        for volume_id in members:
            made = await _call(request, ctx, "POST", "/v3/snapshots", {"snapshot": {
                "volume_id": volume_id, "force": True, "name": spec.get("name"),
            }})  # fmt: skip
            async with service.db.write() as session:
                await session.execute(
                    update(Snapshot).where(Snapshot.id == made["snapshot"]["id"])
                    .values(group_snapshot_id=snapshot_id)
                )  # fmt: skip
    except BadRequest:
        async with service.db.write() as session:
            await session.execute(
                update(GroupSnapshot)
                .where(GroupSnapshot.id == snapshot_id)
                .values(status=states.ERROR)
            )
        raise
    _settle(
        _wait_members(service, Snapshot, Snapshot.group_snapshot_id, snapshot_id, GroupSnapshot)
    )
    return accepted({"group_snapshot": {"id": snapshot_id, "name": spec.get("name") or "",
                                        "group_type_id": group.group_type_id}})  # fmt: skip


async def _list_snapshots(request: Request, detail: bool) -> Response:
    _require(request, 14)
    ctx = await authorize(request, "group:get_all_group_snapshots")
    service = service_of(request)
    query = select(GroupSnapshot).order_by(GroupSnapshot.created_at.desc())
    if not (service.is_admin(ctx) and request.query_params.get("all_tenants") in ("1", "true")):
        query = query.where(GroupSnapshot.project_id == ctx.project_id)
    async with service.db.read() as session:
        snaps = list(await session.scalars(query))
    if not detail:
        return json({"group_snapshots": [{"id": s.id, "name": s.name or ""} for s in snaps]})
    return json({"group_snapshots": [_snapshot_view(s) for s in snaps]})


async def list_group_snapshots(request: Request) -> Response:
    return await _list_snapshots(request, detail=False)


async def list_group_snapshots_detail(request: Request) -> Response:
    return await _list_snapshots(request, detail=True)


async def show_group_snapshot(request: Request) -> Response:
    _require(request, 14)
    ctx = await authorize(request, "group:get_group_snapshot")
    snap = await _load_snapshot(request, ctx, request.path_params["id"])
    return json({"group_snapshot": _snapshot_view(snap)})


async def delete_group_snapshot(request: Request) -> Response:
    _require(request, 14)
    ctx = await authorize(request, "group:delete_group_snapshot")
    snap = await _load_snapshot(request, ctx, request.path_params["id"])
    if snap.status not in (states.AVAILABLE, states.ERROR):
        raise BadRequest(f"Invalid group snapshot: it is {snap.status}.")
    service = service_of(request)
    async with service.db.read() as session:
        members = list(
            await session.scalars(select(Snapshot.id).where(Snapshot.group_snapshot_id == snap.id))
        )
    for member in members:
        await delete_member_snapshot(request, ctx, member, force=False)
    async with service.db.write() as session:
        await session.execute(
            update(Snapshot)
            .where(Snapshot.group_snapshot_id == snap.id)
            .values(group_snapshot_id=None)
        )
        await session.execute(delete(GroupSnapshot).where(GroupSnapshot.id == snap.id))
    return accepted()


async def group_snapshot_action(request: Request) -> Response:
    _require(request, 19)
    body = await _body(request)
    args = body.get("reset_status")
    if not isinstance(args, dict):
        raise BadRequest("There is no such action: " + ", ".join(body))
    ctx = await authorize(request, "group:reset_group_snapshot_status")
    snap = await _load_snapshot(request, ctx, request.path_params["id"])
    if args.get("status") not in SNAPSHOT_STATUSES:
        raise BadRequest(f"Invalid input for field/attribute status. Value: {args.get('status')}.")
    async with service_of(request).db.write() as session:
        await session.execute(
            update(GroupSnapshot).where(GroupSnapshot.id == snap.id).values(status=args["status"])
        )
    return accepted()


routes = [
    Route("/v3/groups", list_groups, methods=["GET"]),
    Route("/v3/groups", create_group, methods=["POST"]),
    Route("/v3/groups/detail", list_groups_detail, methods=["GET"]),
    Route("/v3/groups/action", create_group_from_source, methods=["POST"]),
    Route("/v3/groups/{id}", show_group, methods=["GET"]),
    Route("/v3/groups/{id}", update_group, methods=["PUT"]),
    Route("/v3/groups/{id}/action", group_action, methods=["POST"]),
    Route("/v3/group_snapshots", list_group_snapshots, methods=["GET"]),
    Route("/v3/group_snapshots", create_group_snapshot, methods=["POST"]),
    Route("/v3/group_snapshots/detail", list_group_snapshots_detail, methods=["GET"]),
    Route("/v3/group_snapshots/{id}", show_group_snapshot, methods=["GET"]),
    Route("/v3/group_snapshots/{id}", delete_group_snapshot, methods=["DELETE"]),
    Route("/v3/group_snapshots/{id}/action", group_snapshot_action, methods=["POST"]),
]
