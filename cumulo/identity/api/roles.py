"""/v3/roles: CRUD, domain-specific roles, and implied roles (role inference rules)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictStr
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.identity.api.common import (
    Body,
    ClosedBody,
    Name,
    authorize,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    self_link,
)
from cumulo.identity.models import GLOBAL, Assignment, Domain, ImpliedRole, Role

# Keystone refuses to let any role imply these (assignment.prohibited_implied_role).
PROHIBITED_IMPLIED_ROLES = ("admin",)


class RoleOptions(ClosedBody):
    """Keystone's resource options for roles: only `immutable` (null removes it)."""

    immutable: StrictBool | None = None


class RoleCreate(Body):
    name: StrictStr = Name(255)
    domain_id: StrictStr | None = Field(None, min_length=1, max_length=64)
    description: StrictStr | None = Field(None, max_length=65535)
    options: RoleOptions = Field(default_factory=RoleOptions)


class RoleUpdate(Body):
    name: StrictStr | None = Name(255, required=False)
    domain_id: StrictStr | None = None
    description: StrictStr | None = Field(None, max_length=65535)
    options: RoleOptions | None = None


def render_role(request: Request, role: Role) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "domain_id": role.domain_id or None,
        "description": role.description,
        "options": dict(role.options or {}),
        "links": self_link(request, f"roles/{role.id}"),
    }


def _options(options: RoleOptions, current: dict[str, Any] | None = None) -> dict[str, Any]:
    merged = dict(current or {})
    for key in options.model_fields_set:
        value = getattr(options, key)
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _conflict(name: str | None) -> Conflict:
    return Conflict(
        f"Conflict occurred attempting to store role - Duplicate entry found with name {name}."
    )


def _role_body(data: Any, model: type[Body]) -> Any:
    return validate(model, data.get("role") if isinstance(data, dict) else None)


async def load_role(request: Request, role_id: str) -> Role:
    async with identity_of(request).read() as session:
        role = await session.get(Role, role_id)
    if role is None:
        raise NotFound(f"Could not find role: {role_id}.")
    return role


def _target(role: Role) -> dict[str, Any]:
    return {"role": {"id": role.id, "domain_id": role.domain_id or None}}


async def create_role(request: Request) -> Response:
    await authorize(request, "identity:create_role")
    body: RoleCreate = _role_body(await json_body(request), RoleCreate)
    role = Role(
        id=new_id(),
        name=body.name,
        domain_id=body.domain_id or GLOBAL,
        description=body.description,
        options=_options(body.options),
    )
    try:
        async with identity_of(request).write() as session:
            if body.domain_id and await session.get(Domain, body.domain_id) is None:
                raise NotFound(f"Could not find domain: {body.domain_id}.")
            session.add(role)
    except IntegrityError:
        raise _conflict(body.name) from None
    return json({"role": render_role(request, role)}, status=201)


async def list_roles(request: Request) -> Response:
    """GET /v3/roles: global roles, or a domain's roles with ?domain_id= (as Keystone)."""
    await authorize(request, "identity:list_roles")
    q = request.query_params
    # openstacksdk's find_role sends domain_id=None (the string) for global roles.
    domain_id = q.get("domain_id")
    query = select(Role).where(
        Role.domain_id == (GLOBAL if domain_id in (None, "", "None") else domain_id)
    )
    if q.get("name"):
        query = query.where(Role.name == q["name"])
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, Role.id)
    return json(list_body(request, "roles", [render_role(request, r) for r in rows], truncated))


async def show_role(request: Request) -> Response:
    role = await load_role(request, request.path_params["role_id"])
    await authorize(request, "identity:get_role", _target(role))
    return json({"role": render_role(request, role)})


async def update_role(request: Request) -> Response:
    role_id = request.path_params["role_id"]
    body: RoleUpdate = _role_body(await json_body(request), RoleUpdate)
    role = await load_role(request, role_id)
    await authorize(request, "identity:update_role", _target(role))
    fields = body.model_fields_set
    if "domain_id" in fields and (body.domain_id or GLOBAL) != role.domain_id:
        raise BadRequest("Update of `domain_id` is not allowed.")
    if "name" in fields and body.name is None:
        raise BadRequest("Invalid input for field 'name': None is not of type 'string'.")
    try:
        async with identity_of(request).write() as session:
            row = await session.get(Role, role_id)
            if row is None:
                raise NotFound(f"Could not find role: {role_id}.")
            options = (
                _options(body.options, row.options) if body.options is not None else row.options
            )
            if (row.options or {}).get("immutable") and options.get("immutable"):
                raise Forbidden(
                    f"Unable to update immutable role {role_id}: "
                    "set options.immutable to false first."
                )
            if "name" in fields:
                row.name = body.name
            if "description" in fields:
                row.description = body.description
            row.options = options
    except IntegrityError:
        raise _conflict(body.name) from None
    return json({"role": render_role(request, row)})


async def delete_role(request: Request) -> Response:
    """DELETE /v3/roles/{id}: its grants and inference rules go with it."""
    role_id = request.path_params["role_id"]
    role = await load_role(request, role_id)
    await authorize(request, "identity:delete_role", _target(role))
    if (role.options or {}).get("immutable"):
        raise Forbidden(f"Unable to delete immutable role {role_id}.")
    async with identity_of(request).write() as session:
        await session.execute(delete(Assignment).where(Assignment.role_id == role_id))
        await session.execute(
            delete(ImpliedRole).where(
                or_(ImpliedRole.prior_role_id == role_id, ImpliedRole.implied_role_id == role_id)
            )
        )
        result = await session.execute(delete(Role).where(Role.id == role_id))
        if not result.rowcount:
            raise NotFound(f"Could not find role: {role_id}.")
    return no_content()


