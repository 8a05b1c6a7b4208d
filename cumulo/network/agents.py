"""The agents registry and scheduler: what each host's network agent reports, and which
networks (DHCP) and routers (L3) each one serves, as Neutron's agents and schedulers.

cumulo runs one agent process per host (cumulo.network.dataplane.agent) that does the
work of Neutron's L2, DHCP, L3 and metadata agents, so it is listed once per type.
It reports every `REPORT_INTERVAL` seconds; an agent silent for `AGENT_DOWN_TIME`
is shown `alive: false` (Neutron's `agent_down_time`).

Scheduling: without tunnels a host's bridges are its own (no L2 between hosts), so a
network needs a DHCP server and a router a namespace on every host with guests on it.
A new network with DHCP and a new router are therefore bound to every living, enabled
agent of the type (Neutron's `dhcp_agents_per_network` as large as the cloud); an agent
that registers takes every one of them, and at each heartbeat an agent takes those no
agent serves (Neutron's auto-scheduling).

Agents joined by VXLAN (their report has a `tunneling_ip`) share each tenant network's
L2 segment, where a second DHCP server or router with the same addresses would clash:
each network and router goes to one of them (the least loaded), as Neutron's legacy
schedulers do, and moves to another living one when its agent dies (found at the next
heartbeat of any tunnelling agent; the dead agent's binding is removed).

Distributed routers (Neutron's DVR) are never given to `legacy` L3 agents (the agent
mode each reports: linuxbridge's), as Neutron's get_l3_agent_candidates: the agent they
are bound to does their SNAT and floating IPs, and every other openvswitch host with
ports on their subnets routes between those subnets itself (cumulo.network.dataplane
.state, `dvr`).

HA routers (Neutron's l3-ha) go to several tunnelling agents at once: the
`max_l3_agents_per_router` least loaded ones (0: every one), not `legacy` nor `dvr_snat`
alone but any that can host the router, and an agent that registers or heartbeats
takes those with fewer; a dead agent keeps its binding (keepalived on the others takes
over; Neutron does not move HA routers either) unless no living agent hosts the router.
Each binding of an HA router has its HA port (l3_ha.settle_ha_ports).

An admin removes or adds a binding by hand (`/v2.0/agents/{id}/dhcp-networks`,
`/l3-routers`), and the agent applies it: it serves only what it is bound to.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.db import utcnow
from cumulo.network.core import NetworkService, new_id
from cumulo.network.dvr import DVR_MODES, ensure_host_mac
from cumulo.network.l3_ha import report_states, settle_ha_ports
from cumulo.network.models import Agent, NetworkDhcpAgent, Port, Router, RouterL3Agent
from cumulo.network.ports import DHCP

REPORT_INTERVAL = 30.0
AGENT_DOWN_TIME = timedelta(seconds=75)
BINARY = "cumulo-network-agent"
DHCP_AGENT = "DHCP agent"
L3_AGENT = "L3 agent"
L2_AGENT = "Linux bridge agent"
OVS_AGENT = "Open vSwitch agent"  # the L2 agent's type on the openvswitch data plane
# Neutron's agent type names, with the availability zone Neutron gives each.
AGENT_TYPES = {
    L2_AGENT: None,
    DHCP_AGENT: "nova",
    L3_AGENT: "nova",
    "Metadata agent": None,
}
# What each scheduler binds: the binding table and its resource column.
BINDINGS = {
    DHCP_AGENT: (NetworkDhcpAgent, NetworkDhcpAgent.network_id),
    L3_AGENT: (RouterL3Agent, RouterL3Agent.router_id),
}


def is_alive(agent: Agent, now: datetime | None = None) -> bool:
    return (now or utcnow()) - agent.heartbeat_timestamp < AGENT_DOWN_TIME


def agent_mode(agent: Agent) -> str:
    """The L3 agent mode the agent reports (Neutron's agent_mode; `legacy` by default)."""
    return str((agent.configurations or {}).get("agent_mode", "legacy"))


def tunnels(agent: Agent) -> bool:
    """Whether the agent's host joins the others' tenant networks over VXLAN."""
    return bool((agent.configurations or {}).get("tunneling_ip"))


async def live_agent_hosts(service: NetworkService) -> list[str]:
    """The hosts whose agent has reported within AGENT_DOWN_TIME."""
    since = utcnow() - AGENT_DOWN_TIME
    async with service.db.read() as session:
        hosts = await session.scalars(
            select(Agent.host).where(Agent.heartbeat_timestamp >= since).distinct()
        )
        return sorted(hosts)


async def report_state(
    service: NetworkService, host: str, topic: str, configurations: dict[str, Any], start: bool
) -> bool:
    """A heartbeat from the agent on `host`: its rows made or refreshed (started_at
    too when the agent has just started), and what it should serve scheduled. True
    when it was given networks or routers (it should sync)."""

    async def work(session: AsyncSession) -> bool:
        given = False
        now = utcnow()
        rows = await session.scalars(select(Agent).where(Agent.host == host))
        known = {row.agent_type: row for row in rows}
        for agent_type, zone in AGENT_TYPES.items():
            if agent_type == L2_AGENT and configurations.get("driver") == "openvswitch":
                agent_type = OVS_AGENT
            row = known.get(agent_type)
            if row is None:
                row = Agent(
                    id=new_id(),
                    agent_type=agent_type,
                    binary=BINARY,
                    host=host,
                    availability_zone=zone,
                    created_at=now,
                    started_at=now,
                )
                session.add(row)
            elif start:
                row.started_at = now
            row.topic = topic
            row.configurations = configurations
            row.heartbeat_timestamp = now
            await session.flush()
            if agent_type in BINDINGS:
                given |= await _auto_schedule(
                    session, row, agent_type not in known, service.config.network
                )
        if configurations.get("agent_mode") in DVR_MODES:
            await ensure_host_mac(session, host, service.config.network.dvr_base_mac)
        return given

    # Two hosts' first heartbeats bind the same networks at once: on MariaDB one of
    # them may be chosen as a deadlock victim (its savepoint gone with it); run again.
    return await service.db.write_retrying(work)


async def report_ha_states(service: NetworkService, host: str, states: dict[str, str]) -> bool:
    """What the L3 agent on `host` says of its HA routers (active or standby). True when
    a state changed (the other hosts then pin the routers' MACs to the active one)."""

    async def work(session: AsyncSession) -> bool:
        agent_id = await session.scalar(
            select(Agent.id).where(Agent.host == host, Agent.agent_type == L3_AGENT)
        )
        return bool(agent_id) and await report_states(session, agent_id, host, states)

    return await service.db.write_retrying(work)


async def schedule(
    session: AsyncSession, agent_type: str, resource_id: str, max_ha_agents: int = 3
) -> None:
    """A network given DHCP, or a new router, that no agent serves yet: bound to every
    living, enabled agent of the type that does not tunnel, and to the least loaded one
    that does (an HA router: the `max_ha_agents` least loaded ones, 0: all); one an
    admin has placed is left as it is."""
    model, column = BINDINGS[agent_type]
    if await session.scalar(select(model.agent_id).where(column == resource_id).limit(1)):
        return
    candidates = await session.scalars(
        select(Agent).where(Agent.agent_type == agent_type, Agent.admin_state_up)
    )
    now = utcnow()
    living = [agent for agent in candidates if is_alive(agent, now)]
    router = await session.get(Router, resource_id) if agent_type == L3_AGENT else None
    if router is not None and router.distributed:
        living = [agent for agent in living if agent_mode(agent) != "legacy"]
    for agent in living:
        if not tunnels(agent):
            await _bind(session, agent.agent_type, resource_id, agent.id)
    overlay = [agent for agent in living if tunnels(agent)]
    wanted = 1
    if router is not None and router.ha:
        wanted = max_ha_agents or len(overlay)
    for _ in range(min(wanted, len(overlay))):
        chosen = await _least_loaded(session, agent_type, overlay)
        await _bind(session, agent_type, resource_id, chosen.id)
        overlay.remove(chosen)
    if router is not None:
        await settle_ha_ports(session, resource_id)


async def reschedule_router(
    session: AsyncSession, router_id: str, max_ha_agents: int = 3, unbind: bool = False
) -> None:
    """A router made distributed or centralized, HA or not: unbound from the agents that
    may not host it any more (legacy ones, for a distributed router; all of them when
    its HA changed, as Neutron's _reconfigure_ha_resources), then scheduled as a new
    one when none is left."""
    if unbind:
        await session.execute(delete(RouterL3Agent).where(RouterL3Agent.router_id == router_id))
    elif await session.scalar(select(Router.distributed).where(Router.id == router_id)):
        bound = await session.scalars(
            select(Agent)
            .join(RouterL3Agent, RouterL3Agent.agent_id == Agent.id)
            .where(RouterL3Agent.router_id == router_id)
        )
        for agent in list(bound):
            if agent_mode(agent) == "legacy":
                await session.execute(
                    delete(RouterL3Agent).where(
                        RouterL3Agent.router_id == router_id, RouterL3Agent.agent_id == agent.id
                    )
                )
    await schedule(session, L3_AGENT, router_id, max_ha_agents)


async def _least_loaded(session: AsyncSession, agent_type: str, agents: list[Agent]) -> Agent:
    model, _ = BINDINGS[agent_type]
    loads = dict(
        (
            await session.execute(
                select(model.agent_id, func.count())
                .where(model.agent_id.in_([a.id for a in agents]))
                .group_by(model.agent_id)
            )
        ).all()
    )
    return min(agents, key=lambda a: (loads.get(a.id, 0), a.host))


async def _auto_schedule(
    session: AsyncSession, agent: Agent, everything: bool, config: Any
) -> bool:
    """A new agent takes every network with DHCP (or router); a known one, at each
    heartbeat, those no agent serves (Neutron's auto-scheduling; it also settles a
    network made while its first agent registered). A disabled agent takes nothing.
    A tunnelling agent takes only what no living tunnelling agent serves. True when it
    took any."""
    if not agent.admin_state_up:
        return False
    model, column = BINDINGS[agent.agent_type]
    if agent.agent_type == DHCP_AGENT:
        wanted = set(
            await session.scalars(select(Port.network_id).where(Port.device_owner == DHCP))
        )
    elif agent_mode(agent) == "legacy":
        wanted = set(await session.scalars(select(Router.id).where(~Router.distributed)))
    else:
        wanted = set(await session.scalars(select(Router.id)))
    if tunnels(agent):
        taken = await _take_over(session, agent, wanted)
        if agent.agent_type == L3_AGENT:
            taken |= await _join_ha_routers(session, agent, wanted, config.max_l3_agents_per_router)
        return taken
    served = set(await session.scalars(select(column)))
    mine = set(await session.scalars(select(column).where(model.agent_id == agent.id)))
    taking = wanted - mine - (set() if everything else served)
    for resource_id in taking:
        await _bind(session, agent.agent_type, resource_id, agent.id)
    return bool(taking)


async def _join_ha_routers(
    session: AsyncSession, agent: Agent, wanted: set[str], max_agents: int
) -> bool:
    """The HA routers hosted by fewer than `max_agents` tunnelling agents (0: by every
    one) that this agent does not host: it joins them (Neutron's auto-scheduling of HA
    routers to additional agents)."""
    ha = set(await session.scalars(select(Router.id).where(Router.ha, Router.id.in_(wanted))))
    if not ha:
        return False
    rows = (
        await session.execute(
            select(RouterL3Agent.router_id, Agent)
            .join(Agent, Agent.id == RouterL3Agent.agent_id)
            .where(RouterL3Agent.router_id.in_(ha))
        )
    ).all()
    hosting: dict[str, set[str]] = {router_id: set() for router_id in ha}
    for router_id, hosting_agent in rows:
        if tunnels(hosting_agent):
            hosting[router_id].add(hosting_agent.id)
    joining = [
        router_id
        for router_id, agents in hosting.items()
        if agent.id not in agents and (not max_agents or len(agents) < max_agents)
    ]
    for router_id in joining:
        await _bind(session, L3_AGENT, router_id, agent.id)
    return bool(joining)


async def _take_over(session: AsyncSession, agent: Agent, wanted: set[str]) -> bool:
    """What no living tunnelling agent serves goes to `agent`; bindings to dead
    tunnelling agents of those are removed (their host is gone from the overlay)."""
    model, column = BINDINGS[agent.agent_type]
    rows = (
        await session.execute(
            select(column, Agent)
            .join(Agent, Agent.id == model.agent_id)
            .where(column.in_(wanted) if wanted else column.is_(None))
        )
    ).all()
    now = utcnow()
    covered = {rid for rid, a in rows if tunnels(a) and is_alive(a, now)}
    dead = [(rid, a) for rid, a in rows if tunnels(a) and not is_alive(a, now)]
    taking = wanted - covered
    for resource_id, dead_agent in dead:
        if resource_id in taking:
            await session.execute(
                delete(model).where(column == resource_id, model.agent_id == dead_agent.id)
            )
    for resource_id in taking:
        await _bind(session, agent.agent_type, resource_id, agent.id)
    return bool(taking)


async def _bind(session: AsyncSession, agent_type: str, resource_id: str, agent_id: str) -> None:
    """Bind a network or router to an agent, unless a concurrent transaction just did
    (the agent's first heartbeat and the bootstrap may bind the same network at once:
    on PostgreSQL/MariaDB neither sees the other's row until it commits)."""
    model, column = BINDINGS[agent_type]
    try:
        async with session.begin_nested():
            session.add(model(**{column.key: resource_id, "agent_id": agent_id}))
    except IntegrityError:
        pass  # bound already: the savepoint is rolled back, the transaction goes on
    if agent_type == L3_AGENT:
        await settle_ha_ports(session, resource_id)


def served(agent_type: str, host: str) -> Select:
    """SQL: the ids of the networks (DHCP) or routers (L3) the host's agent serves."""
    model, column = BINDINGS[agent_type]
    query = select(column).join(Agent, Agent.id == model.agent_id)
    return query.where(Agent.host == host, Agent.agent_type == agent_type)
