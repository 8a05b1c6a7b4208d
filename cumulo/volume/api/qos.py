"""QoS specs (admin; Block Storage v3 api-ref, "Quality of service (QoS) specifications"):
named limits for a `front-end` (the hypervisor), `back-end` or `both` consumer,
associated with volume types. They are recorded and shown; neither the hypervisor
nor the file backends apply them yet."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.volume.api.common import accepted, authorize, element, json, links, service_of
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.models import QosSpecs, QosSpecValue, VolumeType

CONSUMERS = ("front-end", "back-end", "both")


async def _load(session: Any, qos_id: str) -> tuple[QosSpecs, dict[str, str]]:
    qos = await session.get(QosSpecs, qos_id)
    if qos is None:
        raise NotFound(f"QoS Specs {qos_id} could not be found.")
    rows = await session.scalars(select(QosSpecValue).where(QosSpecValue.qos_id == qos_id))
    return qos, {r.key: r.value for r in rows}


def _view(qos: QosSpecs, specs: dict[str, str]) -> dict[str, Any]:
    return {"id": qos.id, "name": qos.name, "consumer": qos.consumer, "specs": specs}


async def create_qos(request: Request) -> Response:
    spec = await element(request, "qos_specs")
    await authorize(request, "volume_extension:qos_specs_manage:create")
    name = spec.pop("name", None)
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise BadRequest("Invalid input received: Please specify a name for QoS specs.")
    consumer = spec.pop("consumer", "back-end")
    if consumer not in CONSUMERS:
        raise BadRequest(
            f"Invalid input received: Valid consumer of QoS specs are: {list(CONSUMERS)}"
        )
    values = check_metadata(spec, "qos_specs")
    qos = QosSpecs(id=str(uuid.uuid4()), name=name.strip(), consumer=consumer)
    try:
        async with service_of(request).db.write() as session:
            session.add(qos)
            await session.flush()
            for key, value in values.items():
                session.add(QosSpecValue(qos_id=qos.id, key=key, value=value))
    except IntegrityError:
        raise Conflict(f"QoS Specs {qos.name} already exists.") from None
    return json({"qos_specs": _view(qos, values), "links": links(request, "qos-specs", qos.id)})


async def list_qos(request: Request) -> Response:
    await authorize(request, "volume_extension:qos_specs_manage:get_all")
    async with service_of(request).db.read() as session:
        all_qos = list(await session.scalars(select(QosSpecs).order_by(QosSpecs.created_at)))
        specs: dict[str, dict[str, str]] = {q.id: {} for q in all_qos}
        for row in await session.scalars(select(QosSpecValue)):
            specs.setdefault(row.qos_id, {})[row.key] = row.value
    return json({"qos_specs": [_view(q, specs[q.id]) for q in all_qos]})


async def show_qos(request: Request) -> Response:
    await authorize(request, "volume_extension:qos_specs_manage:get")
    async with service_of(request).db.read() as session:
        qos, specs = await _load(session, request.path_params["id"])
    return json({"qos_specs": _view(qos, specs), "links": links(request, "qos-specs", qos.id)})


async def set_keys(request: Request) -> Response:
    values = check_metadata(await element(request, "qos_specs"), "qos_specs")
    await authorize(request, "volume_extension:qos_specs_manage:update")
    async with service_of(request).db.write() as session:
        qos, _ = await _load(session, request.path_params["id"])
        for key, value in values.items():
            await session.merge(QosSpecValue(qos_id=qos.id, key=key, value=value))
    return json({"qos_specs": values})


async def delete_keys(request: Request) -> Response:
    body = await json_body(request)
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadRequest("Invalid input received: 'keys' must be a list of strings.")
    await authorize(request, "volume_extension:qos_specs_manage:update")
    async with service_of(request).db.write() as session:
        qos, specs = await _load(session, request.path_params["id"])
        for key in keys:
            if key not in specs:
                raise NotFound(f"QoS spec {key} not found for QoS specs {qos.id}.")
        await session.execute(
            delete(QosSpecValue).where(QosSpecValue.qos_id == qos.id, QosSpecValue.key.in_(keys))
        )
    return accepted()


async def delete_qos(request: Request) -> Response:
    """In use by a volume type: 400 unless force=true, which disassociates first."""
    await authorize(request, "volume_extension:qos_specs_manage:delete")
    force = request.query_params.get("force", "").lower() in ("true", "1", "yes")
    async with service_of(request).db.write() as session:
        qos, _ = await _load(session, request.path_params["id"])
        used = await session.scalar(select(VolumeType.id).where(VolumeType.qos_specs_id == qos.id))
        if used is not None and not force:
            raise BadRequest("Qos specs still in use.")
        await _disassociate(session, qos.id)
        await session.delete(qos)
    return accepted()


async def _disassociate(session: Any, qos_id: str, type_id: str | None = None) -> None:
    where = [VolumeType.qos_specs_id == qos_id]
    if type_id is not None:
        where.append(VolumeType.id == type_id)
    await session.execute(update(VolumeType).where(*where).values(qos_specs_id=None))


def _type_id(request: Request) -> str:
    type_id = request.query_params.get("vol_type_id")
    if not type_id:
        raise BadRequest("Volume Type id must not be None.")
    return type_id


async def associate(request: Request) -> Response:
    await authorize(request, "volume_extension:qos_specs_manage:update")
    type_id = _type_id(request)
    async with service_of(request).db.write() as session:
        qos, _ = await _load(session, request.path_params["id"])
        vtype = await session.get(VolumeType, type_id)
        if vtype is None:
            raise NotFound(f"Volume type {type_id} could not be found.")
        if vtype.qos_specs_id not in (None, qos.id):
            raise BadRequest(
                f"Invalid input received: Type {type_id} is already associated with another "
                f"qos specs: {vtype.qos_specs_id}"
            )
        vtype.qos_specs_id = qos.id
    return accepted()


async def disassociate(request: Request) -> Response:
    await authorize(request, "volume_extension:qos_specs_manage:update")
    type_id = _type_id(request)
    async with service_of(request).db.write() as session:
        qos, _ = await _load(session, request.path_params["id"])
        if await session.get(VolumeType, type_id) is None:
            raise NotFound(f"Volume type {type_id} could not be found.")
        await _disassociate(session, qos.id, type_id)
    return accepted()


async def disassociate_all(request: Request) -> Response:
    await authorize(request, "volume_extension:qos_specs_manage:update")
    async with service_of(request).db.write() as session:
        qos, _ = await _load(session, request.path_params["id"])
        await _disassociate(session, qos.id)
    return accepted()


async def associations(request: Request) -> Response:
    await authorize(request, "volume_extension:qos_specs_manage:get")
    async with service_of(request).db.read() as session:
        qos, _ = await _load(session, request.path_params["id"])
        types = await session.scalars(select(VolumeType).where(VolumeType.qos_specs_id == qos.id))
        found = [{"association_type": "volume_type", "name": t.name, "id": t.id} for t in types]
    return json({"qos_associations": found})


routes = [
    Route("/v3/qos-specs", create_qos, methods=["POST"]),
    Route("/v3/qos-specs", list_qos, methods=["GET"]),
    Route("/v3/qos-specs/{id}", show_qos, methods=["GET"]),
    Route("/v3/qos-specs/{id}", set_keys, methods=["PUT"]),
    Route("/v3/qos-specs/{id}", delete_qos, methods=["DELETE"]),
    Route("/v3/qos-specs/{id}/delete_keys", delete_keys, methods=["PUT"]),
    Route("/v3/qos-specs/{id}/associate", associate, methods=["GET"]),
    Route("/v3/qos-specs/{id}/disassociate", disassociate, methods=["GET"]),
    Route("/v3/qos-specs/{id}/disassociate_all", disassociate_all, methods=["GET"]),
    Route("/v3/qos-specs/{id}/associations", associations, methods=["GET"]),
]
