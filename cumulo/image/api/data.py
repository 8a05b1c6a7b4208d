"""Image data: upload and download (streamed), and interoperable import (stage + import)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RangeNotSatisfiable,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from cumulo.common.tls import verify_option
from cumulo.image import imports
from cumulo.image.api.common import authorize, no_content, request_context, service_of
from cumulo.image.core import IMPORT_METHODS
from cumulo.image.models import Image
from cumulo.image.store import FilesystemStore

LOG = logging.getLogger(__name__)
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


async def _image(request: Request, rule: str) -> Image:
    service = service_of(request)
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await authorize(request, rule, image.owner)
    return image


def _octet_stream(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/octet-stream":
        raise UnsupportedMediaType(f"Content-Type {content_type or '(none)'} is not supported.")


async def upload(request: Request) -> Response:
    """PUT /v2/images/{id}/file (api-ref: Upload binary image data)."""
    _octet_stream(request)
    image = await _image(request, "image:upload_image")
    ctx = await request_context(request)
    await service_of(request).upload(image, request.stream(), ctx.auth_token)
    return no_content()


def _range(header: str, size: int) -> tuple[int, int]:
    """(start, end inclusive) of a single `bytes=` range, as RFC 9110 reads it."""
    m = RANGE_RE.match(header.replace(" ", ""))
    if not m or (not m[1] and not m[2]):
        raise RangeNotSatisfiable(f"Invalid Range header: {header}")
    if not m[1]:
        start, end = max(size - int(m[2]), 0), size - 1
    else:
        start = int(m[1])
        end = min(int(m[2]), size - 1) if m[2] else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            f"Requested range {header} is not satisfiable for {size} bytes.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


async def download(request: Request) -> Response:
    """GET /v2/images/{id}/file (api-ref: Download binary image data), with Range."""
    service = service_of(request)
    image = await _image(request, "image:download_image")
    if image.status == "deactivated" and not service.is_admin(
        await authorize(request, "image:get_image")
    ):
        raise Forbidden(
            "The requested image has been deactivated. Image data download is forbidden."
        )
    locations = await service.locations(image.id)
    if not locations or image.status not in ("active", "deactivated"):
        return no_content()
    size = image.size or 0
    headers = {"Content-Type": "application/octet-stream"}
    status = 200
    start, end = 0, size - 1
    if "range" in request.headers and size:
        start, end = _range(request.headers["range"], size)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    elif image.checksum:
        headers["Content-MD5"] = image.checksum
    headers["Content-Length"] = str(end - start + 1)
    cached = service.cache.path(image.id) if service.cache else None
    if cached:  # served from this node's cache
        service.cache.hit(image.id)
        chunks = FilesystemStore(cached.parent).read(cached.name, start, end + 1)
    else:
        chunks = await _opened(service.read(locations, start, end + 1))
    return StreamingResponse(chunks, status_code=status, headers=headers)


async def _opened(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, once the first has come: data no location gives (a web server gone,
    say) is a 503 before the response starts, as Glance's RemoteServiceUnavailable."""
    try:
        first = await anext(chunks, None)
    except Exception as exc:
        LOG.warning("image data could not be read: %s", exc)
        raise ServiceUnavailable("The image data could not be read from its locations.") from None

    async def rest() -> AsyncIterator[bytes]:
        if first is not None:
            yield first
        async for chunk in chunks:
            yield chunk

    return rest()


async def stage(request: Request) -> Response:
    """PUT /v2/images/{id}/stage (api-ref: Stage binary image data)."""
    _octet_stream(request)
    image = await _image(request, "image:stage_image")
    await service_of(request).stage(image, request.stream())
    return no_content()


def _check_import_body(body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("method"), dict):
        raise BadRequest("Import request requires a 'method' field.")
    name = body["method"].get("name")
    if name is None:
        raise BadRequest("Import request requires a 'name' field.")
    if name not in IMPORT_METHODS:
        raise BadRequest(f"Unknown import method name '{name}'.")
    for flag in ("all_stores_must_succeed", "all_stores"):
        if flag in body and not isinstance(body[flag], bool):
            raise BadRequest(f"'{flag}' must be boolean value only")
    stores = body.get("stores")
    if stores is not None and (
        not isinstance(stores, list) or not all(isinstance(s, str) for s in stores)
    ):
        raise BadRequest("'stores' must be a list of store ids.")


async def forward_to_stage_host(request: Request, host: str, body: bytes = b"") -> Response:
    """The request sent on, with the caller's token, to the node whose staging area holds
    the image's data (Glance's proxying of import and delete between API nodes); its
    answer is this one's."""
    service = service_of(request)
    kept = ("x-auth-token", "content-type", "accept", "x-openstack-request-id")
    headers = {k: v for k, v in request.headers.items() if k.lower() in kept}
    url = host + request.url.path
    LOG.info("image %s: %s sent on to %s", request.path_params["image_id"], request.method, host)
    async with httpx.AsyncClient(verify=verify_option(service.config), timeout=120) as client:
        try:
            answer = await client.request(request.method, url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"The image's staged data is on {host}, which cannot be reached: {exc}"
            ) from None
    media = answer.headers.get("content-type")
    return Response(answer.content, answer.status_code, media_type=media)


async def import_image(request: Request) -> Response:
    """POST /v2/images/{id}/import (api-ref: Import an image): glance-direct,
    web-download, copy-image (cumulo.image.imports)."""
    body = await json_body(request)
    _check_import_body(body)
    image = await _image(request, "image:import_image")
    if body["method"]["name"] == "glance-direct":
        host = await service_of(request).staged_elsewhere(image)
        if host is not None:
            return await forward_to_stage_host(request, host, json.dumps(body).encode())
    if body["method"]["name"] == "copy-image":
        await authorize(request, "image:copy_image", image.owner)
    elif image.status == "active":
        raise Conflict("Image with status active cannot be target for import")
    ctx = await authorize(request, "image:get_image")
    await imports.start(service_of(request), ctx, image, body)
    return Response(status_code=202)


async def delete_from_store(request: Request) -> Response:
    """DELETE /v2/stores/{store_id}/{image_id} (api-ref: Delete image from store)."""
    service = service_of(request)
    store = request.path_params["store_id"]
    if store not in service.stores:
        raise NotFound(f"Unknown store {store}.")
    image = await _image(request, "image:delete_image_location")
    if image.status != "active":
        raise Conflict(
            "It's not allowed to remove image data from store if image status is not 'active'"
        )
    await imports.delete_from_store(service, image, store)
    return no_content()


routes = [
    Route("/v2/images/{image_id}/file", upload, methods=["PUT"]),
    Route("/v2/images/{image_id}/file", download, methods=["GET"]),
    Route("/v2/images/{image_id}/stage", stage, methods=["PUT"]),
    Route("/v2/images/{image_id}/import", import_image, methods=["POST"]),
    Route("/v2/stores/{store_id}/{image_id}", delete_from_store, methods=["DELETE"]),
]
