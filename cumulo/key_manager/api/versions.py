"""Version discovery: GET / (300 Multiple Choices) and GET /v1, as Barbican answers them
(microversion 1.0, the default: the older `values` document with status `stable`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.key_manager.api.common import (
    MAX_VERSION,
    MIN_VERSION,
    at_least,
    json,
    service_of,
)


def _v1(request: Request) -> dict:
    links = [
        {"rel": "self", "href": f"{service_of(request).host_href}/v1/"},
        {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
    ]
    if at_least(request, "1.1"):
        return {
            "id": "v1",
            "status": "CURRENT",
            "min_version": MIN_VERSION,
            "max_version": MAX_VERSION,
            "links": links,
        }
    return {
        "id": "v1",
        "status": "stable",
        "links": links,
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.key-manager-v1+json"}
        ],
    }


async def versions(request: Request) -> Response:
    if at_least(request, "1.1"):
        return json({"versions": [_v1(request)]}, 300)
    return json({"versions": {"values": [_v1(request)]}}, 300)


async def version_v1(request: Request) -> Response:
    return json({"version": _v1(request)})


routes = [
    Route("/", versions, methods=["GET"]),
    Route("/v1", version_v1, methods=["GET"]),
    Route("/v1/", version_v1, methods=["GET"]),
]
