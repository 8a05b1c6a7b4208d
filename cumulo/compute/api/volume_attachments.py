"""/servers/{id}/os-volume_attachments (api-ref: Servers with volume attachments)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound, NotImplementedYet
from cumulo.common.openapi import describes
from cumulo.compute.api.common import authorize, compute_of, json, no_content, version
from cumulo.compute.models import BlockDeviceMapping
from cumulo.compute.states import InstanceInvalidState


def _view(request: Request, bdm: BlockDeviceMapping) -> dict[str, Any]:
    v = version(request)
    body: dict[str, Any] = {
        "device": bdm.device_name,
        "serverId": bdm.instance_uuid,
        "volumeId": bdm.volume_id,
    }
    if v < (2, 89):
        body["id"] = bdm.volume_id
    if v >= (2, 70):
        body["tag"] = bdm.tag
    if v >= (2, 79):
        body["delete_on_termination"] = bool(bdm.delete_on_termination)
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
    if tag is not None and version(request) < (2, 49):
        raise BadRequest("Additional properties are not allowed ('tag' was unexpected)")
    delete = body.get("delete_on_termination", False)
    if "delete_on_termination" in body and version(request) < (2, 79):
        raise BadRequest(
            "Additional properties are not allowed ('delete_on_termination' was unexpected)"
        )
    if not isinstance(delete, bool):
        raise BadRequest("Invalid input for field/attribute delete_on_termination.")
    try:
        bdm = await compute_of(request).attach_volume(
            inst, ctx, body["volumeId"], device, tag, delete
        )
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'attach_volume' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    return json({"volumeAttachment": _view(request, bdm)})


async def detach(request: Request) -> Response:
    ctx, inst = await _instance(request, "compute:servers:action")
    try:
        await compute_of(request).detach_volume(inst, ctx, request.path_params["volume_id"])
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'detach_volume' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    return no_content(202)


@describes(statuses={501: "Swapping a server's volume is not implemented yet."})
async def swap(request: Request) -> Response:
    raise NotImplementedYet("Swapping a server's volume is not implemented by this cloud yet.")


routes = [
    Route("/v2.1/servers/{server_id}/os-volume_attachments", list_attachments, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/os-volume_attachments", attach, methods=["POST"]),
    Route(
        "/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}",
        show_attachment,
        methods=["GET"],
    ),
    Route("/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}", swap, methods=["PUT"]),
    Route(
        "/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}", detach, methods=["DELETE"]
    ),
]
