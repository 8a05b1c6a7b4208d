"""Server groups (api-ref: Server groups (os-server-groups)).

Before 2.64 a group has a one-element `policies` list and an empty `metadata`; from
2.64 a `policy` and `rules` (max_server_per_host, for anti-affinity only).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Forbidden, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.compute import quotas
from cumulo.compute.api import wire
from cumulo.compute.api.common import (
    MAX_LIMIT,
    authorize,
    compute_of,
    json,
    no_content,
    version,
)
from cumulo.compute.models import Instance, ServerGroup, ServerGroupMember

POLICIES = ["anti-affinity", "affinity"]
SOFT_POLICIES = ["soft-anti-affinity", "soft-affinity"]


def group_view(request: Request, group: ServerGroup, members: list[str]) -> dict[str, Any]:
    v = version(request)
    body: dict[str, Any] = {"id": group.uuid, "name": group.name}
    if v >= (2, 64):
        body["policy"] = group.policy
        body["rules"] = dict(group.rules or {})
    else:
        body["policies"] = [group.policy]
        body["metadata"] = {}
    body["members"] = members
    if v >= (2, 13):
        body["project_id"] = group.project_id
        body["user_id"] = group.user_id
    return body


async def _members(s: AsyncSession, group_ids: list[int]) -> dict[int, list[str]]:
    """The servers (not deleted) of each group."""
    rows = await s.execute(
        select(ServerGroupMember.group_id, ServerGroupMember.instance_uuid)
        .join(Instance, Instance.uuid == ServerGroupMember.instance_uuid)
        .where(ServerGroupMember.group_id.in_(group_ids), Instance.deleted.is_(False))
        .order_by(Instance.id)
    )
    members: dict[int, list[str]] = {gid: [] for gid in group_ids}
    for group_id, instance_uuid in rows:
        members[group_id].append(instance_uuid)
    return members


def _offset_and_limit(request: Request) -> tuple[int, int]:
    params = request.query_params
    offset = wire.integer("offset", params.get("offset", "0"), 0)
    limit = wire.integer("limit", params.get("limit", str(MAX_LIMIT)), 0)
    return offset, min(limit, MAX_LIMIT)


async def list_groups(request: Request) -> Response:
    """GET /os-server-groups[?all_projects][&limit][&offset]"""
    ctx = await authorize(request, "compute:server_groups:read")
    offset, limit = _offset_and_limit(request)
    query = select(ServerGroup).order_by(ServerGroup.id)
    raw_all = request.query_params.get("all_projects")
    everyone = raw_all is not None and raw_all.lower() not in ("0", "f", "false", "off", "no")
    if not (
        everyone
        and compute_of(request).policy.check("compute:server_groups:index:all_projects", ctx)
    ):
        query = query.where(ServerGroup.project_id == ctx.project_id)
    async with compute_of(request).db.read() as s:
        groups = list((await s.scalars(query.offset(offset).limit(limit))).all())
        members = await _members(s, [g.id for g in groups])
    return json({"server_groups": [group_view(request, g, members[g.id]) for g in groups]})


def _policy_and_rules(request: Request, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
    allowed = POLICIES + (SOFT_POLICIES if version(request) >= (2, 15) else [])
    if version(request) >= (2, 64):
        wire.reject_unknown(body, {"name", "policy", "rules"})
        policy = body.get("policy")
        if policy not in allowed:
            raise wire.invalid("policy", policy, f"'{policy}' is not one of {allowed}")
        rules = body.get("rules", {})
        if not isinstance(rules, dict):
            raise wire.invalid("rules", rules, f"{rules!r} is not of type 'object'")
        wire.reject_unknown(rules, {"max_server_per_host"})
        if rules and policy != "anti-affinity":
            raise BadRequest("Only anti-affinity policy supports rules.")
        checked = {key: wire.integer(f"rules.{key}", value, 1) for key, value in rules.items()}
        return policy, checked
    wire.reject_unknown(body, {"name", "policies"})
    policies = body.get("policies")
    if not isinstance(policies, list) or len(policies) != 1 or policies[0] not in allowed:
        raise wire.invalid("policies", policies, f"must be a list of exactly one of {allowed}")
    return policies[0], {}


@describes(
    body=wrapped("server_group", ("name", "policies", "policy", "rules"), required=("name",)),
    resource="server_group",
)
async def create_group(request: Request) -> Response:
    """POST /os-server-groups: counted against the server_groups quota."""
    ctx: RequestContext = await authorize(request, "compute:server_groups:create")
    body = wire.object_body(await json_body(request), "server_group")
    if "name" not in body:
        raise BadRequest(
            "Invalid input for field/attribute server_group. 'name' is a required property"
        )
    name = wire.name("name", body["name"])
    policy, rules = _policy_and_rules(request, body)
    if not ctx.project_id:
        raise BadRequest("Server groups are created with a project-scoped token.")
    group = ServerGroup(
        uuid=str(uuid.uuid4()),
        name=name,
        project_id=ctx.project_id,
        user_id=ctx.user_id,
        policy=policy,
        rules=rules,
    )
    async with compute_of(request).db.write() as s:
        try:
            await s.run_sync(quotas.check, ctx.project_id, {"server_groups": 1})
        except quotas.QuotaExceeded:
            raise Forbidden("Quota exceeded, too many server groups.") from None
        s.add(group)
    return json({"server_group": group_view(request, group, [])})


async def _get(request: Request, rule: str) -> ServerGroup:
    """The group, if the caller may act on it: another project's group is a 404."""
    ctx = await authorize(request, rule)
    group_id = request.path_params["group_id"]
    async with compute_of(request).db.read() as s:
        group = await s.scalar(select(ServerGroup).where(ServerGroup.uuid == group_id))
    policy = compute_of(request).policy
    if group is None or not policy.check(rule, ctx, {"project_id": group.project_id}):
        raise NotFound(f"Instance group {group_id} could not be found.")
    return group


async def show_group(request: Request) -> Response:
    group = await _get(request, "compute:server_groups:read")
    async with compute_of(request).db.read() as s:
        members = await _members(s, [group.id])
    return json({"server_group": group_view(request, group, members[group.id])})


async def delete_group(request: Request) -> Response:
    group = await _get(request, "compute:server_groups:delete")
    async with compute_of(request).db.write() as s:
        await s.execute(delete(ServerGroupMember).where(ServerGroupMember.group_id == group.id))
        await s.execute(delete(ServerGroup).where(ServerGroup.id == group.id))
    return no_content(204)


routes = [
    Route("/v2.1/os-server-groups", list_groups, methods=["GET"]),
    Route("/v2.1/os-server-groups", create_group, methods=["POST"]),
    Route("/v2.1/os-server-groups/{group_id}", show_group, methods=["GET"]),
    Route("/v2.1/os-server-groups/{group_id}", delete_group, methods=["DELETE"]),
]
