"""/os-volumes and /os-snapshots: Nova's proxy to the Block Storage service below
2.36 (api-ref: Volume extension (os-volumes, os-snapshots) (DEPRECATED))."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.service_client import url_path
from cumulo.compute.api import wire
from cumulo.compute.api.common import json, no_content
from cumulo.compute.api.proxy import call, proxy_context

_VOLUME_FIELDS = {
    "size",
    "display_name",
    "display_description",
    "volume_type",
    "metadata",
    "availability_zone",
    "snapshot_id",
    "imageRef",
}


def volume_view(vol: dict[str, Any]) -> dict[str, Any]:
    attachments = [
        {
            "id": vol["id"],
            "volumeId": vol["id"],
            "serverId": a.get("server_id"),
            "device": a.get("device"),
        }
        for a in vol.get("attachments") or []
    ]
    return {
        "id": vol["id"],
        "status": vol["status"],
        "size": vol["size"],
        "availabilityZone": vol.get("availability_zone"),
        "createdAt": vol.get("created_at"),
        # Nova shows a detached volume's attachments as one empty object.
        "attachments": attachments or [{}],
        "displayName": vol.get("name"),
        "displayDescription": vol.get("description"),
        "volumeType": vol.get("volume_type"),
        "snapshotId": vol.get("snapshot_id"),
        "metadata": dict(vol.get("metadata") or {}),
    }


def snapshot_view(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": snap["id"],
        "volumeId": snap["volume_id"],
        "status": snap["status"],
        "size": snap["size"],
        "createdAt": snap.get("created_at"),
        "displayName": snap.get("name"),
        "displayDescription": snap.get("description"),
    }


async def _block_storage(
    request: Request, ctx: RequestContext, method: str, path: str, **kwargs: Any
) -> Any:
    return await call(request, ctx, "volumes", method, f"/v3{path}", **kwargs)


async def list_volumes(request: Request) -> Response:
    ctx = await proxy_context(request)
    params = {k: v for k, v in request.query_params.items() if k in ("limit", "offset")}
    found = await _block_storage(request, ctx, "GET", "/volumes/detail", params=params)
    return json({"volumes": [volume_view(v) for v in found["volumes"]]})


async def create_volume(request: Request) -> Response:
    ctx = await proxy_context(request)
    body = wire.object_body(await json_body(request), "volume")
    wire.reject_unknown(body, _VOLUME_FIELDS)
    if "size" not in body:
        raise BadRequest("Invalid input for field/attribute volume. 'size' is a required property")
    volume: dict[str, Any] = {"size": wire.integer("size", body["size"], 1)}
    for nova_name, cinder_name in (
        ("display_name", "name"),
        ("display_description", "description"),
        ("volume_type", "volume_type"),
        ("availability_zone", "availability_zone"),
        ("snapshot_id", "snapshot_id"),
        ("imageRef", "imageRef"),
    ):
        if body.get(nova_name) is not None:
            volume[cinder_name] = body[nova_name]
    if body.get("metadata") is not None:
        if not isinstance(body["metadata"], dict):
            raise BadRequest("Invalid input for field/attribute metadata.")
        volume["metadata"] = body["metadata"]
    created = await _block_storage(request, ctx, "POST", "/volumes", json={"volume": volume})
    return json({"volume": volume_view(created["volume"])})


async def create_snapshot(request: Request) -> Response:
    ctx = await proxy_context(request)
    body = wire.object_body(await json_body(request), "snapshot")
    wire.reject_unknown(body, {"volume_id", "force", "display_name", "display_description"})
    if not isinstance(body.get("volume_id"), str):
        raise BadRequest(
            "Invalid input for field/attribute snapshot. 'volume_id' is a required property"
        )
    snapshot: dict[str, Any] = {"volume_id": body["volume_id"]}
    if "force" in body:
        snapshot["force"] = wire.boolean("force", body["force"])
    if body.get("display_name") is not None:
        snapshot["name"] = body["display_name"]
    if body.get("display_description") is not None:
        snapshot["description"] = body["display_description"]
    created = await _block_storage(request, ctx, "POST", "/snapshots", json={"snapshot": snapshot})
    return json({"snapshot": snapshot_view(created["snapshot"])})


def _show(collection: str, member: str, view: Callable[[dict], dict]):
    async def show(request: Request) -> Response:
        ctx = await proxy_context(request)
        path = url_path("/{}/{}", collection, request.path_params["id"])
        return json({member: view((await _block_storage(request, ctx, "GET", path))[member])})

    return show


def _delete(collection: str):
    async def delete(request: Request) -> Response:
        ctx = await proxy_context(request)
        path = url_path("/{}/{}", collection, request.path_params["id"])
        await _block_storage(request, ctx, "DELETE", path)
        return no_content(202)

    return delete


async def list_snapshots(request: Request) -> Response:
    ctx = await proxy_context(request)
    found = await _block_storage(request, ctx, "GET", "/snapshots/detail")
    return json({"snapshots": [snapshot_view(s) for s in found["snapshots"]]})


routes = [
    Route("/v2.1/os-volumes", list_volumes, methods=["GET"]),
    Route("/v2.1/os-volumes/detail", list_volumes, methods=["GET"]),
    Route("/v2.1/os-volumes", create_volume, methods=["POST"]),
    Route("/v2.1/os-volumes/{id}", _show("volumes", "volume", volume_view)),
    Route("/v2.1/os-volumes/{id}", _delete("volumes"), methods=["DELETE"]),
    Route("/v2.1/os-snapshots", list_snapshots, methods=["GET"]),
    Route("/v2.1/os-snapshots/detail", list_snapshots, methods=["GET"]),
    Route("/v2.1/os-snapshots", create_snapshot, methods=["POST"]),
    Route("/v2.1/os-snapshots/{id}", _show("snapshots", "snapshot", snapshot_view)),
    Route("/v2.1/os-snapshots/{id}", _delete("snapshots"), methods=["DELETE"]),
]
