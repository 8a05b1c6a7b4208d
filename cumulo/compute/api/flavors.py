"""Flavors, their extra specs and access lists (api-ref: Flavors, Flavors extra-specs,
Flavors access)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.common.openapi import describes, wrapped
from cumulo.compute.api import wire
from cumulo.compute.api.common import (
    authorize,
    compute_of,
    json,
    limit_and_marker,
    links,
    next_link,
    no_content,
    version,
)
from cumulo.compute.extra_specs import ExtraSpecInvalid, validate_extra_specs
from cumulo.compute.models import Flavor, FlavorProject

SORT_KEYS = {
    "created_at": Flavor.created_at,
    "description": Flavor.description,
    "disabled": Flavor.disabled,
    "ephemeral_gb": Flavor.ephemeral_gb,
    "flavorid": Flavor.flavorid,
    "id": Flavor.id,
    "is_public": Flavor.is_public,
    "memory_mb": Flavor.memory_mb,
    "name": Flavor.name,
    "root_gb": Flavor.root_gb,
    "rxtx_factor": Flavor.rxtx_factor,
    "swap": Flavor.swap,
    "updated_at": Flavor.updated_at,
    "vcpus": Flavor.vcpus,
}
_FLAVOR_ID = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")
_SPEC_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
_CREATE_FIELDS = {
    "name",
    "id",
    "ram",
    "vcpus",
    "disk",
    "OS-FLV-EXT-DATA:ephemeral",
    "swap",
    "rxtx_factor",
    "os-flavor-access:is_public",
}


# -- views -----------------------------------------------------------------------------


def flavor_summary(request: Request, flavor: Flavor) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": flavor.flavorid,
        "name": flavor.name,
        "links": links(request, "flavors", flavor.flavorid),
    }
    if version(request) >= (2, 55):
        body["description"] = flavor.description
    return body


def flavor_detail(request: Request, flavor: Flavor) -> dict[str, Any]:
    v = version(request)
    body: dict[str, Any] = {
        "id": flavor.flavorid,
        "name": flavor.name,
        "ram": flavor.memory_mb,
        "disk": flavor.root_gb,
        "vcpus": flavor.vcpus,
        "swap": flavor.swap if v >= (2, 75) else (flavor.swap or ""),
        "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral_gb,
        "os-flavor-access:is_public": flavor.is_public,
        "links": links(request, "flavors", flavor.flavorid),
    }
    if v < (2, 102):  # dropped from flavors at 2.102 (nova-network's, never used)
        body["OS-FLV-DISABLED:disabled"] = flavor.disabled
        body["rxtx_factor"] = flavor.rxtx_factor
    if v >= (2, 55):
        body["description"] = flavor.description
    if v >= (2, 61):
        body["extra_specs"] = dict(flavor.extra_specs or {})
    return body


# -- lookups ---------------------------------------------------------------------------


def _visible(ctx: RequestContext, admin: bool):
    """Non-admins see public flavors and the private ones shared with their project."""
    if admin:
        return None
    shared = select(FlavorProject.flavor_id).where(FlavorProject.project_id == ctx.project_id)
    return or_(Flavor.is_public.is_(True), Flavor.id.in_(shared))


async def _get(s: AsyncSession, request: Request, ctx: RequestContext, flavor_id: str) -> Flavor:
    query = select(Flavor).where(Flavor.flavorid == flavor_id)
    visible = _visible(ctx, wire.is_admin(request, ctx))
    if visible is not None:
        query = query.where(visible)
    flavor = await s.scalar(query)
    if flavor is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return flavor


def _is_public_filter(request: Request, ctx: RequestContext):
    """Nova's is_public query: admins choose (true by default, "none" for all)."""
    if not wire.is_admin(request, ctx):
        return and_(_visible(ctx, False), Flavor.disabled.is_(False))
    raw = request.query_params.get("is_public")
    if raw is None:
        wanted: bool | None = True
    elif raw.lower() == "none":
        wanted = None
    else:
        try:
            wanted = wire.query_boolean("is_public", raw)
        except BadRequest:
            raise BadRequest(f"Invalid is_public filter [{raw}]") from None
    if wanted is None:
        return None
    if wanted:
        shared = select(FlavorProject.flavor_id).where(FlavorProject.project_id == ctx.project_id)
        return or_(Flavor.is_public.is_(True), Flavor.id.in_(shared))
    return Flavor.is_public.is_(False)


def _min_filter(request: Request, param: str, column) -> Any:
    raw = request.query_params.get(param)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid {param} filter [{raw}]") from None
    return column >= value


# -- flavors ---------------------------------------------------------------------------


