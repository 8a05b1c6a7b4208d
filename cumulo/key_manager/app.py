"""The Key Manager (Barbican v1) ASGI app, and the service behind it.

Other services call it in-process with the caller's token:
`ServiceClient("key-manager", app=create_key_manager_app(service))`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from cumulo.common.app import create_app
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.faults import render_key_manager
from cumulo.common.identity_client import IdentityClient
from cumulo.key_manager.api import (
    acls,
    consumers,
    containers,
    metadata,
    orders,
    secrets,
    versions,
)
from cumulo.key_manager.api.common import MicroversionMiddleware
from cumulo.key_manager.core import KeyManagerService


async def open_key_manager_service(
    config: CumuloConfig, state_dir: Path, *, identity_app: ASGIApp | None = None
) -> KeyManagerService:
    """Migrate the key manager database, load (or make) the master key, build the
    service; identity_app: validate tokens in-process."""
    db = Database(database_url(config, state_dir, "key_manager"), "key_manager")
    await db.migrate()
    client = IdentityClient(config, app=identity_app)
    validator = TokenValidator(client, config.identity.cache_time)
    return KeyManagerService(config, state_dir, db, validator)


def create_key_manager_app(service: KeyManagerService) -> Starlette:
    routes = [
        *versions.routes,
        *secrets.routes,
        *metadata.routes,
        *consumers.routes,
        *acls.routes,
        *containers.routes,
        *orders.routes,
    ]
    app = create_app("key-manager", routes, render_key_manager, dialect="key-manager")
    # Inside the request-id middleware: a refused version header is logged and answered
    # with its request id like any other error.
    app.user_middleware.append(Middleware(MicroversionMiddleware, render_error=render_key_manager))
    app.state.key_manager = service
    app.state.token_validator = service.validator
    return app
