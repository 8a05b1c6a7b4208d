"""Version discovery at `/`, `/v2` and `/v2.1` (what keystoneauth reads to negotiate).

Nova lists the legacy v2.0 API first, then v2.1 with its microversion range; `/v2/…`
is served as v2.1 without microversions (Nova's v2-compatible endpoint)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.compute.api.common import base_url, json
from cumulo.compute.api.microversion import MAX, MIN

_DESCRIBED_BY = {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"}


def v20(request: Request) -> dict[str, Any]:
    return {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/v2/"}],
    }


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
    return json({"versions": [v20(request), v21(request)]})


def _one(doc: dict[str, Any], media_version: str) -> Response:
    doc["links"].append(dict(_DESCRIBED_BY))
    doc["media-types"] = [
        {
            "base": "application/json",
            "type": f"application/vnd.openstack.compute+json;version={media_version}",
        }
    ]
    return json({"version": doc})


async def show_v20(request: Request) -> Response:
    return _one(v20(request), "2")


async def show_v21(request: Request) -> Response:
    return _one(v21(request), "2.1")


routes = [
    Route("/", list_versions, methods=["GET"]),
    Route("/v2", show_v20, methods=["GET"]),
    Route("/v2/", show_v20, methods=["GET"]),
    Route("/v2.1", show_v21, methods=["GET"]),
    Route("/v2.1/", show_v21, methods=["GET"]),
]
