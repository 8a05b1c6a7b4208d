"""Version discovery at `/` and `/v2.1` (what keystoneauth reads to negotiate)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.compute.api.common import base_url, json
from cumulo.compute.api.microversion import MAX, MIN


def v21(request: Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": str(MAX),
        "min_version": str(MIN),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/v2.1/"}],
    }


async def list_versions(request: Request) -> Response:
    return json({"versions": [v21(request)]})


async def show_v21(request: Request) -> Response:
    doc = v21(request)
    doc["links"].append(
        {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"}
    )
    doc["media-types"] = [
        {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
    ]
    return json({"version": doc})


routes = [
    Route("/", list_versions, methods=["GET"]),
    Route("/v2.1", show_v21, methods=["GET"]),
    Route("/v2.1/", show_v21, methods=["GET"]),
]
