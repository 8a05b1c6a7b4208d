"""The Network (Neutron v2.0) ASGI app, and the service behind it."""

from __future__ import annotations

import socket
from pathlib import Path

from starlette.applications import Starlette
from starlette.types import ASGIApp

from cumulo.common.app import create_app
from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.faults import render_network
from cumulo.common.identity_client import IdentityClient
from cumulo.common.rpc import Transport, get_transport
from cumulo.network.api import (
    agents,
    floatingips,
    info,
    ip_availability,
    metering,
    networks,
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
) -> NetworkService:
    """Migrate the network database and build the service; identity_app: call it in-process;
    dataplane: run this host's network agent (not for `cumulo init`)."""
    db = Database(database_url(config, state_dir, "network"), "network")
    await db.migrate()
    client = IdentityClient(config, app=identity_app)
    service = NetworkService(
        config, state_dir, db, TokenValidator(client, config.identity.cache_time)
    )
    if dataplane:
        await start_dataplane(
            service,
            get_transport(config.messaging.transport_url, config.messaging.namespace),
            state_dir,
        )
    return service


async def start_dataplane(
    service: NetworkService, transport: Transport, state_dir: Path
) -> NetworkAgent:
    """The server endpoint and this host's agent on the bus; changes cast `sync` to it."""
    # The agent binds ports of its own host: in one process that is the compute host.
    config = service.config
    host = config.network.agent_host or config.compute.host or socket.gethostname()
    await transport.start()
    await transport.serve(SERVER_TOPIC, NetworkStateEndpoint(service))
    driver = select_driver(config.network.driver, state_dir)
    if isinstance(driver, OpenvSwitchDriver):
        driver.tunnel = tunnel_settings(config.network)
    if isinstance(driver, LinuxBridgeDriver):
        driver.host_leg = config.network.host_leg
    agent = NetworkAgent(transport, host, driver)
    await agent.start()

    async def notify() -> None:
        await transport.cast(agent_topic(host), "sync", {})

    service.on_change = notify
    service.agent = agent
    service.on_close += [transport.close, agent.stop]
    return agent


def create_network_app(service: NetworkService) -> Starlette:
    routes = [
        *info.routes,
        *networks.routes,
        *subnets.routes,
        *subnetpools.routes,
        *ports.routes,
        *routers.routes,
        *floatingips.routes,
        *security_groups.routes,
        *quotas.routes,
        *rbac_policies.routes,
        *tags.routes,
        *metering.routes,
        *agents.routes,
        *ip_availability.routes,
    ]
    app = create_app("network", routes, render_network)
    app.state.network = service
    app.state.token_validator = service.validator
    return app
