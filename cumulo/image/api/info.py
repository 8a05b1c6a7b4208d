"""Version discovery (`/`, `/versions`, `/v2`) and /v2/info (import methods, stores, usage)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.image.api.common import authorize, json, service_of
from cumulo.image.core import IMPORT_METHODS
from cumulo.image.models import Image

# Image API v2.16; v2.17 (the location API) once an http store can take locations.
CURRENT = 16
LOCATIONS_VERSION = 17


def versions(request: Request) -> dict[str, Any]:
    href = f"{str(request.base_url).rstrip('/')}/v2/"
    current = LOCATIONS_VERSION if service_of(request).http_store else CURRENT
    return {
        "versions": [
            {
                "id": f"v2.{minor}",
                "status": "CURRENT" if minor == current else "SUPPORTED",
                "links": [{"rel": "self", "href": href}],
            }
            for minor in range(current, -1, -1)
        ]
    }


async def multiple_choices(request: Request) -> Response:
    """GET / and /v2: the versions list with 300 Multiple Choices, as Glance answers."""
    return json(versions(request), status=300)


async def list_versions(request: Request) -> Response:
    return json(versions(request))


async def import_info(request: Request) -> Response:
    """GET /v2/info/import (api-ref: Import methods and values discovery)."""
    await authorize(request, "image:get_import_info")
    return json(
        {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": list(IMPORT_METHODS),
            }
        }
    )


async def stores_info(request: Request) -> Response:
    """GET /v2/info/stores (api-ref: List stores)."""
    await authorize(request, "image:get_stores")
    service = service_of(request)
    stores = []
    for store in service.stores.values():
        entry: dict[str, Any] = {"id": store.id, "description": store.description}
        if store is service.store:
            entry["default"] = True
        if not store.writable:  # the http store, as Glance flags it
            entry["read-only"] = "true"
        if any(service.weights.values()):  # shown once weights are configured, as Glance
            entry["weight"] = service.weights.get(store.id, 0)
        stores.append(entry)
    return json({"stores": stores})


async def usage_info(request: Request) -> Response:
    """GET /v2/info/usage (api-ref: Quota usage): limits and usage of the caller's project."""
    ctx = await authorize(request, "image:get_images")
    service = service_of(request)
    quota = service.quota(ctx.project_id)
    async with service.db.read() as session:
        row = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Image.size), 0)).where(
                    Image.owner == ctx.project_id
                )
            )
        ).one()
        uploading = await session.scalar(
            select(func.count()).where(
                Image.owner == ctx.project_id,
                Image.status.in_(("saving", "uploading", "importing")),
            )
        )
    mib = 1 << 20
    return json(
        {
            "usage": {
                "image_size_total": {
                    "limit": quota.image_size_total // mib,
                    "usage": -(-int(row[1]) // mib),
                },
                "image_count_total": {"limit": quota.image_count, "usage": row[0]},
                "image_stage_total": {"limit": quota.image_size_total // mib, "usage": 0},
                "image_count_uploading": {"limit": quota.image_count, "usage": uploading or 0},
            }
        }
    )


routes = [
    Route("/", multiple_choices, methods=["GET"]),
    Route("/versions", list_versions, methods=["GET"]),
    Route("/v2", multiple_choices, methods=["GET"]),
    Route("/v2/", multiple_choices, methods=["GET"]),
    Route("/v2/info/import", import_info, methods=["GET"]),
    Route("/v2/info/stores", stores_info, methods=["GET"]),
    Route("/v2/info/usage", usage_info, methods=["GET"]),
]
