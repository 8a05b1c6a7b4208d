"""The Image (Glance v2) ASGI app, and the service behind it."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.types import ASGIApp

from cumulo.common.app import create_app
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.faults import render_image
from cumulo.common.identity_client import IdentityClient
from cumulo.common.notifications import Notifier
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.image.api import (
    cache,
    data,
    images,
    info,
    locations,
    members,
    metadef_items,
    metadefs,
    schemas,
    tasks,
)
from cumulo.image.core import ImageService
from cumulo.image.notifications import ImageNotifications


async def open_image_service(
    config: CumuloConfig,
    state_dir: Path,
    *,
    identity_app: ASGIApp | None = None,
    node_dir: Path | None = None,
    key_manager_app: ASGIApp | None = None,
) -> ImageService:
    """Migrate the image database and build the service; identity_app, key_manager_app:
    call them in-process (else the Key Manager at ports.key_manager); node_dir: this API
    node's own staging area and cache (see ImageService)."""
    db = Database(database_url(config, state_dir, "image"), "image")
    await db.migrate()
    client = IdentityClient(config, app=identity_app)
    validator = TokenValidator(client, config.identity.cache_time)
    service = ImageService(config, state_dir, db, validator, node_dir=node_dir)
    service.notifier = Notifier(config, state_dir, "image")
    service.key_manager = (
        ServiceClient("key-manager", app=key_manager_app)
        if key_manager_app is not None
        else ServiceClient(
            "key-manager",
            url=config.public_url(config.ports.key_manager),
            verify=verify_option(config),
        )
    )
    return service


# uvicorn stops reading a request body once 64 KiB wait in its buffer, and each ASGI
# receive then returns ~64-256 KiB and resumes reading: thousands of loop round trips
# (and epoll changes) per GiB uploaded. Up to 4 MiB per connection are let in instead,
# the size the store writes and hashes per step (uploads: ~half the loop's CPU per byte).
RECEIVE_WINDOW = 4 << 20


def widen_receive_window() -> None:
    from uvicorn.protocols.http import h11_impl, httptools_impl

    for module in (httptools_impl, h11_impl):
        if getattr(module, "HIGH_WATER_LIMIT", RECEIVE_WINDOW) < RECEIVE_WINDOW:
            module.HIGH_WATER_LIMIT = RECEIVE_WINDOW


def create_image_app(service: ImageService) -> Starlette:
    widen_receive_window()
    routes = [
        *info.routes,
        *images.routes,
        *data.routes,
        *locations.routes,
        *members.routes,
        *tasks.routes,
        *metadefs.routes,
        *metadef_items.routes,
        *cache.routes,
        *schemas.routes,
    ]
    app = create_app("image", routes, render_image)
    app.add_middleware(ImageNotifications, service=service)
    app.state.image = service
    app.state.token_validator = service.validator
    return app
