"""/servers/{id}/os-interface (api-ref: Port interfaces)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, no_content, version
from cumulo.compute.states import InstanceInvalidState


def _view(request: Request, entry: dict[str, Any]) -> dict[str, Any]:
    body = {
        "fixed_ips": [
            {"ip_address": ip["ip_address"], "subnet_id": ip.get("subnet_id")}
            for ip in entry.get("fixed_ips", [])
        ],
        "mac_addr": entry["mac"],
        "net_id": entry["network_id"],
        "port_id": entry["port_id"],
        "port_state": "ACTIVE",
    }
    if version(request) >= (2, 70):
        body["tag"] = entry.get("tag")
    return body


async def _instance(request: Request, rule: str):
    ctx = await authorize(request, "compute:servers:index")
    return ctx, await compute_of(request).get_instance(ctx, request.path_params["server_id"], rule)


async def list_interfaces(request: Request) -> Response:
    _ctx, inst = await _instance(request, "compute:servers:ips")
    return json({"interfaceAttachments": [_view(request, e) for e in inst.network_info or []]})


async def show_interface(request: Request) -> Response:
    _ctx, inst = await _instance(request, "compute:servers:ips")
    port_id = request.path_params["port_id"]
    for entry in inst.network_info or []:
        if entry["port_id"] == port_id:
            return json({"interfaceAttachment": _view(request, entry)})
    raise NotFound(f"Port {port_id} is not attached")


async def attach_interface(request: Request) -> Response:
    ctx, inst = await _instance(request, "compute:servers:action")
    data = await json_body(request)
    body = data.get("interfaceAttachment") if isinstance(data, dict) else None
    if not isinstance(body, dict):
        raise BadRequest("Invalid input for field/attribute interfaceAttachment.")
    net_id, port_id = body.get("net_id"), body.get("port_id")
    if bool(net_id) == bool(port_id):
        raise BadRequest("Give either net_id or port_id.")
    wanted: dict[str, Any] = {"port": port_id} if port_id else {"uuid": net_id}
    if "tag" in body:
        if version(request) < (2, 49):
            raise BadRequest("Additional properties are not allowed ('tag' was unexpected)")
        wanted["tag"] = wire.tag("tag", body["tag"])
    fixed = body.get("fixed_ips")
    if fixed:
        if (
            port_id
            or not isinstance(fixed, list)
            or len(fixed) != 1
            or not isinstance(fixed[0], dict)
        ):
            raise BadRequest("Invalid input for field/attribute fixed_ips.")
        wanted["fixed_ip"] = fixed[0].get("ip_address")
    try:
        entry = await compute_of(request).attach_interface(inst, ctx, wanted)
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'attach_interface' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    return json({"interfaceAttachment": _view(request, entry)})


async def detach_interface(request: Request) -> Response:
    ctx, inst = await _instance(request, "compute:servers:action")
    try:
        await compute_of(request).detach_interface(inst, ctx, request.path_params["port_id"])
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot 'detach_interface' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    return no_content(202)


routes = [
    Route("/v2.1/servers/{server_id}/os-interface", list_interfaces, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/os-interface", attach_interface, methods=["POST"]),
    Route("/v2.1/servers/{server_id}/os-interface/{port_id}", show_interface, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/os-interface/{port_id}", detach_interface, methods=["DELETE"]),
]
