"""/servers/{id}/os-volume_attachments (api-ref: Servers with volume attachments)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, no_content, version
from cumulo.compute.api.wire import mapping
from cumulo.compute.models import BlockDeviceMapping
from cumulo.compute.states import InstanceInvalidState


def _view(request: Request, bdm: BlockDeviceMapping, attach: bool = False) -> dict[str, Any]:
    """An attachment as GET shows it; `attach`: as the POST answers it, which 2.89 left
    as it was (Nova's api-ref: id, no attachment_id nor bdm_uuid)."""
    v = version(request)
    body: dict[str, Any] = {
        "device": bdm.device_name,
        "serverId": bdm.instance_uuid,
        "volumeId": bdm.volume_id,
    }
    if v < (2, 89) or attach:
        body["id"] = bdm.volume_id
    if v >= (2, 70):
        body["tag"] = bdm.tag
    if v >= (2, 79):
        body["delete_on_termination"] = bool(bdm.delete_on_termination)
    if v >= (2, 89) and not attach:
        # `id` only repeated volumeId: 2.89 shows the attachment's own ids instead.
        body["attachment_id"] = bdm.attachment_id
        body["bdm_uuid"] = bdm.uuid
    return body


async def _instance(request: Request, rule: str):
    ctx = await authorize(request, "compute:servers:index")
    inst = await compute_of(request).get_instance(ctx, request.path_params["server_id"], rule)
    return ctx, inst


async def list_attachments(request: Request) -> Response:
    _ctx, inst = await _instance(request, "compute:servers:show")
    rows = await compute_of(request).block_devices(inst.uuid)
    return json({"volumeAttachments": [_view(request, b) for b in rows]})


async def show_attachment(request: Request) -> Response:
    _ctx, inst = await _instance(request, "compute:servers:show")
    volume_id = request.path_params["volume_id"]
    for bdm in await compute_of(request).block_devices(inst.uuid):
        if bdm.volume_id == volume_id:
            return json({"volumeAttachment": _view(request, bdm)})
    raise NotFound(f"Instance {inst.uuid} is not attached to volume {volume_id}.")


async def attach(request: Request) -> Response:
    ctx, inst = await _instance(request, "compute:servers:action")
    data = await json_body(request)
    body = data.get("volumeAttachment") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("volumeId"), str):
        raise BadRequest("Invalid input for field/attribute volumeId.")
    device = body.get("device")
    if device is not None and (not isinstance(device, str) or not device.startswith("/dev/")):
        raise BadRequest("Invalid input for field/attribute device.")
    tag = body.get("tag")
    if "tag" in body:
        if version(request) < (2, 49):
            raise BadRequest("Additional properties are not allowed ('tag' was unexpected)")
        wire.tag("tag", tag)
    delete = body.get("delete_on_termination", False)
    if "delete_on_termination" in body and version(request) < (2, 79):
        raise BadRequest(
            "Additional properties are not allowed ('delete_on_termination' was unexpected)"
        )
    if not isinstance(delete, bool):
        raise BadRequest("Invalid input for field/attribute delete_on_termination.")
    if version(request) < (2, 60):
        await _refuse_multiattach(request, ctx, body["volumeId"])
    try:
        bdm = await compute_of(request).attach_volume(
            inst, ctx, body["volumeId"], device, tag, delete
        )
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'attach_volume' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    if version(request) >= (2, 101):
        # 2.101: accepted, no body; the client watches the volume and the server's
        # actions (the host attaches it after this answer, as before).
        return no_content(202)
    return json({"volumeAttachment": _view(request, bdm, attach=True)})


async def _refuse_multiattach(request: Request, ctx: Any, volume_id: str) -> None:
    """Below 2.60 a client may not know a volume can have several servers: Nova refuses
    multiattach volumes to it (a missing volume is left to the attach's own 404)."""
    volumes = compute_of(request).volumes
    if volumes is None:
        return
    try:
        volume = await volumes.json("GET", url_path("/v3/volumes/{}", volume_id), ctx.auth_token)
    except ServiceError:
        return
    if volume.get("volume", {}).get("multiattach"):
        raise BadRequest(
            "Multiattach volumes are only supported starting with compute API version 2.60."
        )


