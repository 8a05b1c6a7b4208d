"""Volume types and their extra specs (Block Storage v3 api-ref, "Volume types")."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.volume.api import views
from cumulo.volume.api.common import authorize, json, parse_bool, service_of
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.models import Volume, VolumeType, VolumeTypeExtraSpec


async def _specs(session: Any, type_ids: list[str]) -> dict[str, dict[str, str]]:
    specs: dict[str, dict[str, str]] = {i: {} for i in type_ids}
    for s in await session.scalars(
        select(VolumeTypeExtraSpec).where(VolumeTypeExtraSpec.type_id.in_(type_ids))
    ):
        specs[s.type_id][s.key] = s.value
    return specs


async def _find(session: Any, ref: str) -> VolumeType:
    vtype = await session.scalar(
        select(VolumeType).where(or_(VolumeType.id == ref, VolumeType.name == ref))
    )
    if vtype is None:
        raise NotFound(f"Volume type {ref} could not be found.")
    return vtype


async def list_types(request: Request) -> Response:
    ctx = await authorize(request, "volume_extension:type_get")
    service = service_of(request)
    where = []
    raw = request.query_params.get("is_public")
    # "none" (what openstacksdk sends by default) means public and private alike.
    is_public = None if raw is None or raw.lower() == "none" else parse_bool(raw, "is_public")
    if not service.is_admin(ctx) or is_public:
        where.append(VolumeType.is_public.is_(True))
    elif is_public is False:
        where.append(VolumeType.is_public.is_(False))
    async with service.db.read() as session:
        types = list(
            await session.scalars(select(VolumeType).where(*where).order_by(VolumeType.name))
        )
        specs = await _specs(session, [t.id for t in types])
    admin = service.is_admin(ctx)
    return json({"volume_types": [views.volume_type(t, specs[t.id], admin=admin) for t in types]})


async def show_type(request: Request) -> Response:
    ctx = await authorize(request, "volume_extension:type_get")
    ref = request.path_params["id"]
    async with service_of(request).db.read() as session:
        if ref == "default":
            ref = service_of(request).config.volume.default_volume_type
        vtype = await _find(session, ref)
        specs = await _specs(session, [vtype.id])
    admin = service_of(request).is_admin(ctx)
    return json({"volume_type": views.volume_type(vtype, specs[vtype.id], admin=admin)})


async def create_type(request: Request) -> Response:
    body = await json_body(request)
    spec = body.get("volume_type") if isinstance(body, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BadRequest("Invalid input received: Volume type name can not be empty.")
    name = spec["name"].strip()
    if not name or len(name) > 255:
        raise BadRequest("Invalid input received: Volume type name can not be empty.")
    extra = check_metadata(spec.get("extra_specs") or {}, "extra_specs")
    public = spec.get("os-volume-type-access:is_public", spec.get("is_public", True))
    await authorize(request, "volume_extension:types_manage")
    vtype = VolumeType(
        id=str(uuid.uuid4()),
        name=name,
        description=spec.get("description"),
        is_public=bool(parse_bool(str(public), "is_public")),
    )
    try:
        async with service_of(request).db.write() as session:
            session.add(vtype)
            await session.flush()
            for key, value in extra.items():
                session.add(VolumeTypeExtraSpec(type_id=vtype.id, key=key, value=value))
    except IntegrityError:
        raise Conflict(f"Volume Type {name} already exists.") from None
    return json({"volume_type": views.volume_type(vtype, extra, admin=True, form="create")})


async def update_type(request: Request) -> Response:
    body = await json_body(request)
    spec = body.get("volume_type") if isinstance(body, dict) else None
    if not isinstance(spec, dict) or not spec:
        raise BadRequest("Missing required element 'volume_type' in request body.")
    await authorize(request, "volume_extension:types_manage")
    try:
        async with service_of(request).db.write() as session:
            vtype = await _find(session, request.path_params["id"])
            if "name" in spec:
                if not isinstance(spec["name"], str) or not spec["name"].strip():
                    raise BadRequest("Invalid input received: Volume type name can not be empty.")
                vtype.name = spec["name"].strip()
            if "description" in spec:
                vtype.description = spec["description"]
            if "is_public" in spec:
                vtype.is_public = bool(parse_bool(str(spec["is_public"]), "is_public"))
            await session.flush()
            specs = await _specs(session, [vtype.id])
    except IntegrityError:
        raise Conflict(f"Volume Type {spec.get('name')} already exists.") from None
    return json(
        {"volume_type": views.volume_type(vtype, specs[vtype.id], admin=True, form="update")}
    )


async def delete_type(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    service = service_of(request)
    async with service.db.write() as session:
        vtype = await _find(session, request.path_params["id"])
        if vtype.name == service.config.volume.default_volume_type:
            raise BadRequest("Invalid volume type: the default volume type cannot be deleted.")
        used = await session.scalar(select(func.count(Volume.id)).where(Volume.type_id == vtype.id))
        if used:
            raise BadRequest(
                f"Target volume type is still in use. Volume Type {vtype.id} deletion is "
                "not allowed with volumes present with the type."
            )
        await session.delete(vtype)
    return Response(status_code=202)


async def list_extra_specs(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.read() as session:
        vtype = await _find(session, request.path_params["id"])
        specs = await _specs(session, [vtype.id])
    return json({"extra_specs": specs[vtype.id]})


async def set_extra_specs(request: Request) -> Response:
    body = await json_body(request)
    items = check_metadata(
        body.get("extra_specs") if isinstance(body, dict) else None, "extra_specs"
    )
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.write() as session:
        vtype = await _find(session, request.path_params["id"])
        await session.execute(
            delete(VolumeTypeExtraSpec).where(
                VolumeTypeExtraSpec.type_id == vtype.id, VolumeTypeExtraSpec.key.in_(items)
            )
        )
        for key, value in items.items():
            session.add(VolumeTypeExtraSpec(type_id=vtype.id, key=key, value=value))
    return json({"extra_specs": items})


async def show_extra_spec(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    key = request.path_params["key"]
    async with service_of(request).db.read() as session:
        vtype = await _find(session, request.path_params["id"])
        value = (await _specs(session, [vtype.id]))[vtype.id].get(key)
    if value is None:
        raise NotFound(f"Volume Type {vtype.id} has no extra specs with key {key}.")
    return json({key: value})


async def update_extra_spec(request: Request) -> Response:
    key = request.path_params["key"]
    body = await json_body(request)
    items = check_metadata(body, "extra_specs")
    if list(items) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.write() as session:
        vtype = await _find(session, request.path_params["id"])
        row = await session.get(VolumeTypeExtraSpec, {"type_id": vtype.id, "key": key})
        if row is None:
            session.add(VolumeTypeExtraSpec(type_id=vtype.id, key=key, value=items[key]))
        else:
            row.value = items[key]
    return json(items)


async def delete_extra_spec(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    key = request.path_params["key"]
    async with service_of(request).db.write() as session:
        vtype = await _find(session, request.path_params["id"])
        result = await session.execute(
            delete(VolumeTypeExtraSpec).where(
                VolumeTypeExtraSpec.type_id == vtype.id, VolumeTypeExtraSpec.key == key
            )
        )
        if result.rowcount == 0:
            raise NotFound(f"Volume Type {vtype.id} has no extra specs with key {key}.")
    return Response(status_code=202)


routes = [
    Route("/v3/types", list_types, methods=["GET"]),
    Route("/v3/types", create_type, methods=["POST"]),
    Route("/v3/types/{id}", show_type, methods=["GET"]),
    Route("/v3/types/{id}", update_type, methods=["PUT"]),
    Route("/v3/types/{id}", delete_type, methods=["DELETE"]),
    Route("/v3/types/{id}/extra_specs", list_extra_specs, methods=["GET"]),
    Route("/v3/types/{id}/extra_specs", set_extra_specs, methods=["POST"]),
    Route("/v3/types/{id}/extra_specs/{key}", show_extra_spec, methods=["GET"]),
    Route("/v3/types/{id}/extra_specs/{key}", update_extra_spec, methods=["PUT"]),
    Route("/v3/types/{id}/extra_specs/{key}", delete_extra_spec, methods=["DELETE"]),
]
