"""/v2.0/rbac-policies (api-ref: RBAC Policies). The rules are in cumulo.network.rbac."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network import rbac
from cumulo.network.api.common import (
    caller,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    to_str,
)
from cumulo.network.core import ACCESS_EXTERNAL, ACCESS_SHARED, EVERY_PROJECT, NetworkService
from cumulo.network.errors import InvalidActionForType, InvalidInput, RbacPolicyNotFound
from cumulo.network.models import RbacPolicy
from cumulo.network.ports import write_retrying

CREATE_ATTRS = ("object_type", "object_id", "action", "target_tenant")


def render_policy(p: RbacPolicy) -> dict[str, Any]:
    return {
        "id": p.id,
        "project_id": p.project_id,
        "tenant_id": p.project_id,
        "object_type": p.object_type,
        "object_id": p.object_id,
        "action": p.action,
        "target_tenant": p.target_project,
    }


def _mine(service: NetworkService, ctx: RequestContext) -> Any:
    """Policies are seen by the project that wrote them (and admins), not by their target."""
    return True if service.is_admin(ctx) else RbacPolicy.project_id == ctx.project_id


async def _get(service: NetworkService, ctx: RequestContext, session, policy_id: str) -> RbacPolicy:
    policy = await session.scalar(
        select(RbacPolicy).where(RbacPolicy.id == policy_id, _mine(service, ctx))
    )
    if policy is None:
        raise RbacPolicyNotFound(f"RBAC policy of type unknown with ID {policy_id} not found")
    return policy


def _target(service: NetworkService, ctx: RequestContext, value: Any, rule: str) -> str:
    target = to_str("target_tenant", value)
    if target == EVERY_PROJECT:
        # Only an admin shares with every project (Neutron: restrict_wildcard).
        service.enforce(ctx, rule)
    return target


async def list_policies(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    query = select(RbacPolicy).where(_mine(service, ctx))
    # target_project: the Keystone v3 name Neutron also accepts for target_tenant.
    targets = request.query_params.getlist("target_project")
    if targets:
        query = query.where(RbacPolicy.target_project.in_(targets))
    async with service.db.read() as session:
        policies = list(await session.scalars(query))
    return list_response(request, "rbac_policies", [render_policy(p) for p in policies])


@describes(body=wrapped("rbac_policy", CREATE_ATTRS), resource="rbac_policy")
async def create_policy(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "rbac_policy", CREATE_ATTRS)
    for name in CREATE_ATTRS:
        if name not in a:
            raise BadRequest(f"Failed to parse request. Required attribute '{name}' not specified")
    object_type = to_str("object_type", a["object_type"])
    if object_type not in rbac.ACTIONS:
        raise InvalidInput(
            f"Invalid input for object_type. Reason: '{object_type}' is not in "
            f"{sorted(rbac.ACTIONS)}."
        )
    action = to_str("action", a["action"])
    if action not in (ACCESS_EXTERNAL, ACCESS_SHARED):
        raise InvalidInput(
            f"Invalid input for action. Reason: '{action}' is not in "
            f"['{ACCESS_EXTERNAL}', '{ACCESS_SHARED}']."
        )
    if action not in rbac.ACTIONS[object_type]:
        raise InvalidActionForType(
            f"Invalid action '{action}' for object type '{object_type}'. Valid actions: "
            f"{list(rbac.ACTIONS[object_type])}"
        )
    object_id = to_str("object_id", a["object_id"], 36)
    project_id = owner_of(service, ctx, a)
    service.enforce(ctx, "network:owner", project_id)
    target = _target(service, ctx, a["target_tenant"], "network:create_rbac_policy:target_tenant")

    async def work(session):
        obj = await rbac.object_to_share(session, service, ctx, object_type, object_id)
        await service.check_quota(session, project_id, "rbac_policy")
        return await rbac.grant(session, obj, object_type, action, target, project_id)

    policy = await write_retrying(service.db, work)
    await service.changed()
    return show(request, "rbac_policy", render_policy(policy), 201)


async def show_policy(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        policy = await _get(service, ctx, session, request.path_params["policy_id"])
    return show(request, "rbac_policy", render_policy(policy))


@describes(body=wrapped("rbac_policy", CREATE_ATTRS), resource="rbac_policy")
async def update_policy(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "rbac_policy", CREATE_ATTRS)
    fixed = sorted(set(a) - {"target_tenant"})
    if fixed:
        raise BadRequest(f"Cannot update read-only attribute {fixed[0]}")
    policy_id = request.path_params["policy_id"]

    async def work(session):
        policy = await _get(service, ctx, session, policy_id)
        service.enforce(ctx, "network:owner", policy.project_id)
        if "target_tenant" in a:
            target = _target(
                service, ctx, a["target_tenant"], "network:update_rbac_policy:target_tenant"
            )
            obj = await session.get(rbac.MODELS[policy.object_type], policy.object_id)
            await rbac.retarget(session, obj, policy, target)
        return policy

    policy = await write_retrying(service.db, work)
    await service.changed()
    return show(request, "rbac_policy", render_policy(policy))


async def delete_policy(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    policy_id = request.path_params["policy_id"]

    async def work(session):
        policy = await _get(service, ctx, session, policy_id)
        service.enforce(ctx, "network:owner", policy.project_id)
        obj = await session.get(rbac.MODELS[policy.object_type], policy.object_id)
        await rbac.revoke(session, obj, policy)

    await write_retrying(service.db, work)
    await service.changed()
    return no_content()


routes = [
    Route("/v2.0/rbac-policies", list_policies, methods=["GET"]),
    Route("/v2.0/rbac-policies", create_policy, methods=["POST"]),
    Route("/v2.0/rbac-policies/{policy_id}", show_policy, methods=["GET"]),
    Route("/v2.0/rbac-policies/{policy_id}", update_policy, methods=["PUT"]),
    Route("/v2.0/rbac-policies/{policy_id}", delete_policy, methods=["DELETE"]),
]
