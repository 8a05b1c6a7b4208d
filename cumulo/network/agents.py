"""The agents registry: what each host's network agent reports, as Neutron's agents.

cumulo runs one agent process per host (cumulo.network.dataplane.agent) that does the
work of Neutron's L2, DHCP, L3 and metadata agents, so it is listed once per type.
It reports every `REPORT_INTERVAL` seconds; an agent silent for `AGENT_DOWN_TIME`
is shown `alive: false` (Neutron's `agent_down_time`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from cumulo.common.db import utcnow
from cumulo.network.core import NetworkService, new_id
from cumulo.network.models import Agent
from cumulo.network.ports import write_retrying

REPORT_INTERVAL = 30.0
AGENT_DOWN_TIME = timedelta(seconds=75)
BINARY = "cumulo-network-agent"
# Neutron's agent type names, with the availability zone Neutron gives each.
AGENT_TYPES = {
    "Linux bridge agent": None,
    "DHCP agent": "nova",
    "L3 agent": "nova",
    "Metadata agent": None,
}


def is_alive(agent: Agent, now: datetime | None = None) -> bool:
    return (now or utcnow()) - agent.heartbeat_timestamp < AGENT_DOWN_TIME


async def report_state(
    service: NetworkService, host: str, topic: str, configurations: dict[str, Any], start: bool
) -> None:
    """A heartbeat from the agent on `host`: its rows made or refreshed (started_at
    too when the agent has just started)."""

    async def work(session) -> None:
        now = utcnow()
        rows = await session.scalars(select(Agent).where(Agent.host == host))
        known = {row.agent_type: row for row in rows}
        for agent_type, zone in AGENT_TYPES.items():
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

    await write_retrying(service.db, work)