async def detach(request: Request) -> Response:
    ctx, inst = await _instance(request, "compute:servers:action")
    try:
        await compute_of(request).detach_volume(inst, ctx, request.path_params["volume_id"])
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'detach_volume' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    return no_content(202)


# Nova's match_device() pattern for a device name.
_DEVICE = re.compile(r"(^/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$")
_UPDATABLE = {"volumeId", "device", "tag", "delete_on_termination", "serverId", "id"}


def _update_body(data: Any) -> dict[str, Any]:
    """2.85's body: what GET shows, of which only delete_on_termination may change."""
    body = wire.object_body(data, "volumeAttachment")
    wire.reject_unknown(mapping(data), {"volumeAttachment"})
    wire.reject_unknown(body, _UPDATABLE)
    for field in ("volumeId", "serverId", "id"):
        value = body.get(field)
        if (field in body or field == "volumeId") and not (
            isinstance(value, str) and wire.is_uuid(value)
        ):
            raise wire.invalid(field, value, f"{value!r} is not a 'uuid'")
    device = body.get("device")
    if device is not None and not (isinstance(device, str) and _DEVICE.search(device)):
        raise wire.invalid("device", device, "does not match a device name such as /dev/vdb")
    if "tag" in body:
        wire.tag("tag", body["tag"])
    if "delete_on_termination" in body:
        body["delete_on_termination"] = wire.boolean(
            "delete_on_termination", body["delete_on_termination"]
        )
    return body


def _swap_body(data: Any) -> dict[str, Any]:
    """Before 2.85 a PUT is a swap: its body names only the new volume."""
    body = wire.object_body(data, "volumeAttachment")
    wire.reject_unknown(mapping(data), {"volumeAttachment"})
    wire.reject_unknown(body, {"volumeId"})
    value = body.get("volumeId")
    if not (isinstance(value, str) and wire.is_uuid(value)):
        raise wire.invalid("volumeId", value, f"{value!r} is not a 'uuid'")
    return body


async def _swap(request: Request, inst: Any, ctx: Any, volume_id: str, new_id: str) -> None:
    """Swap the server's volume for another (Nova's swap volume: Block Storage's call
    while it migrates an attached volume)."""
    try:
        await compute_of(request).swap_volume(inst, ctx, volume_id, new_id)
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'swap_volume' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None


async def update_attachment(request: Request) -> Response:
    """PUT: before 2.85 a swap to the volume the body names (the service role's call,
    as Nova's policy has it); from 2.85 a change of delete_on_termination (the other
    fields GET shows may be echoed), then a swap when volumeId names another volume."""
    volume_id = request.path_params["volume_id"]
    data = await json_body(request)
    only_swap = version(request) < (2, 85)
    body = _swap_body(data) if only_swap else _update_body(data)
    swap = only_swap or body["volumeId"] != volume_id
    if swap:
        ctx = await authorize(request, "compute:servers:swap_volume")
        inst = await compute_of(request).get_instance(
            ctx, request.path_params["server_id"], "compute:servers:swap_volume"
        )
        if only_swap:
            await _swap(request, inst, ctx, volume_id, body["volumeId"])
            return no_content(202)
    else:
        ctx, inst = await _instance(request, "compute:servers:action")
    bdm = next(
        (b for b in await compute_of(request).block_devices(inst.uuid) if b.volume_id == volume_id),
        None,
    )
    if bdm is None:
        raise NotFound(f"No volume Block Device Mapping with id {volume_id}.")
    # Nova: the other properties are there to echo GET; none of them changes.
    for field, current in (
        ("id", bdm.volume_id),
        ("serverId", inst.uuid),
        ("device", bdm.device_name),
        ("tag", bdm.tag),
    ):
        if field in body and body[field] != current:
            raise BadRequest(f"The {field} property is not mutable")
    if "delete_on_termination" in body:
        await compute_of(request).set_delete_on_termination(bdm, body["delete_on_termination"])
    if swap:
        await _swap(request, inst, ctx, volume_id, body["volumeId"])
    return no_content(202)


routes = [
    Route("/v2.1/servers/{server_id}/os-volume_attachments", list_attachments, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/os-volume_attachments", attach, methods=["POST"]),
    Route(
        "/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}",
        show_attachment,
        methods=["GET"],
    ),
    Route(
        "/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}",
        update_attachment,
        methods=["PUT"],
    ),
    Route(
        "/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}", detach, methods=["DELETE"]
    ),
]
