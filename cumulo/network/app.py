"""The Network (Neutron v2.0) ASGI app, and the service behind it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.types import ASGIApp

from cumulo.common.app import create_app
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.faults import render_network
from cumulo.common.identity_client import IdentityClient
from cumulo.common.rpc import Transport, transport_for
from cumulo.network.agents import live_agent_hosts
from cumulo.network.api import (
    agents,
    auto_allocated_topology,
    floatingips,
    info,
    ip_availability,
    metering,
    networks,
    port_bindings,
    ports,
    quotas,
    rbac_policies,
    routers,
    security_groups,
    subnetpools,
    subnets,
    tags,
)
from cumulo.network.core import NetworkService
from cumulo.network.dataplane.agent import (
    SERVER_TOPIC,
    NetworkAgent,
    NetworkStateEndpoint,
    agent_topic,
)
from cumulo.network.dataplane.driver import select_driver
from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver
from cumulo.network.dataplane.openvswitch import OpenvSwitchDriver, tunnel_settings


async def open_network_service(
    config: CumuloConfig,
    state_dir: Path,
    *,
    identity_app: ASGIApp | None = None,
    dataplane: bool = True,
    server: bool = True,
) -> NetworkService:
    """Migrate the network database and build the service; identity_app: call it in-process;
    server: answer the agents on the bus (Neutron's plugin RPC; not for `cumulo init`);
    dataplane: also run this host's network agent (the all-in-one)."""
    db = Database(database_url(config, state_dir, "network"), "network")
    await db.migrate()
    client = IdentityClient(config, app=identity_app)
    service = NetworkService(
        config, state_dir, db, TokenValidator(client, config.identity.cache_time)
    )
    if server or dataplane:
        transport = transport_for(config)
        await serve_agents(service, transport)
        if dataplane:
            service.agent = await start_agent(config, transport, state_dir)
            service.on_close.append(service.agent.stop)
    return service


async def serve_agents(service: NetworkService, transport: Transport) -> None:
    """The server endpoint on the bus (topic `network`, shared by every API process), and
    changes announced to every living agent (each converges on its own host's part)."""
    await transport.start()
    await transport.serve(SERVER_TOPIC, NetworkStateEndpoint(service))
    service.live_agents = hosts = LiveAgents(service)

    async def notify() -> None:
        targets = set(await hosts.get())
        if service.agent is not None:  # this process's own, registered or not yet
            targets.add(service.agent.host)
        for host in sorted(targets):
            await transport.cast(agent_topic(host), "sync", {})

    service.on_change = notify
    service.on_close.append(transport.close)


class LiveAgents:
    """The hosts with a living network agent, read at most every `ttl` seconds (a change
    is announced to each; an agent that has just registered syncs by itself)."""

    def __init__(self, service: NetworkService, ttl: float = 1.0) -> None:
        self.service, self.ttl = service, ttl
        self._hosts: list[str] = []
        self._read_at = -ttl

    async def get(self) -> list[str]:
        if time.monotonic() - self._read_at >= self.ttl:
            self._hosts = await live_agent_hosts(self.service)
            self._read_at = time.monotonic()
        return self._hosts

    def forget(self) -> None:
        """An agent has (re)started: read the hosts again at the next change."""
        self._read_at = -self.ttl


async def start_agent(config: CumuloConfig, transport: Transport, state_dir: Path) -> NetworkAgent:
    """This host's network agent (L2, DHCP, L3, metadata) on the bus, converging."""
    host = agent_host(config)
    await transport.start()
    driver = select_driver(config.network.driver, state_dir)
    if isinstance(driver, OpenvSwitchDriver):
        driver.tunnel = tunnel_settings(config.network)
    if isinstance(driver, LinuxBridgeDriver):
        driver.host_leg = config.network.host_leg
        driver.physical = dict(config.network.physical_interface_mappings)
        if config.network.tunnel_local_ip and not isinstance(driver, OpenvSwitchDriver):
            driver.vxlan = {
                "local_ip": config.network.tunnel_local_ip,
                "device": config.network.tunnel_device,
            }
    agent = NetworkAgent(transport, host, driver)
    await agent.start()
    return agent


def agent_host(config: CumuloConfig) -> str:
    # The agent binds ports of its own host: in one process that is the compute host.
    return config.network.agent_host or config.compute.host or socket.gethostname()


def create_network_app(service: NetworkService) -> Starlette:
    routes = [
        *info.routes,
        *networks.routes,
        *subnets.routes,
        *subnetpools.routes,
        *ports.routes,
        *port_bindings.routes,
        *routers.routes,
        *floatingips.routes,
        *security_groups.routes,
        *quotas.routes,
        *rbac_policies.routes,
        *tags.routes,
        *metering.routes,
        *agents.routes,
        *ip_availability.routes,
        *auto_allocated_topology.routes,
    ]
    app = create_app("network", routes, render_network)
    app.state.network = service
    app.state.token_validator = service.validator
    return app
