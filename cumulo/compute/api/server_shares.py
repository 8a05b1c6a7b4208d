"""/v2.1/servers/{id}/shares (2.97, api-ref: Server shares): Shared File Systems shares
a server mounts with virtiofs.

A share is attached only once Nova's checks pass in its order: the server stopped, its
host able to share a filesystem with its guest (the COMPUTE_STORAGE_VIRTIO_FS trait, and
file-backed or huge-page memory), then the share found in the Shared File Systems
service. This cloud's hosts run guests without virtiofs and it has no Shared File
Systems service, so no share is ever attached: a server's list is empty and a share of
it is never found."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, version
from cumulo.compute.models import ComputeNode, Instance
from cumulo.compute.states import VmState

VIRTIO_FS_TRAIT = "COMPUTE_STORAGE_VIRTIO_FS"
MEM_BACKING_FILE_TRAIT = "COMPUTE_MEM_BACKING_FILE"
_TAG = re.compile(r"^[a-zA-Z0-9-]*$")


def _since_2_97(request: Request) -> None:
    if version(request) < (2, 97):
        raise NotFound("The resource could not be found.")


async def _server(request: Request, rule: str) -> tuple[Any, Instance]:
    ctx = await authorize(request, "compute:servers:index")
    inst = await compute_of(request).get_instance(ctx, request.path_params["server_id"], rule)
    return ctx, inst


def _check_state(inst: Instance, action: str, allowed: set[str]) -> None:
    if inst.vm_state not in allowed:
        raise Conflict(
            f"Cannot '{action}' instance {inst.uuid} while it is in vm_state {inst.vm_state}"
        )


def _share_body(data: Any) -> tuple[str, str | None]:
    """{"share": {"share_id": <uuid>, "tag": ...}} as Nova's create schema checks it."""
    share = wire.object_body(data, "share")
    wire.reject_unknown(wire.mapping(data), {"share"})
    wire.reject_unknown(share, {"share_id", "tag"})
    share_id = share.get("share_id")
    if share_id is None:
        raise BadRequest(
            f"Invalid input for field/attribute share. Value: {share}. 'share_id' is a required "
            "property"
        )
    if not isinstance(share_id, str) or not wire.is_uuid(share_id):
        raise wire.invalid("share_id", share_id, f"{share_id!r} is not a 'uuid'")
    tag = share.get("tag")
    if "tag" in share and (
        not isinstance(tag, str) or not 1 <= len(tag) <= 255 or not _TAG.match(tag)
    ):
        raise wire.invalid("tag", tag, f"{tag!r} does not match '^[a-zA-Z0-9-]*$'")
    return share_id, tag


async def _check_host_shares(request: Request, inst: Instance) -> None:
    """Nova's check_shares_supported: the host mounts shares in guests with virtiofs,
    with file-backed memory or the flavor's huge pages."""
    service = compute_of(request)
    async with service.db.read() as s:
        traits = await s.scalar(
            select(ComputeNode.traits).where(
                ComputeNode.host == inst.host, ComputeNode.hypervisor_hostname == inst.node
            )
        )
    traits = set(traits or [])
    extra_specs = (inst.flavor or {}).get("extra_specs") or {}
    memory_shareable = MEM_BACKING_FILE_TRAIT in traits or "hw:mem_page_size" in extra_specs
    if VIRTIO_FS_TRAIT not in traits or not memory_shareable:
        raise Conflict(
            "Feature not supported because either compute or instance are not configured correctly."
        )


@describes(resource="server share")
async def list_shares(request: Request) -> Response:
    """GET /servers/{id}/shares: the shares attached to the server."""
    _since_2_97(request)  # no query parameter from 2.97: query_params.py
    await _server(request, "compute:servers:shares:read")
    return json({"shares": []})


@describes(resource="server share")
async def show_share(request: Request) -> Response:
    """GET /servers/{id}/shares/{share_id}."""
    _since_2_97(request)  # no query parameter from 2.97: query_params.py
    await _server(request, "compute:servers:shares:read")
    raise NotFound(f"Share {request.path_params['share_id']} could not be found.")


@describes(
    body=wrapped("share", ("share_id", "tag"), required=("share_id",)),
    resource="server share",
    statuses={409: "The server is not stopped, or its host cannot mount shares in guests."},
)
async def attach_share(request: Request) -> Response:
    """POST /servers/{id}/shares: attach a share to a stopped server."""
    _since_2_97(request)
    share_id, _tag = _share_body(await json_body(request))
    _, inst = await _server(request, "compute:servers:shares")
    _check_state(inst, "create share", {VmState.STOPPED})
    await _check_host_shares(request, inst)
    # No Shared File Systems service in this cloud: no share can be found.
    raise NotFound(f"Share {share_id} could not be found.")


@describes(resource="server share", statuses={409: "The server is neither stopped nor in error."})
async def detach_share(request: Request) -> Response:
    """DELETE /servers/{id}/shares/{share_id}: detach from a stopped (or failed) server."""
    _since_2_97(request)
    _, inst = await _server(request, "compute:servers:shares")
    _check_state(inst, "delete share", {VmState.STOPPED, VmState.ERROR})
    raise NotFound(f"Share {request.path_params['share_id']} could not be found.")


routes = [
    Route("/v2.1/servers/{server_id}/shares", list_shares, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/shares", attach_share, methods=["POST"]),
    Route("/v2.1/servers/{server_id}/shares/{share_id}", show_share, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/shares/{share_id}", detach_share, methods=["DELETE"]),
]