# -- implied roles (api-ref: Roles > role inference rules) ---------------------------


def _role_ref(request: Request, role: Role) -> dict[str, Any]:
    return {"id": role.id, "name": role.name, "links": self_link(request, f"roles/{role.id}")}


async def _rule_roles(request: Request) -> tuple[Role, Role]:
    prior = await load_role(request, request.path_params["prior_role_id"])
    implied = await load_role(request, request.path_params["implied_role_id"])
    return prior, implied


def _rule_body(request: Request, prior: Role, implied: Role) -> dict[str, Any]:
    return {
        "role_inference": {
            "prior_role": _role_ref(request, prior),
            "implies": _role_ref(request, implied),
        },
        "links": self_link(request, f"roles/{prior.id}/implies/{implied.id}"),
    }


async def _rule_exists(request: Request, prior: Role, implied: Role) -> None:
    key = {"prior_role_id": prior.id, "implied_role_id": implied.id}
    async with identity_of(request).read() as session:
        if await session.get(ImpliedRole, key) is None:
            raise NotFound(f"{prior.id} does not imply {implied.id}.")


async def create_implied_role(request: Request) -> Response:
    """PUT /v3/roles/{prior}/implies/{implied}."""
    await authorize(request, "identity:create_implied_role")
    prior, implied = await _rule_roles(request)
    if implied.name in PROHIBITED_IMPLIED_ROLES:
        raise Forbidden(f"{implied.id} cannot be an implied roles.")
    if prior.domain_id == GLOBAL and implied.domain_id != GLOBAL:
        raise Forbidden("Global role cannot imply a domain-specific role")
    key = {"prior_role_id": prior.id, "implied_role_id": implied.id}
    async with identity_of(request).write() as session:
        if await session.get(ImpliedRole, key) is None:
            session.add(ImpliedRole(**key))
    return json(_rule_body(request, prior, implied), status=201)


async def show_implied_role(request: Request) -> Response:
    await authorize(request, "identity:get_implied_role")
    prior, implied = await _rule_roles(request)
    await _rule_exists(request, prior, implied)
    return json(_rule_body(request, prior, implied))


async def check_implied_role(request: Request) -> Response:
    await authorize(request, "identity:get_implied_role")
    prior, implied = await _rule_roles(request)
    await _rule_exists(request, prior, implied)
    return no_content()


async def delete_implied_role(request: Request) -> Response:
    await authorize(request, "identity:delete_implied_role")
    prior, implied = await _rule_roles(request)
    async with identity_of(request).write() as session:
        result = await session.execute(
            delete(ImpliedRole).where(
                ImpliedRole.prior_role_id == prior.id, ImpliedRole.implied_role_id == implied.id
            )
        )
        if not result.rowcount:
            raise NotFound(f"{prior.id} does not imply {implied.id}.")
    return no_content()


async def _inferences(request: Request, prior_id: str | None = None) -> list[dict[str, Any]]:
    """Inference rules grouped by prior role: [{prior_role, implies: [...]}]."""
    query = select(ImpliedRole)
    if prior_id is not None:
        query = query.where(ImpliedRole.prior_role_id == prior_id)
    async with identity_of(request).read() as session:
        rules = (await session.scalars(query)).all()
        ids = {r.prior_role_id for r in rules} | {r.implied_role_id for r in rules}
        roles = {r.id: r for r in await session.scalars(select(Role).where(Role.id.in_(ids)))}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rule in sorted(rules, key=lambda r: (roles[r.prior_role_id].name, r.implied_role_id)):
        grouped.setdefault(rule.prior_role_id, []).append(
            _role_ref(request, roles[rule.implied_role_id])
        )
    return [
        {"prior_role": _role_ref(request, roles[prior]), "implies": implies}
        for prior, implies in grouped.items()
    ]


async def list_implied_roles(request: Request) -> Response:
    """GET /v3/roles/{prior}/implies."""
    await authorize(request, "identity:list_implied_roles")
    prior = await load_role(request, request.path_params["prior_role_id"])
    found = await _inferences(request, prior.id)
    implies = found[0]["implies"] if found else []
    return json(
        {
            "role_inference": {"prior_role": _role_ref(request, prior), "implies": implies},
            "links": self_link(request, f"roles/{prior.id}/implies"),
        }
    )


async def list_role_inferences(request: Request) -> Response:
    """GET /v3/role_inferences: every rule, grouped by prior role."""
    await authorize(request, "identity:list_role_inference_rules")
    return json(
        {
            "role_inferences": await _inferences(request),
            "links": self_link(request, "role_inferences"),
        }
    )


_IMPLIES = "/v3/roles/{prior_role_id}/implies/{implied_role_id}"

routes = [
    Route("/v3/roles", create_role, methods=["POST"]),
    Route("/v3/roles", list_roles, methods=["GET"]),
    Route("/v3/roles/{role_id}", show_role, methods=["GET"]),
    Route("/v3/roles/{role_id}", update_role, methods=["PATCH"]),
    Route("/v3/roles/{role_id}", delete_role, methods=["DELETE"]),
    Route("/v3/roles/{prior_role_id}/implies", list_implied_roles, methods=["GET"]),
    # HEAD first: Starlette lets a GET route answer HEAD too.
    Route(_IMPLIES, check_implied_role, methods=["HEAD"]),
    Route(_IMPLIES, show_implied_role, methods=["GET"]),
    Route(_IMPLIES, create_implied_role, methods=["PUT"]),
    Route(_IMPLIES, delete_implied_role, methods=["DELETE"]),
    Route("/v3/role_inferences", list_role_inferences, methods=["GET"]),
]
