"""HA routers (Neutron's l3-ha extension, l3_hamode_db): what the server keeps for them.

An HA router is bound to several L3 agents (agents.py schedules it); each hosting agent
runs it in its namespace under keepalived, which elects one of them by VRRP to hold the
router's addresses (the data plane side: dataplane/keepalived.py). VRRP goes over the
project's HA network, "HA network tenant <project>" (owned by no project, as Neutron's:
only admins see it), made with the project's first HA router and removed with its last.
Each hosting agent has an HA port on it (`network:router_ha_interface`, named "HA port
tenant <project>", bound to the agent's host); each router a VRRP id unique among the
project's HA routers. The agents report which of them is active; an agent that stopped
reporting is shown standby (unknown when every hosting agent is silent), as Neutron's
get_l3_bindings_hosting_router_with_ha_states.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.network.core import NetworkService, new_id
from cumulo.network.errors import NoVRIDAvailable
from cumulo.network.models import (
    Agent,
    HaRouterNetwork,
    IpAllocation,
    Network,
    Port,
    Router,
    RouterL3Agent,
    Subnet,
)
from cumulo.network.ports import (
    ROUTER_GATEWAY,
    ROUTER_HA_INTERFACE,
    ROUTER_INTERFACE_HA,
    delete_port_row,
    new_port,
)

ACTIVE, STANDBY, UNKNOWN = "active", "standby", "unknown"
VR_IDS = range(1, 255)  # VRRP's virtual router ids (Neutron's VR_ID_RANGE)
HA_NETWORK_NAME = "HA network tenant %s"
HA_SUBNET_NAME = "HA subnet tenant %s"
HA_PORT_NAME = "HA port tenant %s"


async def ensure_ha_network(
    session: AsyncSession, service: NetworkService, project_id: str
) -> Network:
    """The project's HA network and subnet, made the first time (Neutron's
    _create_ha_network: no project, not shared, no DHCP, no gateway; a tenant network
    of the cloud's type, so VRRP reaches every host the routers run on)."""
    found = await session.scalar(
        select(Network)
        .join(HaRouterNetwork, HaRouterNetwork.network_id == Network.id)
        .where(HaRouterNetwork.project_id == project_id)
    )
    if found is not None:
        return found
    net = await service.add_tenant_network(session, "", HA_NETWORK_NAME % project_id)
    cidr = ipaddress.ip_network(service.config.network.l3_ha_net_cidr)
    session.add(
        Subnet(
            id=new_id(),
            project_id="",
            network_id=net.id,
            name=HA_SUBNET_NAME % project_id,
            ip_version=4,
            cidr=str(cidr),
            gateway_ip=None,
            enable_dhcp=False,
            allocation_pools=[{"start": str(cidr[1]), "end": str(cidr[-2])}],
            host_routes=[],
            dns_nameservers=[],
        )
    )
    session.add(HaRouterNetwork(project_id=project_id, network_id=net.id))
    await session.flush()
    return net


async def apply_default(session: AsyncSession, service: NetworkService, router: Router) -> None:
    """A router the cloud makes itself (the demo project's, an auto-allocated one) is HA
    when the cloud's routers are by default ([network] l3_ha) and it is not distributed,
    as Neutron's create_router without `ha`."""
    router.ha = service.config.network.l3_ha and not router.distributed
    if router.ha:
        await ensure_ha_network(session, service, router.project_id)
        await allocate_vr_id(session, router)


async def allocate_vr_id(session: AsyncSession, router: Router) -> None:
    """A VRRP id for the router, free among its project's HA routers (Neutron's
    _ensure_vr_id; the unique key settles two picked at once: the write is retried)."""
    if router.ha_vr_id:
        return
    used = set(
        await session.scalars(
            select(Router.ha_vr_id).where(
                Router.project_id == router.project_id, Router.ha_vr_id.is_not(None)
            )
        )
    )
    free = [i for i in VR_IDS if i not in used]
    if not free:
        raise NoVRIDAvailable(
            "No more Virtual Router Identifier (VRID) available when creating router "
            f"{router.id}. The limit of number of HA Routers per tenant is 254."
        )
    router.ha_vr_id = random.choice(free)


