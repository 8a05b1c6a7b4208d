"""A network host on its own (`cumulo network-agent`): this host's data plane (L2, DHCP,
L3 and the metadata proxy), converging on what the network server says over the bus.

Like Neutron's agents it never opens the database: it asks `cumulo api` (topic
`network`) what its host should look like and reports its heartbeat there.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cumulo.common.config import CumuloConfig
from cumulo.common.rpc import require_shared_bus, transport_for
from cumulo.network.app import start_agent
from cumulo.network.dataplane.metadata_proxy import attach_metadata_proxy

LOG = logging.getLogger(__name__)


async def run_network_agent(config: CumuloConfig, state_dir: Path, stop: asyncio.Event) -> None:
    """Serve topic network.<host> until `stop` is set; namespaces and guests' wiring stay."""
    require_shared_bus(config, "a network agent")
    bus = transport_for(config)
    agent = proxy = None
    try:
        agent = await start_agent(config, bus, state_dir)
        proxy = await attach_metadata_proxy(agent, config)
        LOG.info("network agent %s is up (%s)", agent.host, agent.driver.name)
        await stop.wait()
    finally:
        if agent is not None:
            await agent.stop()
        if proxy is not None:
            await proxy.close()
        await bus.close()
