"""A compute host on its own (`cumulo compute`): the compute manager and its driver,
talking to the controllers over the message bus and the REST APIs, never the database."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from cumulo.common.config import CumuloConfig
from cumulo.common.identity_client import IdentityClient
from cumulo.common.rpc import get_transport
from cumulo.common.service_client import ServiceClient
from cumulo.compute.cell import host_options, make_driver
from cumulo.compute.image_cache import ImageCache
from cumulo.compute.manager import ComputeManager
from cumulo.compute.network import NetworkClient
from cumulo.compute.notifications import compute_notifier

LOG = logging.getLogger(__name__)


async def run_compute_agent(config: CumuloConfig, state_dir: Path, stop: asyncio.Event) -> None:
    """Serve topic compute.<host> until `stop` is set; guests keep running afterwards."""
    if config.messaging.transport_url.startswith("memory://"):
        raise ValueError(
            "a compute host on its own needs a shared message bus: set "
            "[messaging] transport_url = rabbit://..."
        )
    host = config.compute.host or socket.gethostname()
    controller = f"http://{config.catalog_host}"
    identity = IdentityClient(config)
    images = ServiceClient("image", url=f"{controller}:{config.ports.image}")
    networks = ServiceClient("network", url=f"{controller}:{config.ports.network}")
    volumes = ServiceClient("block-storage", url=f"{controller}:{config.ports.block_storage}")
    bus = get_transport(config.messaging.transport_url, config.messaging.namespace)
    await bus.start()
    manager = ComputeManager(
        host,
        make_driver(config, host, state_dir),
        bus,
        ImageCache(state_dir / "compute" / host / "images", images),
        NetworkClient(networks, identity.service_token),
        host_options(config),
        volumes=volumes,
    )
    manager.notifier = compute_notifier(config, state_dir)
    try:
        await manager.start()
        LOG.info("compute agent %s is up (controller %s)", host, controller)
        await stop.wait()
    finally:
        await manager.stop()
        await manager.notifier.close()
        await bus.close()
        for client in (images, networks, volumes):
            await client.close()
        await identity.close()
