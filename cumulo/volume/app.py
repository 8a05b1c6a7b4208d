"""The Block Storage (Cinder v3) ASGI app, and the service behind it."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.types import ASGIApp

from cumulo.common.app import create_app
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.faults import render_compute
from cumulo.common.identity_client import IdentityClient
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.volume.api import (
    actions,
    attachments,
    backups,
    group_types,
    groups,
    hosts,
    info,
    manage,
    messages,
    qos,
    snapshots,
    transfers,
    types,
    volumes,
)
from cumulo.volume.api.microversion import VolumeApiMiddleware
from cumulo.volume.core import VolumeService


async def open_volume_service(
    config: CumuloConfig,
    state_dir: Path,
    *,
    identity_app: ASGIApp | None = None,
    image_app: ASGIApp | None = None,
    key_manager_app: ASGIApp | None = None,
) -> VolumeService:
    """Migrate the volume database and build the service; *_app: call them in-process."""
    db = Database(database_url(config, state_dir, "volume"), "volume")
    await db.migrate()
    client = IdentityClient(config, app=identity_app)
    images = (
        ServiceClient("image", app=image_app)
        if image_app is not None
        else ServiceClient(
            "image", url=config.public_url(config.ports.image), verify=verify_option(config)
        )
    )
    service = VolumeService(
        config,
        state_dir,
        db,
        TokenValidator(client, config.identity.cache_time),
        images,
        key_manager_app,
    )
    await service.bootstrap()
    await service.start()
    return service


def create_volume_app(service: VolumeService) -> Starlette:
    routes = [
        *info.routes,
        *volumes.routes,
        *actions.routes,
        *snapshots.routes,
        *backups.routes,
        *groups.routes,
        *attachments.routes,
        *types.routes,
        *transfers.routes,
        *hosts.routes,
        *manage.routes,
        *qos.routes,
        *group_types.routes,
        *messages.routes,
    ]
    # Cinder's error bodies are Nova's: {"itemNotFound": {"code": 404, "message": ...}}.
    app = create_app("volume", routes, render_compute)
    app.add_middleware(VolumeApiMiddleware, render_error=render_compute)
    app.state.volume = service
    app.state.token_validator = service.validator
    return app
