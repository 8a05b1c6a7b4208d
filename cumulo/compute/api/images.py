"""/images: Nova's proxy to the Image service below 2.36, and /images/{id}/metadata
below 2.39 (api-ref: Images (DEPRECATED), Image Metadata (DEPRECATED))."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Forbidden, NotFound
from cumulo.common.service_client import url_path
from cumulo.compute.api.common import (
    compute_of,
    json,
    limit_and_marker,
    links,
    next_link,
    no_content,
)
from cumulo.compute.api.proxy import call, proxy_context
from cumulo.compute.api.wire import check_metadata

METADATA_REMOVED_AT = (2, 39)
MAX_METADATA_ITEMS = 128
# Image v2 attributes that are not custom properties (Nova's image metadata).
_CORE = {
    "id", "name", "status", "visibility", "owner", "disk_format", "container_format", "size",
    "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "min_disk", "min_ram",
    "protected", "os_hidden", "tags", "created_at", "updated_at", "self", "file", "schema",
    "direct_url", "locations", "stores",
}  # fmt: skip
_STATUS = {
    "active": "ACTIVE",
    "queued": "SAVING",
    "saving": "SAVING",
    "importing": "SAVING",
    "uploading": "SAVING",
    "deleted": "DELETED",
    "pending_delete": "DELETED",
    "killed": "ERROR",
}
_PROGRESS = {"queued": 25, "saving": 50, "active": 100}
# Nova's list filters and what the Image service calls them.
_FILTERS = {"name": "name", "status": "status", "server": "instance_uuid", "type": "image_type"}
_JSON_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def _properties(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if k not in _CORE}


def _date(value: str | None) -> str | None:
    return value.replace("+00:00", "Z") if value else value


def _links(request: Request, image_id: str) -> list[dict[str, str]]:
    config = compute_of(request).config
    return [
        *links(request, "images", image_id),
        {
            "rel": "alternate",
            "type": "application/vnd.openstack.image",
            "href": f"{config.public_url(config.ports.image)}/images/{image_id}",
        },
    ]


def image_view(request: Request, image: dict[str, Any]) -> dict[str, Any]:
    metadata = _properties(image)
    body: dict[str, Any] = {
        "id": image["id"],
        "name": image.get("name"),
        "minRam": int(image.get("min_ram") or 0),
        "minDisk": int(image.get("min_disk") or 0),
        "metadata": metadata,
        "created": _date(image.get("created_at")),
        "updated": _date(image.get("updated_at")),
        "status": _STATUS.get(image.get("status", ""), "UNKNOWN"),
        "progress": _PROGRESS.get(image.get("status", ""), 0),
        "OS-EXT-IMG-SIZE:size": image.get("size"),
        "links": _links(request, image["id"]),
    }
    server = metadata.get("instance_uuid")
    if server is not None:
        body["server"] = {"id": server, "links": links(request, "servers", server)}
    if "auto_disk_config" in metadata:
        auto = str(metadata["auto_disk_config"]).lower() in ("1", "true", "yes", "on", "y", "t")
        body["OS-DCF:diskConfig"] = "AUTO" if auto else "MANUAL"
    return body


async def _list(request: Request) -> tuple[list[dict[str, Any]], bool]:
    ctx = await proxy_context(request)
    q = request.query_params
    params: dict[str, Any] = {}
    for nova_name, glance_name in _FILTERS.items():
        if nova_name in q:
            value = q[nova_name]
            if nova_name == "server":
                value = value.rstrip("/").rsplit("/", 1)[-1]
            params[glance_name] = value.lower() if nova_name == "status" else value
    if "changes-since" in q:
        params["changes-since"] = q["changes-since"]
    for name in q:
        if name.startswith("property-"):
            params[name.removeprefix("property-")] = q[name]
    limit, marker = limit_and_marker(request)
    if "limit" in q:
        params["limit"] = limit
    if marker:
        params["marker"] = marker
    found = await call(request, ctx, "images", "GET", "/v2/images", params=params)
    images = found["images"]
    for nova_name, glance_name in (("minRam", "min_ram"), ("minDisk", "min_disk")):
        if nova_name in q:
            try:
                least = int(q[nova_name])
            except ValueError:
                raise BadRequest(f"Invalid {nova_name} filter [{q[nova_name]}]") from None
            images = [i for i in images if int(i.get(glance_name) or 0) >= least]
    more = "limit" in q and len(found["images"]) >= limit > 0
    return images, more


async def list_images(request: Request) -> Response:
    images, more = await _list(request)
    body: dict[str, Any] = {
        "images": [
            {"id": i["id"], "name": i.get("name"), "links": _links(request, i["id"])}
            for i in images
        ]
    }
    if more and images:
        body["images_links"] = next_link(request, "images", images[-1]["id"])
    return json(body)


async def list_images_detail(request: Request) -> Response:
    images, more = await _list(request)
    body: dict[str, Any] = {"images": [image_view(request, i) for i in images]}
    if more and images:
        body["images_links"] = next_link(request, "images/detail", images[-1]["id"])
    return json(body)


async def _image(request: Request, ctx: RequestContext) -> dict[str, Any]:
    image_id = request.path_params["image_id"]
    return await call(
        request, ctx, "images", "GET", url_path("/v2/images/{}", image_id), {404: 404}
    )


async def show_image(request: Request) -> Response:
    ctx = await proxy_context(request)
    return json({"image": image_view(request, await _image(request, ctx))})


async def delete_image(request: Request) -> Response:
    ctx = await proxy_context(request)
    image_id = request.path_params["image_id"]
    await call(request, ctx, "images", "DELETE", url_path("/v2/images/{}", image_id))
    return no_content(204)


# -- metadata -----------------------------------------------------------------------


async def _metadata_image(request: Request) -> tuple[RequestContext, dict[str, Any]]:
    ctx = await proxy_context(request, METADATA_REMOVED_AT)
    return ctx, await _image(request, ctx)


def _pointer(key: str) -> str:
    """The JSON pointer to a property (RFC 6901: `~` and `/` escaped)."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


