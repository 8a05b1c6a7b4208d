"""/os-assisted-volume-snapshots (api-ref: Assisted volume snapshots): what a Block Storage
driver whose volumes are files the hypervisor opens (Cinder's NFS-style drivers) calls
to have an attached volume snapshotted by the host, which then reports the snapshot's
status back to Block Storage (`os-update_snapshot_status`). Service role only, as Nova.

cumulo's own volume backends snapshot their volumes themselves and never call this; the
host's driver decides what it can do (the fake driver records the overlay, the QEMU
driver refuses: its volumes are exports of the volume service, not files it owns)."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest
from cumulo.compute.api.common import authorize, compute_of, json, no_content
from cumulo.compute.api.wire import is_uuid
from cumulo.compute.models import BlockDeviceMapping, Instance

RULE = "compute:assisted_volume_snapshots"
SNAPSHOT_TYPES = ("qcow2",)


def _create_info(body: Any) -> tuple[str, dict[str, Any]]:
    """Nova's schema: snapshot {volume_id, create_info {snapshot_id, type, new_file, id}}."""
    snapshot = body.get("snapshot") if isinstance(body, dict) else None
    if not isinstance(snapshot, dict) or set(snapshot) - {"volume_id", "create_info"}:
        raise BadRequest("Invalid input for field/attribute snapshot.")
    volume_id, info = snapshot.get("volume_id"), snapshot.get("create_info")
    if not isinstance(volume_id, str) or not volume_id:
        raise BadRequest("Invalid input for field/attribute volume_id.")
    if not isinstance(info, dict) or set(info) - {"snapshot_id", "type", "new_file", "id"}:
        raise BadRequest("Invalid input for field/attribute create_info.")
    for field in ("snapshot_id", "type", "new_file"):
        if field not in info:
            raise BadRequest(f"'{field}' is a required property")
    for field in ("snapshot_id", "id"):
        if field in info and not (isinstance(info[field], str) and is_uuid(info[field])):
            raise BadRequest(f"Invalid input for field/attribute {field}.")
    if info["type"] not in SNAPSHOT_TYPES:
        raise BadRequest(f"Invalid input for field/attribute type. Value: {info['type']}.")
    if not isinstance(info["new_file"], str) or not info["new_file"]:
        raise BadRequest("Invalid input for field/attribute new_file.")
    return volume_id, info


async def _attached_instance(request: Request, volume_id: str) -> Instance:
    """The server the volume is attached to, on a host and doing nothing else (Nova: any
    vm_state, no task); 400 otherwise, as Nova answers these here."""
    async with compute_of(request).db.read() as s:
        inst = await s.scalar(
            select(Instance)
            .join(BlockDeviceMapping, BlockDeviceMapping.instance_uuid == Instance.uuid)
            .where(BlockDeviceMapping.volume_id == volume_id, Instance.deleted.is_(False))
        )
    if inst is None:
        raise BadRequest(f"No volume Block Device Mapping with id {volume_id}.")
    if not inst.host:
        raise BadRequest(f"Instance {inst.uuid} is not ready: it is not on a host.")
    if inst.task_state is not None:
        raise BadRequest(
            f"Cannot snapshot volume {volume_id} while instance {inst.uuid} is in "
            f"task_state {inst.task_state}"
        )
    return inst


async def create(request: Request) -> Response:
    ctx = await authorize(request, RULE)
    volume_id, info = _create_info(await json_body(request))
    inst = await _attached_instance(request, volume_id)
    service = compute_of(request)
    await service.compute_rpc.volume_snapshot_create(
        service.rpc_context(ctx), inst.host, inst.uuid, volume_id, info
    )
    return json({"snapshot": {"id": info.get("id"), "volumeId": volume_id}})


async def delete(request: Request) -> Response:
    ctx = await authorize(request, RULE)
    raw = request.query_params.get("delete_info")
    try:
        delete_info = jsonlib.loads(raw) if raw is not None else None
    except ValueError:
        delete_info = None
    if not isinstance(delete_info, dict) or not isinstance(delete_info.get("volume_id"), str):
        raise BadRequest("delete_info (JSON with the volume_id) is required.")
    volume_id = delete_info["volume_id"]
    inst = await _attached_instance(request, volume_id)
    service = compute_of(request)
    await service.compute_rpc.volume_snapshot_delete(
        service.rpc_context(ctx),
        inst.host,
        inst.uuid,
        volume_id,
        request.path_params["snapshot_id"],
        delete_info,
    )
    return no_content(204)


routes = [
    Route("/v2.1/os-assisted-volume-snapshots", create, methods=["POST"]),
    Route("/v2.1/os-assisted-volume-snapshots/{snapshot_id}", delete, methods=["DELETE"]),
]
