"""/v2/images/{id}/locations (api-ref: Add Location, Get Locations; Image API 2.17)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.openapi import describes
from cumulo.image import locations
from cumulo.image.api.common import authorize, json, service_of


@describes(
    body={
        "type": "object",
        "properties": {
            "url": {"type": "string"},
            "validation_data": {
                "type": "object",
                "properties": {
                    "os_hash_algo": {"type": "string"},
                    "os_hash_value": {"type": "string"},
                },
            },
        },
        "required": ["url"],
    },
    content_type="application/json",
)
async def add_location(request: Request) -> Response:
    """POST /v2/images/{id}/locations: a queued image's data at a URL (202; a
    `location_import` task records it and hashes the data in the background)."""
    url, validation = locations.check_add_body(await json_body(request))
    service = service_of(request)
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await locations.start_add(service, ctx, image, url, validation)
    return Response(status_code=202)


async def get_locations(request: Request) -> Response:
    """GET /v2/images/{id}/locations (services): every location's url and metadata."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await authorize(request, "image:fetch_image_location", image.owner)
    held = await service.locations(image.id)
    return json([{"url": service.url_of(loc), "metadata": loc.metadata} for loc in held])


routes = [
    Route("/v2/images/{image_id}/locations", add_location, methods=["POST"]),
    Route("/v2/images/{image_id}/locations", get_locations, methods=["GET"]),
]