async def _save_metadata(
    request: Request, ctx: RequestContext, image: dict[str, Any], wanted: dict[str, str]
) -> dict[str, Any]:
    """Make the image's custom properties `wanted` (one JSON patch to the Image service)."""
    if len(wanted) > MAX_METADATA_ITEMS:
        raise Forbidden(f"Quota exceeded for metadata_items: at most {MAX_METADATA_ITEMS}.")
    current = _properties(image)
    patch: list[dict[str, Any]] = [
        {"op": "remove", "path": _pointer(key)} for key in current if key not in wanted
    ]
    patch += [
        {"op": "replace" if key in current else "add", "path": _pointer(key), "value": value}
        for key, value in wanted.items()
        if current.get(key) != value
    ]
    if not patch:
        return image
    return await call(
        request,
        ctx,
        "images",
        "PATCH",
        url_path("/v2/images/{}", image["id"]),
        {409: 400, 413: 403},
        json=patch,
        headers=_JSON_PATCH,
    )


async def list_metadata(request: Request) -> Response:
    _, image = await _metadata_image(request)
    return json({"metadata": _properties(image)})


async def update_metadata(request: Request) -> Response:
    """POST merges keys in, PUT replaces them all."""
    ctx, image = await _metadata_image(request)
    data = await json_body(request)
    meta = check_metadata(data.get("metadata") if isinstance(data, dict) else None)
    wanted = meta if request.method == "PUT" else {**_properties(image), **meta}
    saved = await _save_metadata(request, ctx, image, wanted)
    return json({"metadata": _properties(saved) if request.method == "POST" else meta})


def _item(image: dict[str, Any], key: str) -> dict[str, Any]:
    """The image's properties, which must have `key`."""
    props = _properties(image)
    if key not in props:
        raise NotFound(f"Image {image['id']} has no metadata with key {key}.")
    return props


async def show_metadata_item(request: Request) -> Response:
    _, image = await _metadata_image(request)
    key = request.path_params["key"]
    return json({"meta": {key: _item(image, key)[key]}})


async def set_metadata_item(request: Request) -> Response:
    ctx, image = await _metadata_image(request)
    key = request.path_params["key"]
    data = await json_body(request)
    meta = check_metadata(data.get("meta") if isinstance(data, dict) else None)
    if key not in meta:
        raise BadRequest("Request body and URI mismatch")
    if len(meta) > 1:
        raise BadRequest("Request body contains too many items")
    await _save_metadata(request, ctx, image, {**_properties(image), **meta})
    return json({"meta": meta})


async def delete_metadata_item(request: Request) -> Response:
    ctx, image = await _metadata_image(request)
    key = request.path_params["key"]
    props = _item(image, key)
    del props[key]
    await _save_metadata(request, ctx, image, props)
    return no_content(204)


routes = [
    Route("/v2.1/images", list_images, methods=["GET"]),
    Route("/v2.1/images/detail", list_images_detail, methods=["GET"]),
    Route("/v2.1/images/{image_id}", show_image, methods=["GET"]),
    Route("/v2.1/images/{image_id}", delete_image, methods=["DELETE"]),
    Route("/v2.1/images/{image_id}/metadata", list_metadata, methods=["GET"]),
    Route("/v2.1/images/{image_id}/metadata", update_metadata, methods=["POST", "PUT"]),
    Route("/v2.1/images/{image_id}/metadata/{key}", show_metadata_item, methods=["GET"]),
    Route("/v2.1/images/{image_id}/metadata/{key}", set_metadata_item, methods=["PUT"]),
    Route("/v2.1/images/{image_id}/metadata/{key}", delete_metadata_item, methods=["DELETE"]),
]
