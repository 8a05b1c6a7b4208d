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
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.volume.api import views
from cumulo.volume.api.common import (
    authorize,
    find_by_id_or_name,
    isotime,
    json,
    key_values,
    parse_bool,
    run_action,
    service_of,
)
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.api.volumes import type_usable
from cumulo.volume.models import (
    Volume,
    VolumeType,
    VolumeTypeAccess,
    VolumeTypeEncryption,
    VolumeTypeExtraSpec,
)


async def _specs(session: Any, type_ids: list[str]) -> dict[str, dict[str, str]]:
    return await key_values(session, VolumeTypeExtraSpec.type_id, type_ids)


async def _find(session: Any, ref: str) -> VolumeType:
    return await find_by_id_or_name(session, VolumeType, ref, "Volume type")


async def list_types(request: Request) -> Response:
    ctx = await authorize(request, "volume_extension:type_get")
    service = service_of(request)
    where = []
    raw = request.query_params.get("is_public")
    # "none" (what openstacksdk sends by default) means public and private alike.
    is_public = None if raw is None or raw.lower() == "none" else parse_bool(raw, "is_public")
    if not service.is_admin(ctx):
        # Public types and the private ones the caller's project was given.
        given = select(VolumeTypeAccess.type_id).where(
            VolumeTypeAccess.project_id == (ctx.project_id or "")
        )
        where.append(or_(VolumeType.is_public.is_(True), VolumeType.id.in_(given)))
    elif is_public:
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
        if not await type_usable(session, service_of(request), ctx, vtype):
            raise NotFound(f"Volume type {ref} could not be found.")
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


# -- encryption types ---------------------------------------------------------------------

ENCRYPTION_LOCATIONS = ("front-end", "back-end")


def _encryption_view(row: VolumeTypeEncryption) -> dict[str, Any]:
    return {
        "volume_type_id": row.volume_type_id,
        "encryption_id": row.encryption_id,
        "provider": row.provider,
        "cipher": row.cipher,
        "key_size": row.key_size,
        "control_location": row.control_location,
        "deleted": False,
        "created_at": isotime(row.created_at),
        "updated_at": isotime(row.updated_at) if row.updated_at else None,
        "deleted_at": None,
    }


