"""Port binding, as ML2 binds a port to the host in its `binding:host_id`: the mechanism
driver of that host's L2 agent binds it when the agent is alive and reaches the network's
segment, else the binding fails (`binding:vif_type` `binding_failed`, no `vif_details`,
the port stays DOWN and Nova fails the build there with PortBindingFailed).

- flat and vlan networks: the agent must map the network's physical network (the
  linuxbridge agent's `interface_mappings`, the openvswitch agent's `bridge_mappings`).
  An agent that reports no mappings at all (the noop data plane, linuxbridge without
  physical interfaces) keeps every network on its own bridges, as before: it binds them.
- vxlan and local networks: any living agent binds them.
- a host whose agent is dead (silent for AGENT_DOWN_TIME) binds nothing.
- a host with no agent at all (a fake compute host, which wires nothing) binds as the
  noop data plane does: Neutron would fail it, but such hosts have no data plane to ask.

The outcome is worked out from the agents' last reports whenever a port is shown, so a
port whose binding failed binds once its host's agent maps the network (ML2 retries a
failed binding on the port's next update).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from cumulo.common.db import utcnow
from cumulo.network.agents import AGENT_DOWN_TIME
from cumulo.network.dataplane.driver import vif_binding as driver_vif_binding
from cumulo.network.models import Agent, Network

if TYPE_CHECKING:
    from cumulo.network.core import NetworkService

BINDING_FAILED = "binding_failed"
UNBOUND = "unbound"
PHYSICAL_TYPES = ("flat", "vlan")
MAPPINGS = ("interface_mappings", "bridge_mappings")


@dataclass(frozen=True)
class HostAgent:
    """What a host's network agent last reported, and whether it still reports."""

    configurations: dict[str, Any]
    alive: bool


@dataclass(frozen=True)
class Segment:
    network_type: str
    physical_network: str | None

    @classmethod
    def of(cls, network: Network) -> Segment:
        return cls(network.network_type, network.physical_network)


def mapped_physnets(configurations: dict[str, Any]) -> set[str] | None:
    """The physical networks the agent reaches; None when it reports no mappings."""
    found: set[str] | None = None
    for key in MAPPINGS:
        if key in configurations:
            found = (found or set()) | set(configurations[key] or {})
    return found


def binds(agent: HostAgent | None, segment: Segment) -> bool:
    """Whether a port of a network with `segment` binds on the agent's host."""
    if agent is None:
        return True  # no agent: a host without a data plane (see the module's note)
    if not agent.alive:
        return False
    if segment.network_type not in PHYSICAL_TYPES:
        return True
    physnets = mapped_physnets(agent.configurations)
    return physnets is None or segment.physical_network in physnets


def vif_binding(
    agents: dict[str, HostAgent], network_id: str, segment: Segment | None, host: str
) -> tuple[str, dict[str, Any]]:
    """A port's binding:vif_type and binding:vif_details on `host` ("" : unbound)."""
    if not host:
        return UNBOUND, {}
    agent = agents.get(host)
    if segment is not None and not binds(agent, segment):
        return BINDING_FAILED, {}
    # A host with no agent (a fake one) wires nothing: nothing to plug into, or wait for.
    return driver_vif_binding(agent.configurations if agent else {}, network_id)


async def host_agents(service: NetworkService, hosts: Iterable[str | None]) -> dict[str, HostAgent]:
    """The network agent of each of these hosts that has one: this process's own agent,
    else what the host's agent last reported."""
    wanted = {h for h in hosts if h}
    found: dict[str, HostAgent] = {}
    own = service.agent
    if own is not None and own.host in wanted:
        found[own.host] = HostAgent(own.driver.configurations(), alive=True)
        wanted.discard(own.host)
    if not wanted:
        return found
    now = utcnow()
    async with service.db.read() as session:
        # Every row of a host (one per agent type) carries the same report.
        latest = (
            select(Agent.host, func.max(Agent.heartbeat_timestamp).label("heartbeat"))
            .where(Agent.host.in_(wanted))
            .group_by(Agent.host)
            .subquery()
        )
        rows = await session.execute(
            select(Agent.host, Agent.configurations, Agent.heartbeat_timestamp).join(
                latest,
                (Agent.host == latest.c.host) & (Agent.heartbeat_timestamp == latest.c.heartbeat),
            )
        )
        for host, configurations, heartbeat in rows:
            found[host] = HostAgent(configurations or {}, alive=now - heartbeat < AGENT_DOWN_TIME)
    return found


async def segments_of(service: NetworkService, network_ids: Iterable[str]) -> dict[str, Segment]:
    ids = sorted(set(network_ids))
    found: dict[str, Segment] = {}
    async with service.db.read() as session:
        for chunk in range(0, len(ids), 500):
            rows = await session.execute(
                select(Network.id, Network.network_type, Network.physical_network).where(
                    Network.id.in_(ids[chunk : chunk + 500])
                )
            )
            for network_id, network_type, physnet in rows:
                found[network_id] = Segment(network_type, physnet)
    return found