async def _list(request: Request, detail: bool) -> Response:
    """GET /flavors and /flavors/detail: filters, sort and marker paging."""
    ctx = await authorize(request, "compute:flavors:read")
    params = request.query_params
    sort_key = params.get("sort_key") or "flavorid"
    sort_dir = params.get("sort_dir") or "asc"
    v = version(request)
    sort_keys = dict(SORT_KEYS)
    if v >= (2, 102):
        del sort_keys["rxtx_factor"]
    if sort_key not in sort_keys:
        raise BadRequest(
            f"Invalid input for query parameters sort_key. Value: {sort_key}. "
            f"'{sort_key}' is not one of {sorted(sort_keys)}"
        )
    if sort_dir not in ("asc", "desc"):
        raise BadRequest(
            f"Invalid input for query parameters sort_dir. Value: {sort_dir}. "
            f"'{sort_dir}' is not one of ['asc', 'desc']"
        )
    limit, marker = limit_and_marker(request)
    column = SORT_KEYS[sort_key]
    conditions = [
        c
        for c in (
            _is_public_filter(request, ctx),
            _min_filter(request, "minRam", Flavor.memory_mb),
            _min_filter(request, "minDisk", Flavor.root_gb),
        )
        if c is not None
    ]
    descending = sort_dir == "desc"
    query = select(Flavor).where(*conditions)
    async with compute_of(request).db.read() as s:
        if marker is not None:
            after = await s.scalar(select(Flavor).where(Flavor.flavorid == marker))
            if after is None:
                raise BadRequest(f"marker [{marker}] not found")
            value = getattr(after, column.key)
            past = column < value if descending else column > value
            tie = Flavor.id < after.id if descending else Flavor.id > after.id
            query = query.where(or_(past, and_(column == value, tie)))
        order = [column.desc(), Flavor.id.desc()] if descending else [column, Flavor.id]
        name = params.get("name") if v >= (2, 102) else None
        if name is None:
            rows = list((await s.scalars(query.order_by(*order).limit(limit + 1))).all())
        else:  # a regular expression, as Nova's (flavors are few: matched here)
            rows = [
                f
                for f in (await s.scalars(query.order_by(*order))).all()
                if wire.name_matches(name, f.name)
            ][: limit + 1]
    more = len(rows) > limit
    rows = rows[:limit]
    view = flavor_detail if detail else flavor_summary
    body: dict[str, Any] = {"flavors": [view(request, f) for f in rows]}
    if more and rows:
        collection = "flavors/detail" if detail else "flavors"
        body["flavors_links"] = next_link(request, collection, rows[-1].flavorid)
    return json(body)


