"""A storage host on its own (`cumulo volume`): the volume managers of this host's
backends, serving volume.<host>@<backend> over the shared message bus.

As Cinder's volume service, it opens the Block Storage database itself (the
controller's URL: PostgreSQL or MariaDB) for its status changes and heartbeats;
the controller migrates that database, so start the controller first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.rpc import require_shared_bus, transport_for
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.volume.core import start_backends

LOG = logging.getLogger(__name__)


async def run_volume_host(config: CumuloConfig, state_dir: Path, stop: asyncio.Event) -> None:
    """Serve this host's backends until `stop` is set."""
    require_shared_bus(config, "a storage host")
    if not config.database.url:
        raise ValueError(
            "a storage host on its own needs the controller's database: set "
            "[database] url = postgresql+asyncpg://... (or mysql+aiomysql://...)"
        )
    host = config.volume.host or socket.gethostname()
    db = Database(database_url(config, state_dir, "volume"), "volume")
    images = ServiceClient(
        "image", url=config.public_url(config.ports.image), verify=verify_option(config)
    )
    bus = transport_for(config)
    managers = []
    try:
        await bus.start()
        managers = await start_backends(config, state_dir, host, db, images, bus)
        LOG.info("storage host %s is up: %s", host, ", ".join(m.backend_host for m in managers))
        await stop.wait()
    finally:
        await bus.close()
        for manager in managers:
            await manager.stop()
        await images.close()
        await db.dispose()
