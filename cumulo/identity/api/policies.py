"""/v3/policies: policy blobs stored for services to fetch (api-ref: Policies).

Keystone keeps them as opaque text with a MIME-ish `type`; it never evaluates them,
and neither does cumulo (each service enforces its own policy file).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.identity.api.common import (
    Body,
    apply_update,
    authorize,
    delete_row,
    extras_of,
    get_or_404,
    identity_of,
    json,
    list_rows,
    new_id,
    section,
    self_link,
    update_body,
)
from cumulo.identity.models import Policy

_FIELDS = {"id", "type", "blob", "links"}


class PolicyCreate(Body):
    blob: StrictStr
    type: StrictStr = Field(max_length=255)


class PolicyUpdate(Body):
    blob: StrictStr | None = None
    type: StrictStr | None = Field(None, max_length=255)


def render_policy(request: Request, p: Policy) -> dict[str, Any]:
    return {
        **(p.extra or {}),
        "id": p.id,
        "type": p.type,
        "blob": p.blob,
        "links": self_link(request, f"policies/{p.id}"),
    }


async def create_policy(request: Request) -> Response:
    await authorize(request, "identity:create_policy")
    body = validate(PolicyCreate, section(await json_body(request), "policy"))
    policy = Policy(id=new_id(), type=body.type, blob=body.blob, extra=extras_of(body, _FIELDS))
    async with identity_of(request).write() as session:
        session.add(policy)
    return json({"policy": render_policy(request, policy)}, status=201)


async def list_policies(request: Request) -> Response:
    await authorize(request, "identity:list_policies")
    return await list_rows(request, "policies", Policy, {"type": Policy.type}, render_policy)


async def show_policy(request: Request) -> Response:
    await authorize(request, "identity:get_policy")
    async with identity_of(request).read() as session:
        policy = await get_or_404(session, Policy, request.path_params["policy_id"])
    return json({"policy": render_policy(request, policy)})


async def update_policy(request: Request) -> Response:
    await authorize(request, "identity:update_policy")
    policy_id = request.path_params["policy_id"]
    body = await update_body(request, "policy", PolicyUpdate, policy_id)
    async with identity_of(request).write() as session:
        policy = await get_or_404(session, Policy, policy_id)
        apply_update(policy, body, ("type", "blob"), _FIELDS)
    return json({"policy": render_policy(request, policy)})


async def delete_policy(request: Request) -> Response:
    await authorize(request, "identity:delete_policy")
    return await delete_row(request, Policy, request.path_params["policy_id"])


routes = [
    Route("/v3/policies", create_policy, methods=["POST"]),
    Route("/v3/policies", list_policies, methods=["GET"]),
    Route("/v3/policies/{policy_id}", show_policy, methods=["GET"]),
    Route("/v3/policies/{policy_id}", update_policy, methods=["PATCH"]),
    Route("/v3/policies/{policy_id}", delete_policy, methods=["DELETE"]),
]