async def list_flavors(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_flavors_detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def show_flavor(request: Request) -> Response:
    ctx = await authorize(request, "compute:flavors:read")
    async with compute_of(request).db.read() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
    return json({"flavor": flavor_detail(request, flavor)})


def _description(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 65535):
        raise wire.invalid("description", value, "must be a string of at most 65535 characters")
    return value


def _flavor_from_body(request: Request, body: dict[str, Any]) -> Flavor:
    v = version(request)
    allowed = _CREATE_FIELDS | ({"description"} if v >= (2, 55) else set())
    if v >= (2, 102):
        allowed = allowed - {"rxtx_factor"}
    wire.reject_unknown(body, allowed)
    for required in ("name", "ram", "vcpus", "disk"):
        if required not in body:
            raise BadRequest(
                f"Invalid input for field/attribute flavor. '{required}' is a required property"
            )
    flavor_id = body.get("id")
    if flavor_id is None:
        flavor_id = str(uuid.uuid4())
    elif isinstance(flavor_id, int | float) and not isinstance(flavor_id, bool):
        # Nova's schema takes a number too (its pattern checks strings only).
        flavor_id = str(flavor_id)
    elif not isinstance(flavor_id, str) or not _FLAVOR_ID.match(flavor_id) or len(flavor_id) > 255:
        raise wire.invalid("id", flavor_id, f"'{flavor_id}' does not match '{_FLAVOR_ID.pattern}'")
    rxtx = body.get("rxtx_factor", 1.0)
    if isinstance(rxtx, bool) or not isinstance(rxtx, int | float) or not 0 < rxtx <= 3.4e38:
        raise wire.invalid("rxtx_factor", rxtx, "must be a number greater than 0")
    return Flavor(
        flavorid=flavor_id,
        name=wire.name("name", body["name"]),
        memory_mb=wire.integer("ram", body["ram"], 1),
        vcpus=wire.integer("vcpus", body["vcpus"], 1),
        root_gb=wire.integer("disk", body["disk"], 0),
        ephemeral_gb=wire.integer(
            "OS-FLV-EXT-DATA:ephemeral", body.get("OS-FLV-EXT-DATA:ephemeral", 0), 0
        ),
        swap=wire.integer("swap", body.get("swap", 0), 0),
        rxtx_factor=float(rxtx),
        is_public=wire.boolean(
            "os-flavor-access:is_public", body.get("os-flavor-access:is_public", True)
        ),
        disabled=False,
        description=_description(body.get("description")),
        extra_specs={},
    )


@describes(
    body=wrapped(
        "flavor",
        (
            "name",
            "ram",
            "vcpus",
            "disk",
            "id",
            "OS-FLV-EXT-DATA:ephemeral",
            "swap",
            "rxtx_factor",
            "os-flavor-access:is_public",
            "description",
        ),
        required=("name", "ram", "vcpus", "disk"),
    ),
    resource="flavor",
)
async def create_flavor(request: Request) -> Response:
    """POST /flavors (admin): 409 when the name or the id is taken."""
    await authorize(request, "compute:flavors:manage")
    flavor = _flavor_from_body(request, wire.object_body(await json_body(request), "flavor"))
    async with compute_of(request).db.write() as s:
        if await s.scalar(select(Flavor.id).where(Flavor.name == flavor.name)) is not None:
            raise Conflict(f"Flavor with name {flavor.name} already exists.")
        if await s.scalar(select(Flavor.id).where(Flavor.flavorid == flavor.flavorid)):
            raise Conflict(f"Flavor with ID {flavor.flavorid} already exists.")
        s.add(flavor)
        try:
            await s.flush()
        except IntegrityError:
            raise Conflict(f"Flavor with name {flavor.name} already exists.") from None
    return json({"flavor": flavor_detail(request, flavor)})


async def update_flavor(request: Request) -> Response:
    """PUT /flavors/{id} (2.55): only the description changes."""
    if version(request) < (2, 55):
        raise NotFound("The resource could not be found.")
    ctx = await authorize(request, "compute:flavors:manage")
    body = wire.object_body(await json_body(request), "flavor")
    wire.reject_unknown(body, {"description"})
    if "description" not in body:
        raise BadRequest(
            "Invalid input for field/attribute flavor. 'description' is a required property"
        )
    description = _description(body["description"])
    async with compute_of(request).db.write() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        flavor.description = description
    return json({"flavor": flavor_detail(request, flavor)})


async def delete_flavor(request: Request) -> Response:
    ctx = await authorize(request, "compute:flavors:manage")
    async with compute_of(request).db.write() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        await s.execute(delete(FlavorProject).where(FlavorProject.flavor_id == flavor.id))
        await s.delete(flavor)
    return no_content(202)


# -- extra specs (api-ref: Flavors extra-specs) ---------------------------------------------


def _spec_items(request: Request, specs: Any) -> dict[str, str]:
    """Keys of letters, digits and - _ : . space; values strings, numbers or booleans;
    from 2.86 the keys of Nova's namespaces must be known ones with valid values."""
    if not isinstance(specs, dict):
        raise wire.invalid("extra_specs", specs, f"{specs!r} is not of type 'object'")
    checked: dict[str, str] = {}
    for key, value in specs.items():
        if not _SPEC_KEY.match(key):
            raise wire.invalid("extra_specs", key, f"'{key}' is not a valid extra spec key")
        if not isinstance(value, str | int | float) or len(str(value)) > 255:
            raise wire.invalid(
                f"extra_specs.{key}", value, "must be a string, number or boolean of 0-255 chars"
            )
        checked[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if version(request) >= (2, 86):
        try:
            validate_extra_specs(checked)
        except ExtraSpecInvalid as exc:
            raise BadRequest(str(exc)) from None
    return checked


async def list_extra_specs(request: Request) -> Response:
    ctx = await authorize(request, "compute:flavors:read")
    async with compute_of(request).db.read() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
    return json({"extra_specs": dict(flavor.extra_specs or {})})


async def create_extra_specs(request: Request) -> Response:
    """POST /flavors/{id}/os-extra_specs: adds or replaces the given keys."""
    ctx = await authorize(request, "compute:flavors:manage")
    body = await json_body(request)
    if not isinstance(body, dict) or "extra_specs" not in body:
        raise BadRequest(
            "Invalid input for field/attribute extra_specs. 'extra_specs' is a required property"
        )
    specs = _spec_items(request, body["extra_specs"])
    async with compute_of(request).db.write() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        flavor.extra_specs = {**(flavor.extra_specs or {}), **specs}
    return json({"extra_specs": specs})


async def show_extra_spec(request: Request) -> Response:
    ctx = await authorize(request, "compute:flavors:read")
    key = request.path_params["key"]
    async with compute_of(request).db.read() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
    specs = flavor.extra_specs or {}
    if key not in specs:
        raise NotFound(f"Flavor {flavor.flavorid} has no extra specs with key {key}.")
    return json({key: specs[key]})


async def update_extra_spec(request: Request) -> Response:
    """PUT /flavors/{id}/os-extra_specs/{key} with {key: value}."""
    ctx = await authorize(request, "compute:flavors:manage")
    key = request.path_params["key"]
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Request body contains too many items")
    if key not in body:
        raise BadRequest("Request body and URI mismatch")
    specs = _spec_items(request, body)
    async with compute_of(request).db.write() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        flavor.extra_specs = {**(flavor.extra_specs or {}), **specs}
    return json(specs)


async def delete_extra_spec(request: Request) -> Response:
    ctx = await authorize(request, "compute:flavors:manage")
    key = request.path_params["key"]
    async with compute_of(request).db.write() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        specs = dict(flavor.extra_specs or {})
        if specs.pop(key, None) is None:
            raise NotFound(f"Flavor {flavor.flavorid} has no extra specs with key {key}.")
        flavor.extra_specs = specs
    return no_content(200)


# -- access (api-ref: Flavors access) ------------------------------------------------------


async def _access_list(s: AsyncSession, flavor: Flavor) -> list[dict[str, str]]:
    projects = await s.scalars(
        select(FlavorProject.project_id)
        .where(FlavorProject.flavor_id == flavor.id)
        .order_by(FlavorProject.project_id)
    )
    return [{"flavor_id": flavor.flavorid, "tenant_id": p} for p in projects]


async def list_access(request: Request) -> Response:
    ctx = await authorize(request, "compute:flavors:access")
    async with compute_of(request).db.read() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        if flavor.is_public:
            raise NotFound("Access list not available for public flavors.")
        return json({"flavor_access": await _access_list(s, flavor)})


def _tenant(action: Any) -> str:
    tenant = action.get("tenant") if isinstance(action, dict) else None
    if not isinstance(tenant, str) or not 1 <= len(tenant) <= 255:
        raise BadRequest("Invalid input for field/attribute tenant. 'tenant' is required")
    return tenant


async def flavor_action(request: Request) -> Response:
    """POST /flavors/{id}/action: addTenantAccess / removeTenantAccess."""
    ctx = await authorize(request, "compute:flavors:access")
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("There is no such action in the request body.")
    [(action, args)] = body.items()
    if action not in ("addTenantAccess", "removeTenantAccess"):
        raise BadRequest(f"There is no such action: {action}")
    tenant = _tenant(args)
    async with compute_of(request).db.write() as s:
        flavor = await _get(s, request, ctx, request.path_params["flavor_id"])
        existing = await s.get(FlavorProject, (flavor.id, tenant))
        if action == "addTenantAccess":
            if flavor.is_public:
                raise Conflict("Can not add access to a public flavor.")
            if existing is not None:
                raise Conflict(
                    f"Flavor access already exists for flavor {flavor.flavorid} and "
                    f"project {tenant} combination."
                )
            s.add(FlavorProject(flavor_id=flavor.id, project_id=tenant))
        else:
            if existing is None:
                raise NotFound(
                    f"Flavor access not found for {flavor.flavorid} / {tenant} combination."
                )
            await s.delete(existing)
        await s.flush()
        access = await _access_list(s, flavor)
    return json({"flavor_access": access})


routes = [
    Route("/v2.1/flavors", list_flavors, methods=["GET"]),
    Route("/v2.1/flavors", create_flavor, methods=["POST"]),
    Route("/v2.1/flavors/detail", list_flavors_detail, methods=["GET"]),
    Route("/v2.1/flavors/{flavor_id}", show_flavor, methods=["GET"]),
    Route("/v2.1/flavors/{flavor_id}", update_flavor, methods=["PUT"]),
    Route("/v2.1/flavors/{flavor_id}", delete_flavor, methods=["DELETE"]),
    Route("/v2.1/flavors/{flavor_id}/action", flavor_action, methods=["POST"]),
    Route("/v2.1/flavors/{flavor_id}/os-flavor-access", list_access, methods=["GET"]),
    Route("/v2.1/flavors/{flavor_id}/os-extra_specs", list_extra_specs, methods=["GET"]),
    Route("/v2.1/flavors/{flavor_id}/os-extra_specs", create_extra_specs, methods=["POST"]),
    Route("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}", show_extra_spec, methods=["GET"]),
    Route("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}", update_extra_spec, methods=["PUT"]),
    Route("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}", delete_extra_spec, methods=["DELETE"]),
]
