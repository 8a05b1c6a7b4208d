"""/v2.0/agents (api-ref: Networking Agents): the agents that report to this server.

Admin only, as Neutron: others list none and find none (404). What an agent does
not do here: `admin_state_up` false is recorded and shown, but nothing is scheduled
differently (cumulo's agent serves every network and router on its host).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.db import utcnow
from cumulo.network.agents import is_alive
from cumulo.network.api.common import (
    caller,
    list_response,
    no_content,
    resource_body,
    service_of,
    show,
    to_bool,
    to_str,
)
from cumulo.network.core import NetworkService
from cumulo.network.errors import AgentNotFound
from cumulo.network.models import Agent
from cumulo.network.ports import write_retrying


def _time(ts) -> str:
    """Neutron's agent timestamps: 2017-09-12 19:35:38."""
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def render_agent(agent: Agent, alive: bool) -> dict[str, Any]:
    return {
        "id": agent.id,
        "agent_type": agent.agent_type,
        "binary": agent.binary,
        "topic": agent.topic,
        "host": agent.host,
        "admin_state_up": agent.admin_state_up,
        "alive": alive,
        "availability_zone": agent.availability_zone,
        "description": agent.description or None,
        "configurations": agent.configurations,
        "created_at": _time(agent.created_at),
        "started_at": _time(agent.started_at),
        "heartbeat_timestamp": _time(agent.heartbeat_timestamp),
        "resources_synced": None,
    }


async def _agent(service: NetworkService, request: Request) -> Agent:
    ctx = await caller(request)
    agent_id = request.path_params["agent_id"]
    async with service.db.read() as session:
        agent = await session.get(Agent, agent_id)
    if agent is None or not service.is_admin(ctx):
        raise AgentNotFound(f"Agent {agent_id} could not be found.")
    return agent


async def list_agents(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    agents: list[Agent] = []
    if service.is_admin(ctx):
        async with service.db.read() as session:
            agents = list(await session.scalars(select(Agent)))
    now = utcnow()
    return list_response(request, "agents", [render_agent(a, is_alive(a, now)) for a in agents])


async def show_agent(request: Request) -> Response:
    service = service_of(request)
    agent = await _agent(service, request)
    return show(request, "agent", render_agent(agent, is_alive(agent)))


async def update_agent(request: Request) -> Response:
    service = service_of(request)
    a = await resource_body(request, "agent", ("admin_state_up", "description"))
    a.pop("project_id", None)
    agent = await _agent(service, request)

    async def work(session) -> Agent:
        row = await session.get(Agent, agent.id)
        if "admin_state_up" in a:
            row.admin_state_up = to_bool("admin_state_up", a["admin_state_up"])
        if "description" in a:
            row.description = to_str("description", a["description"] or "")
        return row

    agent = await write_retrying(service.db, work)
    return show(request, "agent", render_agent(agent, is_alive(agent)))


async def delete_agent(request: Request) -> Response:
    """An agent row goes; a living agent makes it again with its next heartbeat."""
    service = service_of(request)
    agent = await _agent(service, request)

    async def work(session) -> None:
        await session.execute(delete(Agent).where(Agent.id == agent.id))

    await write_retrying(service.db, work)
    return no_content()


routes = [
    Route("/v2.0/agents", list_agents, methods=["GET"]),
    Route("/v2.0/agents/{agent_id}", show_agent, methods=["GET"]),
    Route("/v2.0/agents/{agent_id}", update_agent, methods=["PUT"]),
    Route("/v2.0/agents/{agent_id}", delete_agent, methods=["DELETE"]),
]
