"""The cache management API (api-ref: Cache Manage, 2.14; admins only): `/v2/cache`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import BadRequest, NotFound
from cumulo.image.api.common import authorize, json, no_content, service_of
from cumulo.image.cache import ImageCache

TARGETS = ("cache", "queue", "both")


def _cache(request: Request) -> ImageCache:
    cache = service_of(request).cache
    if cache is None:  # as Glance without the cache: the API is not there
        raise NotFound("The image cache is not enabled.")
    return cache


async def list_cache(request: Request) -> Response:
    await authorize(request, "image:cache_list")
    cache = _cache(request)
    return json({"cached_images": cache.cached(), "queued_images": cache.queued()})


async def queue_image(request: Request) -> Response:
    """PUT /v2/cache/{id}: 202; the image must exist and have data (400 otherwise)."""
    ctx = await authorize(request, "image:cache_image")
    cache = _cache(request)
    service = service_of(request)
    image = await service.get_visible(ctx, request.path_params["image_id"])
    if image.status != "active":
        raise BadRequest(f"Image {image.id} is not active: only active images are cached.")
    cache.queue(service, image)
    return Response(status_code=202)


async def delete_cached(request: Request) -> Response:
    await authorize(request, "image:cache_delete")
    await _cache(request).delete(request.path_params["image_id"])
    return no_content()


async def clear_cache(request: Request) -> Response:
    """DELETE /v2/cache; `x-image-cache-clear-target`: cache, queue or both (default)."""
    await authorize(request, "image:cache_delete")
    target = request.headers.get("x-image-cache-clear-target", "both") or "both"
    if target not in TARGETS:
        raise BadRequest(f"If provided 'x-image-cache-clear-target' must be one of {TARGETS}.")
    await _cache(request).clear(target)
    return no_content()


routes = [
    Route("/v2/cache", list_cache, methods=["GET"]),
    Route("/v2/cache", clear_cache, methods=["DELETE"]),
    Route("/v2/cache/{image_id}", queue_image, methods=["PUT"]),
    Route("/v2/cache/{image_id}", delete_cached, methods=["DELETE"]),
]
