"""The Compute (Nova v2.1) ASGI app."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from cumulo.common.app import create_app
from cumulo.common.faults import ERRORS_BY_STATUS, ApiError, render_compute
from cumulo.compute.api import (
    aggregates,
    assisted_volume_snapshots,
    availability_zones,
    extensions,
    flavors,
    floating_ips,
    hosts,
    hypervisors,
    images,
    instance_usage_audit_log,
    interfaces,
    keypairs,
    limits,
    migrations,
    networks,
    quotas,
    security_groups,
    server_actions,
    server_external_events,
    server_extras,
    server_groups,
    server_security,
    server_shares,
    servers,
    services,
    simple_tenant_usage,
    versions,
    volume_attachments,
    volumes,
)
from cumulo.compute.api.microversion import MicroversionMiddleware
from cumulo.compute.api.query_params import QueryParamsMiddleware
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
    *extensions.routes,
    *servers.routes,
    *server_actions.routes,
    *server_extras.routes,
    *server_shares.routes,
    *volume_attachments.routes,
    *assisted_volume_snapshots.routes,
    *interfaces.routes,
    *flavors.routes,
    *keypairs.routes,
    *services.routes,
    *hosts.routes,
    *simple_tenant_usage.routes,
    *instance_usage_audit_log.routes,
    *hypervisors.routes,
    *aggregates.routes,
    *availability_zones.routes,
    *limits.routes,
    *quotas.routes,
    *server_groups.routes,
    *server_security.routes,
    *security_groups.routes,
    *floating_ips.routes,
    *images.routes,
    *networks.routes,
    *volumes.routes,
    *server_external_events.routes,
    *migrations.routes,
]


def create_compute_app(service: ComputeService) -> Starlette:
    routes = list(API_ROUTES)
    app = create_app("compute", routes, render_compute)
    # Nova routes no path with an empty trailing segment: 404, not a redirect to the
    # collection (a DELETE /os-security-groups/ must not reach the list).
    app.router.redirect_slashes = False
    app.add_middleware(QueryParamsMiddleware, routes=routes, render_error=_version_error)
    app.add_middleware(MicroversionMiddleware, render_error=_version_error)  # outermost
    app.state.compute = service
    app.state.token_validator = service.validator
    return app
