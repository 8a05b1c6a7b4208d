"""Group types and their group specs (3.11+; Block Storage v3 api-ref, "Group types",
"Group type specs"). Admins manage them; groups of volumes (groups.py) name one."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    element,
    find_by_id_or_name,
    json,
    key_values,
    parse_bool,
    service_of,
    sort_keys,
)
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.models import GroupType, GroupTypeSpec

SORT_COLUMNS = {
    "name": GroupType.name,
    "id": GroupType.id,
    "created_at": GroupType.created_at,
    "is_public": GroupType.is_public,
    "description": GroupType.description,
}
# What GET /group_types/default names (Cinder's default_group_type; none configured here).
DEFAULT_GROUP_TYPE = "default_group_type"


def _require_version(request: Request) -> None:
    if not at_least(request, 3, 11):
        raise NotFound("Could not find the requested resource.")


async def _specs(session: Any, ids: list[str]) -> dict[str, dict[str, str]]:
    return await key_values(session, GroupTypeSpec.group_type_id, ids)


async def _find(session: Any, ref: str) -> GroupType:
    return await find_by_id_or_name(session, GroupType, ref, "Group type")


def _view(t: GroupType, specs: dict[str, str]) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "group_specs": specs,
    }


def _text(spec: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = spec.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}.")
    return value.strip()


async def create_group_type(request: Request) -> Response:
    _require_version(request)
    spec = await element(request, "group_type")
    await authorize(request, "group:group_types_manage")
    specs = check_metadata(spec.get("group_specs") or {}, "group_specs")
    public = spec.get("is_public", True)
    gtype = GroupType(
        id=str(uuid.uuid4()),
        name=_text(spec, "name", required=True),
        description=spec.get("description"),
        is_public=bool(parse_bool(str(public), "is_public")),
    )
    try:
        async with service_of(request).db.write() as session:
            session.add(gtype)
            await session.flush()
            for key, value in specs.items():
                session.add(GroupTypeSpec(group_type_id=gtype.id, key=key, value=value))
    except IntegrityError:
        raise Conflict(f"Group Type {gtype.name} already exists.") from None
    return accepted({"group_type": _view(gtype, specs)})


async def list_group_types(request: Request) -> Response:
    _require_version(request)
    ctx = await authorize(request, "group:access_group_types_specs")
    service = service_of(request)
    raw = request.query_params.get("is_public")
    is_public = None if raw is None or raw.lower() == "none" else parse_bool(raw, "is_public")
    where = []
    if not service.is_admin(ctx) or is_public:
        where.append(GroupType.is_public.is_(True))
    elif is_public is False:
        where.append(GroupType.is_public.is_(False))
    order = sort_keys(request, SORT_COLUMNS)
    async with service.db.read() as session:
        types = list(await session.scalars(select(GroupType).where(*where).order_by(*order)))
        specs = await _specs(session, [t.id for t in types])
    return json({"group_types": [_view(t, specs[t.id]) for t in types]})


async def show_group_type(request: Request) -> Response:
    _require_version(request)
    ctx = await authorize(request, "group:access_group_types_specs")
    service = service_of(request)
    ref = request.path_params["id"]
    async with service.db.read() as session:
        gtype = await _find(session, DEFAULT_GROUP_TYPE if ref == "default" else ref)
        if not gtype.is_public and not service.is_admin(ctx):
            raise NotFound(f"Group type {ref} could not be found.")
        specs = await _specs(session, [gtype.id])
    return json({"group_type": _view(gtype, specs[gtype.id])})


async def update_group_type(request: Request) -> Response:
    _require_version(request)
    spec = await element(request, "group_type")
    await authorize(request, "group:group_types_manage")
    try:
        async with service_of(request).db.write() as session:
            gtype = await _find(session, request.path_params["id"])
            if "name" in spec:
                gtype.name = _text(spec, "name", required=True) or gtype.name
            if "description" in spec:
                gtype.description = spec["description"]
            if "is_public" in spec:
                gtype.is_public = bool(parse_bool(str(spec["is_public"]), "is_public"))
            await session.flush()
            specs = await _specs(session, [gtype.id])
    except IntegrityError:
        raise Conflict(f"Group Type {spec.get('name')} already exists.") from None
    return json({"group_type": _view(gtype, specs[gtype.id])})


async def delete_group_type(request: Request) -> Response:
    _require_version(request)
    await authorize(request, "group:group_types_manage")
    async with service_of(request).db.write() as session:
        await session.delete(await _find(session, request.path_params["id"]))
    return accepted()


async def list_specs(request: Request) -> Response:
    _require_version(request)
    await authorize(request, "group:group_types_specs")
    async with service_of(request).db.read() as session:
        gtype = await _find(session, request.path_params["id"])
        specs = await _specs(session, [gtype.id])
    return json({"group_specs": specs[gtype.id]})


async def _write_specs(request: Request, items: dict[str, str]) -> None:
    async with service_of(request).db.write() as session:
        gtype = await _find(session, request.path_params["id"])
        for key, value in items.items():
            await session.merge(GroupTypeSpec(group_type_id=gtype.id, key=key, value=value))


async def set_specs(request: Request) -> Response:
    _require_version(request)
    body = await json_body(request)
    items = check_metadata(
        body.get("group_specs") if isinstance(body, dict) else None, "group_specs"
    )
    await authorize(request, "group:group_types_specs")
    await _write_specs(request, items)
    return accepted({"group_specs": items})


async def show_spec(request: Request) -> Response:
    _require_version(request)
    await authorize(request, "group:group_types_specs")
    key = request.path_params["key"]
    async with service_of(request).db.read() as session:
        gtype = await _find(session, request.path_params["id"])
        value = (await _specs(session, [gtype.id]))[gtype.id].get(key)
    if value is None:
        raise NotFound(f"Group Type {gtype.id} has no specs with key {key}.")
    return json({key: value})


async def update_spec(request: Request) -> Response:
    _require_version(request)
    key = request.path_params["key"]
    items = check_metadata(await json_body(request), "group_specs")
    if list(items) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await authorize(request, "group:group_types_specs")
    await _write_specs(request, items)
    return json(items)


async def delete_spec(request: Request) -> Response:
    _require_version(request)
    await authorize(request, "group:group_types_specs")
    key = request.path_params["key"]
    async with service_of(request).db.write() as session:
        gtype = await _find(session, request.path_params["id"])
        result = await session.execute(
            delete(GroupTypeSpec).where(
                GroupTypeSpec.group_type_id == gtype.id, GroupTypeSpec.key == key
            )
        )
        if result.rowcount == 0:
            raise NotFound(f"Group Type {gtype.id} has no specs with key {key}.")
    return accepted()


routes = [
    Route("/v3/group_types", create_group_type, methods=["POST"]),
    Route("/v3/group_types", list_group_types, methods=["GET"]),
    Route("/v3/group_types/{id}", show_group_type, methods=["GET"]),
    Route("/v3/group_types/{id}", update_group_type, methods=["PUT"]),
    Route("/v3/group_types/{id}", delete_group_type, methods=["DELETE"]),
    Route("/v3/group_types/{id}/group_specs", list_specs, methods=["GET"]),
    Route("/v3/group_types/{id}/group_specs", set_specs, methods=["POST"]),
    Route("/v3/group_types/{id}/group_specs/{key}", show_spec, methods=["GET"]),
    Route("/v3/group_types/{id}/group_specs/{key}", update_spec, methods=["PUT"]),
    Route("/v3/group_types/{id}/group_specs/{key}", delete_spec, methods=["DELETE"]),
]
