"""`cumulo dashboard`: the dashboard served alone, a client of the cloud's APIs over HTTP.
Its sessions are in the dashboard's database (the config's `[database]`, as `cumulo up`
and `cumulo api` keep them), so they outlive a restart and every dashboard process
sharing that database and `[dashboard] session_secret` serves them."""

from __future__ import annotations

from cumulo.common.db import Database
from cumulo.common.server import make_servers, serve
from cumulo.dashboard.app import create_dashboard_app
from cumulo.dashboard.catalog import CatalogApis
from cumulo.dashboard.renewal import Trustee
from cumulo.dashboard.sessions import DatabaseSessionStore


async def serve_dashboard(
    apis: CatalogApis,
    db: Database,
    session_secret: str,
    host: str,
    port: int,
    tls: tuple[str, str] | None = None,
    trustee: Trustee | None = None,
) -> None:
    """Serve the dashboard on host:port until SIGINT/SIGTERM."""
    try:
        await db.migrate()
        sessions = DatabaseSessionStore(db, session_secret.encode())
        app = create_dashboard_app(apis, sessions, trustee)
        await serve(make_servers({"dashboard": (app, port)}, host, tls))
    finally:
        await apis.close()
        await db.dispose()
