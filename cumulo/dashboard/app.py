"""The dashboard's ASGI app: its pages, static files, sessions and Server-Timing."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from cumulo.common.service_client import ServiceClient
from cumulo.dashboard.apis import Apis
from cumulo.dashboard.pages import auth, compute, network, overview, storage
from cumulo.dashboard.sessions import SessionStore
from cumulo.dashboard.web import HERE, ServerTiming


def create_dashboard_app(apis: Apis, sessions: SessionStore | None = None) -> Starlette:
    routes = [
        *auth.routes,
        *overview.routes,
        *compute.routes,
        *network.routes,
        *storage.routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(ServerTiming)
    app.state.apis = apis
    app.state.sessions = sessions or SessionStore()
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