async def settle_ha_ports(session: AsyncSession, router_id: str) -> None:
    """An HA port on the project's HA network for each L3 agent hosting the router (the
    new bindings' state standby until the agent reports), none for agents that no longer
    host it, and none at all for a router that is not HA."""
    router = await session.get(Router, router_id)
    if router is None:
        return
    ports = list(
        await session.scalars(
            select(Port).where(
                Port.device_id == router_id, Port.device_owner == ROUTER_HA_INTERFACE
            )
        )
    )
    hosts = set()
    if router.ha:
        hosts = set(
            await session.scalars(
                select(Agent.host)
                .join(RouterL3Agent, RouterL3Agent.agent_id == Agent.id)
                .where(RouterL3Agent.router_id == router_id)
            )
        )
        await session.execute(
            update(RouterL3Agent)
            .where(RouterL3Agent.router_id == router_id, RouterL3Agent.ha_state.is_(None))
            .values(ha_state=STANDBY)
        )
    have = {p.host for p in ports}
    for port in ports:
        if port.host not in hosts:
            await delete_port_row(session, port)
    if not hosts - have:
        return
    network = await session.scalar(
        select(Network)
        .join(HaRouterNetwork, HaRouterNetwork.network_id == Network.id)
        .where(HaRouterNetwork.project_id == router.project_id)
    )
    for host in sorted(hosts - have):
        await new_port(
            session,
            network,
            project_id="",
            name=HA_PORT_NAME % router.project_id,
            device_owner=ROUTER_HA_INTERFACE,
            device_id=router_id,
            host=host,
            status="ACTIVE",
            port_security_enabled=False,
        )


async def delete_router_row(session: AsyncSession, router: Router) -> None:
    """A router going: its HA ports first, and after it the project's HA network when it
    was the last HA router there."""
    ha = router.ha
    router.ha = False
    await settle_ha_ports(session, router.id)
    await session.delete(router)
    await session.flush()
    if ha:
        await drop_unused_ha_network(session, router.project_id)


async def drop_unused_ha_network(session: AsyncSession, project_id: str) -> None:
    """The project's HA network, once its last HA router is gone (Neutron's
    safe_delete_ha_network after a router's deletion or its HA turned off)."""
    from cumulo.network.api.networks import delete_network_rows

    if await session.scalar(
        select(Router.id).where(Router.project_id == project_id, Router.ha).limit(1)
    ):
        return
    network_id = await session.scalar(
        select(HaRouterNetwork.network_id).where(HaRouterNetwork.project_id == project_id)
    )
    if network_id is None:
        return
    if await session.scalar(select(Port.id).where(Port.network_id == network_id).limit(1)):
        return  # still in use (as Neutron's NetworkInUse, which it swallows)
    await session.execute(
        IpAllocation.__table__.delete().where(IpAllocation.network_id == network_id)
    )
    await delete_network_rows(session, network_id)


async def report_states(
    session: AsyncSession, agent_id: str, host: str, states: dict[str, str]
) -> bool:
    """The states the L3 agent `agent_id` on `host` reports for its HA routers
    (Neutron's update_routers_states). True when any changed."""
    changed = False
    for router_id, state in states.items():
        if state not in (ACTIVE, STANDBY):
            continue
        row = await session.get(RouterL3Agent, {"router_id": router_id, "agent_id": agent_id})
        if row is None or row.ha_state == state:
            continue
        row.ha_state = state
        changed = True
        if state == ACTIVE:
            # The last host to become active holds the router's ports (as Neutron's
            # _update_router_port_bindings): L2 population sends there, not to a host
            # that died while active (still shown active until its agent is seen down).
            await session.execute(
                update(Port)
                .where(
                    Port.device_id == router_id,
                    Port.device_owner.in_((ROUTER_INTERFACE_HA, ROUTER_GATEWAY)),
                )
                .values(host=host)
            )
    return changed


def shown_states(rows: list[tuple[Agent, str | None]], alive: dict[str, bool]) -> dict[str, Any]:
    """Each hosting agent's HA state as the API shows it: an agent that stopped
    reporting is no longer active (standby; unknown when none of them reports)."""
    silent = all(not alive[agent.id] for agent, _ in rows)
    shown = {}
    for agent, state in rows:
        if state == ACTIVE and not alive[agent.id]:
            state = UNKNOWN if silent else STANDBY
        shown[agent.id] = state
    return shown