def _encryption_body(body: Any, creating: bool) -> dict[str, Any]:
    spec = body.get("encryption") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest("Missing required element 'encryption' in request body.")
    unknown = set(spec) - {"provider", "cipher", "key_size", "control_location"}
    if unknown:
        raise BadRequest(f"Additional properties are not allowed ({', '.join(sorted(unknown))}).")
    if creating and not spec.get("provider"):
        raise BadRequest("Invalid input for field/attribute provider: it is required.")
    for name in ("provider", "cipher"):
        if name in spec and spec[name] is not None and not isinstance(spec[name], str):
            raise BadRequest(f"Invalid input for field/attribute {name}.")
    size = spec.get("key_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise BadRequest(f"Invalid input for field/attribute key_size. Value: {size}.")
    location = spec.get("control_location", "front-end" if creating else None)
    if location is not None and location not in ENCRYPTION_LOCATIONS:
        raise BadRequest(
            f"Invalid input for field/attribute control_location. Value: {location}. "
            "Valid values are front-end and back-end."
        )
    if location is not None:
        spec["control_location"] = location
    return spec


async def _type_in_use(session: Any, type_id: str) -> bool:
    used = await session.scalar(select(func.count(Volume.id)).where(Volume.type_id == type_id))
    return bool(used)


async def _changeable_encryption(session: Any, request: Request, verb: str):
    """The type's encryption, which may change only while no volume has the type."""
    vtype = await _find(session, request.path_params["id"])
    row = await session.get(VolumeTypeEncryption, vtype.id)
    if row is None:
        raise NotFound(f"Volume type encryption for type {vtype.id} does not exist.")
    if await _type_in_use(session, vtype.id):
        raise BadRequest(f"Cannot {verb} encryption specs. Volume type in use.")
    return row


async def show_encryption(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.read() as session:
        vtype = await _find(session, request.path_params["id"])
        row = await session.get(VolumeTypeEncryption, vtype.id)
    return json(_encryption_view(row) if row is not None else {})


async def show_encryption_spec(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    key = request.path_params["key"]
    async with service_of(request).db.read() as session:
        vtype = await _find(session, request.path_params["id"])
        row = await session.get(VolumeTypeEncryption, vtype.id)
    view = _encryption_view(row) if row is not None else {}
    if key not in view:
        raise NotFound(f"Volume type encryption for type {vtype.id} has no spec {key}.")
    return json({key: view[key]})


async def create_encryption(request: Request) -> Response:
    spec = _encryption_body(await json_body(request), creating=True)
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.write() as session:
        vtype = await _find(session, request.path_params["id"])
        if await session.get(VolumeTypeEncryption, vtype.id) is not None:
            raise Conflict(f"Volume type encryption for type {vtype.id} already exists.")
        if await _type_in_use(session, vtype.id):
            raise BadRequest("Cannot create encryption specs. Volume type in use.")
        row = VolumeTypeEncryption(volume_type_id=vtype.id, encryption_id=str(uuid.uuid4()), **spec)
        session.add(row)
        await session.flush()
        view = _encryption_view(row)
    # Create answers the specs alone (no timestamps), as Cinder.
    created = ("volume_type_id", "encryption_id", "provider", "cipher", "key_size",
               "control_location")  # fmt: skip
    return json({"encryption": {k: view[k] for k in created}})


async def update_encryption(request: Request) -> Response:
    spec = _encryption_body(await json_body(request), creating=False)
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.write() as session:
        row = await _changeable_encryption(session, request, "update")
        for name, value in spec.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
    return json({"encryption": spec})


async def delete_encryption(request: Request) -> Response:
    await authorize(request, "volume_extension:types_manage")
    async with service_of(request).db.write() as session:
        row = await _changeable_encryption(session, request, "delete")
        await session.delete(row)
    return Response(status_code=202)


async def list_type_access(request: Request) -> Response:
    await authorize(request, "volume_extension:volume_type_access")
    async with service_of(request).db.read() as session:
        vtype = await _find(session, request.path_params["id"])
        if vtype.is_public:
            raise NotFound("Access list not available for public volume types.")
        rows = await session.scalars(
            select(VolumeTypeAccess).where(VolumeTypeAccess.type_id == vtype.id)
        )
        access = [{"volume_type_id": r.type_id, "project_id": r.project_id} for r in rows]
    return json({"volume_type_access": access})


async def _project_access(request: Request, type_id: str, args: Any, add: bool) -> Response:
    """addProjectAccess / removeProjectAccess on a private type."""
    await authorize(request, "volume_extension:volume_type_access:addProjectAccess")
    project = args.get("project") if isinstance(args, dict) else None
    if not isinstance(project, str) or not project:
        raise BadRequest("Invalid input received: 'project' is required.")
    async with service_of(request).db.write() as session:
        vtype = await _find(session, type_id)
        if vtype.is_public:
            raise BadRequest(
                "Invalid volume type: Type access modification is not applicable to public "
                "volume type."
            )
        key = {"type_id": vtype.id, "project_id": project}
        row = await session.get(VolumeTypeAccess, key)
        if add and row is not None:
            raise Conflict(
                f"Volume type access for {vtype.id} / {project} combination already exists."
            )
        if not add and row is None:
            raise NotFound(f"Volume type access not found for {vtype.id} / {project} combination.")
        if add:
            session.add(VolumeTypeAccess(**key))
        else:
            await session.delete(row)
    return Response(status_code=202)


async def add_project_access(request: Request, type_id: str, args: Any) -> Response:
    return await _project_access(request, type_id, args, add=True)


async def remove_project_access(request: Request, type_id: str, args: Any) -> Response:
    return await _project_access(request, type_id, args, add=False)


async def type_action(request: Request) -> Response:
    return await run_action(
        request,
        {"addProjectAccess": add_project_access, "removeProjectAccess": remove_project_access},
    )


routes = [
    Route("/v3/types/{id}/os-volume-type-access", list_type_access, methods=["GET"]),
    Route("/v3/types/{id}/action", type_action, methods=["POST"]),
    Route("/v3/types", list_types, methods=["GET"]),
    Route("/v3/types", create_type, methods=["POST"]),
    Route("/v3/types/{id}", show_type, methods=["GET"]),
    Route("/v3/types/{id}", update_type, methods=["PUT"]),
    Route("/v3/types/{id}", delete_type, methods=["DELETE"]),
    Route("/v3/types/{id}/encryption", show_encryption, methods=["GET"]),
    Route("/v3/types/{id}/encryption", create_encryption, methods=["POST"]),
    Route("/v3/types/{id}/encryption/{key}", show_encryption_spec, methods=["GET"]),
    Route("/v3/types/{id}/encryption/{key}", update_encryption, methods=["PUT"]),
    Route("/v3/types/{id}/encryption/{key}", delete_encryption, methods=["DELETE"]),
    Route("/v3/types/{id}/extra_specs", list_extra_specs, methods=["GET"]),
    Route("/v3/types/{id}/extra_specs", set_extra_specs, methods=["POST"]),
    Route("/v3/types/{id}/extra_specs/{key}", show_extra_spec, methods=["GET"]),
    Route("/v3/types/{id}/extra_specs/{key}", update_extra_spec, methods=["PUT"]),
    Route("/v3/types/{id}/extra_specs/{key}", delete_extra_spec, methods=["DELETE"]),
]
