"""A compute host on its own (`cumulo compute`): the compute manager and its driver,
talking to the controllers over the message bus and the REST APIs, never the database."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from cumulo.common.config import CumuloConfig
from cumulo.common.identity_client import IdentityClient
from cumulo.common.rpc import require_shared_bus, transport_for
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.compute.cell import start_compute_hosts
from cumulo.compute.manager import ComputeManager
from cumulo.compute.network import NetworkClient
from cumulo.compute.notifications import compute_notifier

LOG = logging.getLogger(__name__)


async def run_compute_agent(config: CumuloConfig, state_dir: Path, stop: asyncio.Event) -> None:
    """Serve topic compute.<host> until `stop` is set; guests keep running afterwards."""
    require_shared_bus(config, "a compute host")
    host = config.compute.host or socket.gethostname()
    controller, verify = config.public_url, verify_option(config)
    identity = IdentityClient(config)
    images = ServiceClient("image", url=controller(config.ports.image), verify=verify)
    networks = ServiceClient("network", url=controller(config.ports.network), verify=verify)
    volumes = ServiceClient(
        "block-storage", url=controller(config.ports.block_storage), verify=verify
    )
    # Barbican's port until [ports] key_manager is there to say otherwise.
    keys = ServiceClient(
        "key-manager",
        url=controller(getattr(config.ports, "key_manager", 9311)),
        verify=verify,
    )
    bus = transport_for(config)
    await bus.start()
    notifier = compute_notifier(config, state_dir)
    network = NetworkClient(networks, identity.service_token)
    managers: list[ComputeManager] = []
    try:
        await start_compute_hosts(
            config, state_dir, bus, images, network, volumes, notifier, managers, key_manager=keys
        )
        LOG.info("compute agent %s is up (controller %s)", host, controller)
        await stop.wait()
    finally:
        for manager in managers:
            await manager.stop()
        await notifier.close()
        await bus.close()
        for client in (images, networks, volumes, keys):
            await client.close()
        await identity.close()
