"""`cumulo dashboard`: the dashboard served alone, a client of the cloud's APIs over HTTP.
Sessions stay in this process's memory."""

from __future__ import annotations

from cumulo.common.server import make_servers, serve
from cumulo.dashboard.app import create_dashboard_app
from cumulo.dashboard.catalog import CatalogApis


async def serve_dashboard(
    apis: CatalogApis, host: str, port: int, tls: tuple[str, str] | None = None
) -> None:
    """Serve the dashboard on host:port until SIGINT/SIGTERM."""
    servers = make_servers({"dashboard": (create_dashboard_app(apis), port)}, host, tls)
    try:
        await serve(servers)
    finally:
        await apis.close()
