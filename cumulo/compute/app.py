"""The Compute (Nova v2.1) ASGI app."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from cumulo.common.app import create_app
from cumulo.common.faults import ERRORS_BY_STATUS, ApiError, render_compute
from cumulo.compute.api import (
    aggregates,
    availability_zones,
    flavors,
    hypervisors,
    interfaces,
    keypairs,
    limits,
    migrations,
    quotas,
    server_actions,
    server_extras,
    server_groups,
    server_security,
    servers,
    services,
    versions,
    volume_attachments,
)
from cumulo.compute.api.microversion import MicroversionMiddleware
from cumulo.compute.service import ComputeService


async def _version_error(status: int, message: str, scope, receive, send) -> None:
    err = ERRORS_BY_STATUS.get(status, ApiError)(message)
    err.status = status
    body = json.dumps(render_compute(err)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Every API module's routes (all under /v2.1), in one list.
API_ROUTES: list[BaseRoute] = [
    *versions.routes,
    *servers.routes,
    *server_actions.routes,
    *server_extras.routes,
    *volume_attachments.routes,
    *interfaces.routes,
    *flavors.routes,
    *keypairs.routes,
    *services.routes,
    *hypervisors.routes,
    *aggregates.routes,
    *availability_zones.routes,
    *limits.routes,
    *quotas.routes,
    *server_groups.routes,
    *server_security.routes,
    *migrations.routes,
]


def create_compute_app(service: ComputeService) -> Starlette:
    routes = list(API_ROUTES)
    app = create_app("compute", routes, render_compute)
    app.add_middleware(MicroversionMiddleware, render_error=_version_error)
    app.state.compute = service
    app.state.token_validator = service.validator
    return app
