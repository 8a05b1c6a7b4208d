"""A server's metadata, tags and addresses (api-ref: Server metadata, Server tags, Servers IPs)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Forbidden, NotFound, NotImplementedYet
from cumulo.common.openapi import describes
from cumulo.compute import consoles
from cumulo.compute.api.common import authorize, compute_of, json, no_content, version
from cumulo.compute.api.server_actions import console_url, serial_console_url, spice_console_url
from cumulo.compute.api.views import addresses
from cumulo.compute.api.wire import check_metadata
from cumulo.compute.models import Instance
from cumulo.metadata.instances import password_of

MAX_METADATA_ITEMS = 128
MAX_TAGS = 50


async def _instance(request: Request, rule: str) -> Instance:
    ctx = await authorize(request, "compute:servers:index")
    return await compute_of(request).get_instance(ctx, request.path_params["server_id"], rule)


async def _save_metadata(request: Request, inst: Instance, meta: dict[str, str]) -> None:
    if len(meta) > MAX_METADATA_ITEMS:
        raise Forbidden(f"Quota exceeded for metadata_items: at most {MAX_METADATA_ITEMS}.")
    await compute_of(request).update_instance(inst.uuid, {"metadata_items": meta})


async def list_metadata(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:metadata:read")
    return json({"metadata": dict(inst.metadata_items or {})})


async def update_metadata(request: Request) -> Response:
    """POST merges keys in; PUT replaces all."""
    inst = await _instance(request, "compute:servers:metadata")
    data = await json_body(request)
    meta = check_metadata(data.get("metadata") if isinstance(data, dict) else None)
    merged = meta if request.method == "PUT" else {**(inst.metadata_items or {}), **meta}
    await _save_metadata(request, inst, merged)
    return json({"metadata": merged})


async def show_metadata_item(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:metadata:read")
    key = request.path_params["key"]
    if key not in (inst.metadata_items or {}):
        raise NotFound("Metadata item was not found")
    return json({"meta": {key: inst.metadata_items[key]}})


async def set_metadata_item(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:metadata")
    key = request.path_params["key"]
    data = await json_body(request)
    meta = check_metadata(data.get("meta") if isinstance(data, dict) else None)
    if list(meta) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await _save_metadata(request, inst, {**(inst.metadata_items or {}), **meta})
    return json({"meta": meta})


async def delete_metadata_item(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:metadata")
    key = request.path_params["key"]
    meta = dict(inst.metadata_items or {})
    if meta.pop(key, None) is None:
        raise NotFound("Metadata item was not found")
    await _save_metadata(request, inst, meta)
    return no_content()


# -- tags (2.26) --------------------------------------------------------------------


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not 1 <= len(tag) <= 60 or "/" in tag or "," in tag:
        raise BadRequest(f"Invalid input for field/attribute tag. Value: {tag}.")
    return tag


def _require_tags_version(request: Request) -> None:
    if version(request) < (2, 26):
        raise NotFound("The resource could not be found.")


async def list_tags(request: Request) -> Response:
    _require_tags_version(request)
    inst = await _instance(request, "compute:servers:tags:read")
    return json({"tags": list(inst.tags or [])})


async def replace_tags(request: Request) -> Response:
    _require_tags_version(request)
    inst = await _instance(request, "compute:servers:tags")
    data = await json_body(request)
    tags = data.get("tags") if isinstance(data, dict) else None
    if not isinstance(tags, list):
        raise BadRequest("Invalid input for field/attribute tags.")
    tags = list(dict.fromkeys(_check_tag(t) for t in tags))
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
    await compute_of(request).update_instance(inst.uuid, {"tags": tags})
    return json({"tags": tags})


async def clear_tags(request: Request) -> Response:
    _require_tags_version(request)
    inst = await _instance(request, "compute:servers:tags")
    await compute_of(request).update_instance(inst.uuid, {"tags": []})
    return no_content()


async def check_tag(request: Request) -> Response:
    _require_tags_version(request)
    inst = await _instance(request, "compute:servers:tags:read")
    if request.path_params["tag"] not in (inst.tags or []):
        raise NotFound(f"Tag {request.path_params['tag']} could not be found")
    return no_content()


async def add_tag(request: Request) -> Response:
    _require_tags_version(request)
    inst = await _instance(request, "compute:servers:tags")
    tag = _check_tag(request.path_params["tag"])
    tags = list(inst.tags or [])
    if tag in tags:
        return no_content()
    if len(tags) >= MAX_TAGS:
        raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
    await compute_of(request).update_instance(inst.uuid, {"tags": [*tags, tag]})
    return Response(status_code=201, headers={"Location": str(request.url)})


async def remove_tag(request: Request) -> Response:
    _require_tags_version(request)
    inst = await _instance(request, "compute:servers:tags")
    tag = request.path_params["tag"]
    if tag not in (inst.tags or []):
        raise NotFound(f"Tag {tag} could not be found")
    await compute_of(request).update_instance(
        inst.uuid, {"tags": [t for t in inst.tags if t != tag]}
    )
    return no_content()


# -- ips ------------------------------------------------------------------------------


async def list_ips(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:ips")
    return json({"addresses": addresses(inst)})


async def show_ips(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:ips")
    network = request.path_params["network"]
    found = addresses(inst)
    if network not in found:
        raise NotFound("There are no IP addresses on this network of the instance.")
    return json({network: found[network]})


routes = [
    Route("/v2.1/servers/{server_id}/metadata", list_metadata, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/metadata", update_metadata, methods=["POST", "PUT"]),
    Route("/v2.1/servers/{server_id}/metadata/{key}", show_metadata_item, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/metadata/{key}", set_metadata_item, methods=["PUT"]),
    Route("/v2.1/servers/{server_id}/metadata/{key}", delete_metadata_item, methods=["DELETE"]),
    Route("/v2.1/servers/{server_id}/tags", list_tags, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/tags", replace_tags, methods=["PUT"]),
    Route("/v2.1/servers/{server_id}/tags", clear_tags, methods=["DELETE"]),
    Route("/v2.1/servers/{server_id}/tags/{tag}", check_tag, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/tags/{tag}", add_tag, methods=["PUT"]),
    Route("/v2.1/servers/{server_id}/tags/{tag}", remove_tag, methods=["DELETE"]),
    Route("/v2.1/servers/{server_id}/ips", list_ips, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/ips/{network}", show_ips, methods=["GET"]),
]


# -- remote consoles (2.6), diagnostics (2.48 model), os-server-password ---------------


@describes(statuses={501: "Console protocols other than VNC and serial are not implemented yet."})
async def create_remote_console(request: Request) -> Response:
    if version(request) < (2, 6):
        raise NotFound("The resource could not be found.")
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(
        ctx, request.path_params["server_id"], "compute:servers:action"
    )
    data = await json_body(request)
    body = data.get("remote_console") if isinstance(data, dict) else None
    if isinstance(body, dict) and body.get("protocol") == "serial" and body.get("type") == "serial":
        url = await serial_console_url(service, inst, await service.serial_console(ctx, inst))
        return json({"remote_console": {"protocol": "serial", "type": "serial", "url": url}})
    if (
        not isinstance(body, dict)
        or body.get("protocol") != "vnc"
        or body.get("type") not in ("novnc", "xvpvnc")
    ):
        spice_types = (
            ("spice-html5", "spice-direct") if version(request) >= (2, 99) else ("spice-html5",)
        )
        if isinstance(body, dict) and body.get("protocol") == "spice":
            kind = body.get("type")
            if kind not in spice_types:
                # spice-direct (2.99): a SPICE client straight to the host's port.
                raise BadRequest(
                    f"Invalid input for field/attribute type. Value: {kind}. "
                    f"{kind!r} is not one of {list(spice_types)}"
                )
            console = await service.spice_console(ctx, inst, kind)
            url = await spice_console_url(service, inst, console, kind)
            return json({"remote_console": {"protocol": "spice", "type": kind, "url": url}})
        if isinstance(body, dict) and body.get("protocol") in ("rdp", "mks"):
            raise NotImplementedYet(f"{body['protocol']} consoles are not implemented yet.")
        raise BadRequest(
            "Invalid input for field/attribute remote_console: protocol vnc, type novnc or "
            "xvpvnc; protocol spice, type spice-html5 (or spice-direct from 2.99); or "
            "protocol serial, type serial."
        )
    url = await console_url(service, inst, await service.vnc_console(ctx, inst))
    return json({"remote_console": {"protocol": "vnc", "type": body["type"], "url": url}})


async def show_console_auth_token(request: Request) -> Response:
    """GET /os-console-auth-tokens/{token} (admin): where a console token leads."""
    await authorize(request, "compute:console_auth_tokens")  # no query from 2.99: query_params
    token = request.path_params["console_token"]
    console = await consoles.find_token(compute_of(request).db, token)
    if console is None:
        raise NotFound(f"The token '{token}' is invalid or has expired")
    body: dict[str, Any] = {
        "instance_uuid": console.instance_uuid,
        "host": console.host,
        "port": console.port,
        "internal_access_path": console.internal_access_path,
    }
    if version(request) >= (2, 99):
        # The TLS port of a SPICE console: none here (SPICE without TLS, as VNC).
        body["tls_port"] = None
    return json({"console": body})


async def show_diagnostics(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(ctx, request.path_params["server_id"], "compute:servers:show")
    diagnostics = await service.diagnostics(ctx, inst)
    if version(request) < (2, 48):
        # Before 2.48 the body was whatever the driver said: the same facts, flat.
        return json(
            {
                "state": diagnostics["state"],
                "num_cpus": diagnostics["num_cpus"],
                "memory": diagnostics["memory_details"]["maximum"],
                "cpu0_time": diagnostics["cpu_details"][0]["time"],
            }
        )
    # The api-ref's driver enumeration (libvirt, xenapi, vmwareapi, ironic, hyperv) has no
    # value for QEMU run without libvirt: libvirt names the same QEMU/KVM guest (Nova's
    # fake driver reports libvirt too).
    return json({**diagnostics, "driver": "libvirt"})


async def show_server_password(request: Request) -> Response:
    inst = await _instance(request, "compute:servers:show")
    return json({"password": password_of(inst)})


async def clear_server_password(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(
        ctx, request.path_params["server_id"], "compute:servers:update"
    )
    await service.clear_password(ctx, inst)
    return no_content()


routes += [
    Route("/v2.1/servers/{server_id}/remote-consoles", create_remote_console, methods=["POST"]),
    Route("/v2.1/os-console-auth-tokens/{console_token}", show_console_auth_token, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/diagnostics", show_diagnostics, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/os-server-password", show_server_password, methods=["GET"]),
    Route(
        "/v2.1/servers/{server_id}/os-server-password", clear_server_password, methods=["DELETE"]
    ),
]
