"""The v3 attachments API (3.27+; complete 3.44; mode 3.54): how compute attaches
volumes: create (reserve) -> update with the host's connector (connection info)
-> complete -> delete (detach)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, NotFound
from cumulo.volume import attach
from cumulo.volume.api import views
from cumulo.volume.api.common import (
    at_least,
    authorize,
    json,
    page_of,
    page_params,
    parse_bool,
    service_of,
)
from cumulo.volume.api.volumes import load_volume
from cumulo.volume.models import Attachment


def _require_327(request: Request) -> None:
    if not at_least(request, 3, 27):
        raise NotFound("The attachments API needs microversion 3.27 or later.")


async def _load(request: Request, rule: str) -> tuple[RequestContext, Attachment]:
    _require_327(request)
    attachment_id = request.path_params["id"]
    ctx = await authorize(request, "volume:attachment_get")
    service = service_of(request)
    async with service.db.read() as session:
        row = await session.get(Attachment, attachment_id)
    if row is None or (row.project_id != ctx.project_id and not service.sees_every_project(ctx)):
        raise NotFound(f"VolumeAttachment {attachment_id} could not be found.")
    await authorize(request, rule, row.project_id)
    return ctx, row


async def _body_of(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    spec = body.get("attachment") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest("Missing required element 'attachment' in request body.")
    return spec


async def create_attachment(request: Request) -> Response:
    _require_327(request)
    spec = await _body_of(request)
    volume_id = spec.get("volume_uuid")
    if not isinstance(volume_id, str):
        raise BadRequest("Invalid input received: 'volume_uuid' is required.")
    instance = spec.get("instance_uuid")
    if instance is not None and not isinstance(instance, str):
        raise BadRequest(f"Invalid input for field/attribute instance_uuid. Value: {instance}.")
    mode = spec.get("mode", "rw") if at_least(request, 3, 54) else "rw"
    if mode not in ("rw", "ro"):
        raise BadRequest(f"Invalid input received: Invalid attachment mode '{mode}'.")
    connector = spec.get("connector")
    ctx, _ = await load_volume(request, volume_id, "volume:attachment_create")
    service = service_of(request)
    row = await attach.reserve(service, volume_id, instance, mode=mode)
    if connector:
        try:
            row = await attach.connect(service, row.id, connector, ctx.to_dict())
        except Exception:
            await attach.remove(service, row.id, ctx.to_dict())
            raise
    return json({"attachment": views.attachment(row)})


async def update_attachment(request: Request) -> Response:
    spec = await _body_of(request)
    ctx, row = await _load(request, "volume:attachment_update")
    row = await attach.connect(service_of(request), row.id, spec.get("connector"), ctx.to_dict())
    return json({"attachment": views.attachment(row)})


async def complete_attachment(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or "os-complete" not in body or not at_least(request, 3, 44):
        raise BadRequest("Invalid request: the only attachment action is os-complete (3.44).")
    _, row = await _load(request, "volume:attachment_complete")
    await attach.complete(service_of(request), row.id)
    return Response(status_code=204)


async def delete_attachment(request: Request) -> Response:
    ctx, row = await _load(request, "volume:attachment_delete")
    await attach.remove(service_of(request), row.id, ctx.to_dict())
    return json({"attachments": []})


async def show_attachment(request: Request) -> Response:
    _, row = await _load(request, "volume:attachment_get")
    return json({"attachment": views.attachment(row)})


async def _list(request: Request, detail: bool) -> Response:
    _require_327(request)
    ctx = await authorize(request, "volume:attachment_get")
    service = service_of(request)
    params = request.query_params
    limit, marker, offset = page_params(request, service.config.volume.list_limit)
    where: list[Any] = []
    if not (service.is_admin(ctx) and parse_bool(params.get("all_tenants"), "all_tenants")):
        where.append(Attachment.project_id == ctx.project_id)
    for key, column in (("volume_id", Attachment.volume_id),
                        ("instance_id", Attachment.instance_uuid),
                        ("status", Attachment.status)):  # fmt: skip
        if params.get(key):
            where.append(column == params[key])
    async with service.db.read() as session:
        rows = list(
            await session.scalars(
                select(Attachment).where(*where).order_by(Attachment.created_at.desc())
            )
        )
    page, _ = page_of([r.id for r in rows], marker, limit, offset)
    by_id = {r.id: r for r in rows}
    return json({"attachments": [views.attachment(by_id[i], detail=detail) for i in page]})


async def list_attachments(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_attachments_detail(request: Request) -> Response:
    return await _list(request, detail=True)


routes = [
    Route("/v3/attachments", create_attachment, methods=["POST"]),
    Route("/v3/attachments", list_attachments, methods=["GET"]),
    Route("/v3/attachments/detail", list_attachments_detail, methods=["GET"]),
    Route("/v3/attachments/{id}", show_attachment, methods=["GET"]),
    Route("/v3/attachments/{id}", update_attachment, methods=["PUT"]),
    Route("/v3/attachments/{id}", delete_attachment, methods=["DELETE"]),
    Route("/v3/attachments/{id}/action", complete_attachment, methods=["POST"]),
]
