"""/v2.0/agents (api-ref: Networking Agents), and the DHCP and L3 agent schedulers'
bindings (api-ref: DHCP agent scheduler, L3 agent scheduler): which agents serve a
network or router, and an admin's moves of them (see cumulo.network.agents).

Admin only, as Neutron: others list none and find none (404). A disabled agent
(`admin_state_up` false) is given no new networks or routers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network.agents import BINDINGS, DHCP_AGENT, L3_AGENT, agent_mode, is_alive
from cumulo.network.api.common import (
    caller,
    json,
    list_response,
    no_content,
    resource_body,
    service_of,
    show,
    to_bool,
    to_str,
)
from cumulo.network.api.networks import render_networks, visible_network
from cumulo.network.api.routers import render_routers, visible_router
from cumulo.network.core import NetworkService
from cumulo.network.errors import (
    AgentNotFound,
    NetworkHostedByDHCPAgent,
    NetworkNotHostedByDhcpAgent,
    RouterHostedByL3Agent,
    RouterL3AgentMismatch,
    RouterNotHostedByL3Agent,
)
from cumulo.network.l3_ha import settle_ha_ports, shown_states
from cumulo.network.models import (
    Agent,
    DvrHostMac,
    Network,
    NetworkDhcpAgent,
    Router,
    RouterL3Agent,
)
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
    rendered = [render_agent(a, is_alive(a, now)) for a in agents]
    # Neutron on MySQL matches agent_type="DHCP Agent" (its collation ignores case).
    return list_response(request, "agents", rendered, casefold=("agent_type",))


async def show_agent(request: Request) -> Response:
    service = service_of(request)
    agent = await _agent(service, request)
    return show(request, "agent", render_agent(agent, is_alive(agent)))


@describes(body=wrapped("agent", ("admin_state_up", "description")), resource="agent")
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
    """An agent row goes; a living agent makes it again with its next heartbeat. The
    host's last agent gone, so is its DVR MAC (as Neutron's dvr_mac_db)."""
    service = service_of(request)
    agent = await _agent(service, request)

    async def work(session) -> None:
        routers = list(
            await session.scalars(
                select(RouterL3Agent.router_id).where(RouterL3Agent.agent_id == agent.id)
            )
        )
        await session.execute(delete(Agent).where(Agent.id == agent.id))
        for router_id in routers:  # the HA ports on its host go with it
            await settle_ha_ports(session, router_id)
        if not await session.scalar(select(Agent.id).where(Agent.host == agent.host).limit(1)):
            await session.execute(delete(DvrHostMac).where(DvrHostMac.host == agent.host))

    await write_retrying(service.db, work)
    return no_content()


# /agents/{id}/<kind>: the agent type that serves it, the resource and its id attribute.
KINDS = {
    "dhcp-networks": (DHCP_AGENT, "network", "networks"),
    "l3-routers": (L3_AGENT, "router", "routers"),
}


async def _hosting(request: Request, kind: str, adding: bool) -> tuple[Agent, str]:
    """The agent of the path (of the kind's type; enabled, to be given more) and the
    resource id in the body or path."""
    service = service_of(request)
    agent = await _agent(service, request)
    agent_type, resource, _ = KINDS[kind]
    if agent.agent_type != agent_type or (adding and not agent.admin_state_up):
        which = "a valid DHCP Agent" if agent_type == DHCP_AGENT else "a L3 Agent"
        raise AgentNotFound(f"Agent {agent.id} is not {which} or has been disabled")
    resource_id = request.path_params.get(f"{resource}_id")
    if resource_id is None:
        body = await json_body(request)
        if not isinstance(body, dict) or f"{resource}_id" not in body:
            raise BadRequest(f"Failed to parse request. Required attribute '{resource}_id'.")
        resource_id = to_str(f"{resource}_id", body[f"{resource}_id"], 36)
    return agent, resource_id


async def _resource_row(request: Request, kind: str, resource_id: str) -> Any:
    service, ctx = service_of(request), await caller(request)
    if kind == "dhcp-networks":
        return await visible_network(service, ctx, resource_id)
    return await visible_router(service, ctx, resource_id)


async def _render(request: Request, kind: str, rows: list[Any]) -> list[dict[str, Any]]:
    service, ctx = service_of(request), await caller(request)
    if kind == "dhcp-networks":
        return await render_networks(service, ctx, rows)
    return await render_routers(service, rows, service.is_admin(ctx))


def _for_kind(handler: Callable[[Request, str], Awaitable[Response]], kind: str):
    """A route endpoint that calls `handler` for one kind of binding."""

    async def endpoint(request: Request) -> Response:
        return await handler(request, kind)

    return endpoint


async def list_served(request: Request, kind: str) -> Response:
    """GET /agents/{id}/dhcp-networks or /l3-routers."""
    service = service_of(request)
    agent = await _agent(service, request)
    _, resource, collection = KINDS[kind]
    model, column = BINDINGS[KINDS[kind][0]]
    table = Network if resource == "network" else Router
    async with service.db.read() as session:
        rows = list(
            await session.scalars(
                select(table).join(model, column == table.id).where(model.agent_id == agent.id)
            )
        )
    return list_response(request, collection, await _render(request, kind, rows))


async def add_served(request: Request, kind: str) -> Response:
    """POST /agents/{id}/dhcp-networks {network_id} or /l3-routers {router_id}."""
    service = service_of(request)
    agent, resource_id = await _hosting(request, kind, adding=True)
    row = await _resource_row(request, kind, resource_id)
    if kind == "l3-routers" and row.distributed and agent_mode(agent) == "legacy":
        raise RouterL3AgentMismatch(
            f"Cannot host distributed router {resource_id} on legacy L3 agent {agent.id}."
        )
    model, column = BINDINGS[agent.agent_type]

    async def work(session) -> None:
        if await session.get(model, {column.key: resource_id, "agent_id": agent.id}):
            if kind == "dhcp-networks":
                raise NetworkHostedByDHCPAgent(
                    f"The network {resource_id} has been already hosted by the DHCP Agent "
                    f"{agent.id}."
                )
            raise RouterHostedByL3Agent(
                f"The router {resource_id} has been already hosted by the L3 Agent {agent.id}."
            )
        session.add(model(**{column.key: resource_id, "agent_id": agent.id}))
        if kind == "l3-routers":
            await session.flush()
            await settle_ha_ports(session, resource_id)

    await write_retrying(service.db, work)
    await service.changed()
    return json(None, 201)  # Neutron's body: null


async def remove_served(request: Request, kind: str) -> Response:
    """DELETE /agents/{id}/dhcp-networks/{network_id} or /l3-routers/{router_id}."""
    service = service_of(request)
    agent, resource_id = await _hosting(request, kind, adding=False)
    model, column = BINDINGS[agent.agent_type]

    async def work(session) -> None:
        gone = await session.execute(
            delete(model).where(column == resource_id, model.agent_id == agent.id)
        )
        if gone.rowcount == 0:
            if kind == "dhcp-networks":
                raise NetworkNotHostedByDhcpAgent(
                    f"The network {resource_id} is not hosted by the DHCP agent {agent.id}."
                )
            raise RouterNotHostedByL3Agent(
                f"The router {resource_id} is not hosted by L3 agent {agent.id}."
            )
        if kind == "l3-routers":
            await settle_ha_ports(session, resource_id)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


async def agents_serving(request: Request) -> Response:
    """GET /networks/{id}/dhcp-agents or /routers/{id}/l3-agents (each L3 agent with the
    router's `ha_state` on it, None for a router that is not HA, as Neutron's HA
    scheduler shows them)."""
    service, ctx = service_of(request), await caller(request)
    kind = "dhcp-networks" if "network_id" in request.path_params else "l3-routers"
    resource_id = request.path_params.get("network_id") or request.path_params["router_id"]
    row = await _resource_row(request, kind, resource_id)
    now = utcnow()
    if kind == "dhcp-networks":
        agents: list[Agent] = []
        if service.is_admin(ctx):
            async with service.db.read() as session:
                query = select(Agent).join(NetworkDhcpAgent, NetworkDhcpAgent.agent_id == Agent.id)
                agents = list(
                    await session.scalars(query.where(NetworkDhcpAgent.network_id == resource_id))
                )
        bodies = [render_agent(a, is_alive(a, now)) for a in agents]
        return list_response(request, "agents", bodies)
    rows: list[tuple[Agent, str | None]] = []
    if service.is_admin(ctx):
        async with service.db.read() as session:
            rows = [
                (a, state)
                for a, state in await session.execute(
                    select(Agent, RouterL3Agent.ha_state)
                    .join(RouterL3Agent, RouterL3Agent.agent_id == Agent.id)
                    .where(RouterL3Agent.router_id == resource_id)
                )
            ]
    alive = {a.id: is_alive(a, now) for a, _ in rows}
    states = shown_states(rows, alive) if row.ha else {}
    bodies = [{**render_agent(a, alive[a.id]), "ha_state": states.get(a.id)} for a, _ in rows]
    return list_response(request, "agents", bodies)


routes = [
    Route("/v2.0/agents", list_agents, methods=["GET"]),
    Route("/v2.0/agents/{agent_id}", show_agent, methods=["GET"]),
    Route("/v2.0/agents/{agent_id}", update_agent, methods=["PUT"]),
    Route("/v2.0/agents/{agent_id}", delete_agent, methods=["DELETE"]),
    Route("/v2.0/networks/{network_id}/dhcp-agents", agents_serving, methods=["GET"]),
    Route("/v2.0/routers/{router_id}/l3-agents", agents_serving, methods=["GET"]),
]
for _kind, (_type, _resource, _collection) in KINDS.items():
    _base = f"/v2.0/agents/{{agent_id}}/{_kind}"
    routes += [
        Route(_base, _for_kind(list_served, _kind), methods=["GET"]),
        Route(_base, _for_kind(add_served, _kind), methods=["POST"]),
        Route(_base + f"/{{{_resource}_id}}", _for_kind(remove_served, _kind), methods=["DELETE"]),
    ]
