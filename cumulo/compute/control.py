"""The compute control services on their own (`cumulo conductor`, `cumulo scheduler`).

Any number of each may run, on any hosts: they share the topics `conductor` and
`scheduler` on the broker, which spreads the messages over them, and the scheduler's
claims are atomic in the database, so two schedulers never book the same capacity.
Each opens the Compute database itself (the controller's URL); `cumulo api` (or
`cumulo up`) migrates it, so start that first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.identity_client import IdentityClient
from cumulo.common.rpc import require_shared_bus, transport_for
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.compute.network import NetworkClient

LOG = logging.getLogger(__name__)


def check_shared(config: CumuloConfig, what: str) -> None:
    """A process apart from the others needs the bus and the database they use."""
    require_shared_bus(config, what)
    if not config.database.url or config.database.url.startswith("sqlite"):
        raise ValueError(
            f"{what} on its own needs the controller's database: set "
            "[database] url = postgresql+asyncpg://... (or mysql+aiomysql://...)"
        )


async def run_control_service(
    config: CumuloConfig, state_dir: Path, stop: asyncio.Event, role: str
) -> None:
    """Serve the `conductor` or `scheduler` topic until `stop` is set."""
    from cumulo.compute.cell import serve_conductor, serve_scheduler

    check_shared(config, f"a {role}")
    host = config.compute.host or socket.gethostname()
    db = Database(database_url(config, state_dir, "compute"), "compute")
    bus = transport_for(config)
    tasks: list[asyncio.Task] = []
    # The conductor binds a live migration's ports through the controller's Network API.
    identity = IdentityClient(config)
    networks = ServiceClient(
        "network", url=config.public_url(config.ports.network), verify=verify_option(config)
    )
    try:
        await bus.start()
        if role == "conductor":
            network = NetworkClient(networks, identity.service_token)
            tasks = await serve_conductor(
                config, db, bus, host, fail_unscheduled=False, network=network
            )
        else:
            tasks = await serve_scheduler(config, db, bus, host)
        LOG.info("%s %s is up", role, host)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()
        await networks.close()
        await identity.close()
        await db.dispose()
