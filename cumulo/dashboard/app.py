"""The dashboard's ASGI app: its pages, static files, sessions and Server-Timing."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cumulo.common.service_client import ServiceClient
from cumulo.dashboard.apis import ApiFailure, Apis
from cumulo.dashboard.pages import admin, auth, compute, network, overview, storage
from cumulo.dashboard.renewal import Trustee
from cumulo.dashboard.sessions import SessionStore
from cumulo.dashboard.web import HERE, SameOriginFrames, ServerTiming, render

LOG = logging.getLogger(__name__)


async def favicon(_request: Request) -> Response:
    """The icon browsers ask for on any page (a JSON one too)."""
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


def create_dashboard_app(
    apis: Apis, sessions: SessionStore | None = None, trustee: Trustee | None = None
) -> Starlette:
    """The dashboard on `apis`; `trustee` (the dashboard's Identity user) renews the
    project-scoped sessions' tokens from their trusts (without it, the password does)."""
    routes = [
        *auth.routes,
        *overview.routes,
        *compute.routes,
        *network.routes,
        *storage.routes,
        *admin.routes,
        # Scripts and styles travel compressed: the console page's noVNC is 90 KB, 29 KB
        # gzipped (the browser revalidates them by ETag, answered 304 without a body).
        Mount(
            "/static",
            app=GZipMiddleware(StaticFiles(directory=HERE / "static"), minimum_size=1024),
            name="static",
        ),
        Route("/favicon.ico", favicon, methods=["GET"]),
    ]

    async def unexpected(request: Request, exc: Exception) -> Response:
        LOG.exception("dashboard page %s failed: %s", request.url.path, exc)
        failure = ApiFailure("dashboard", 500, "The dashboard failed to show this page.")
        return render(request, "error.html", status=500, error=failure)

    app = Starlette(routes=routes, exception_handlers={Exception: unexpected})
    app.add_middleware(ServerTiming)
    app.add_middleware(SameOriginFrames)
    app.state.apis = apis
    app.state.sessions = sessions or SessionStore()
    app.state.trustee = trustee
    return app


def in_process_apis(apps: dict) -> Apis:
    """The APIs of an all-in-one cloud, called in-process (no sockets)."""
    names = {
        "identity": "identity",
        "compute": "compute",
        "image": "image",
        "network": "network",
        "volume": "block-storage",
        "object-store": "object-store",
    }
    return Apis({name: ServiceClient(name, app=apps[key][0]) for name, key in names.items()})
