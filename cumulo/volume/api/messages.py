"""User messages (3.3+; Block Storage v3 api-ref, "Messages"): list, show, delete the
caller's project's messages (every project's for admins), until they expire."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import NotFound
from cumulo.volume.api.common import (
    at_least,
    authorize,
    isotime,
    json,
    links,
    list_body,
    page_of,
    page_params,
    service_of,
    sort_keys,
)
from cumulo.volume.models import Message

SORT_COLUMNS = {
    "created_at": Message.created_at,
    "id": Message.id,
    "event_id": Message.event_id,
    "message_level": Message.message_level,
    "resource_type": Message.resource_type,
    "resource_uuid": Message.resource_uuid,
    "request_id": Message.request_id,
}
FILTERS = ("event_id", "message_level", "resource_type", "resource_uuid", "request_id")


def _view(request: Request, m: Message) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": m.id,
        "event_id": m.event_id,
        "user_message": m.user_message,
        "message_level": m.message_level,
        "created_at": isotime(m.created_at),
        "guaranteed_until": isotime(m.expires_at),
        "request_id": m.request_id,
        "links": links(request, "messages", m.id),
        "resource_type": m.resource_type,
    }
    if m.resource_uuid:
        body["resource_uuid"] = m.resource_uuid
    return body


def _require_version(request: Request) -> None:
    if not at_least(request, 3, 3):
        raise NotFound("Could not find the requested resource.")


async def _load(request: Request, ctx: RequestContext, message_id: str) -> Message:
    service = service_of(request)
    async with service.db.read() as session:
        m = await session.get(Message, message_id)
    visible = m is not None and m.expires_at > utcnow()
    if not visible or (m.project_id != ctx.project_id and not service.is_admin(ctx)):
        raise NotFound(f"Message {message_id} could not be found.")
    return m


async def list_messages(request: Request) -> Response:
    _require_version(request)
    ctx = await authorize(request, "message:get_all")
    service = service_of(request)
    limit, marker, offset = page_params(request, service.config.volume.list_limit)
    where: list[Any] = [Message.expires_at > utcnow()]
    if not service.is_admin(ctx):
        where.append(Message.project_id == ctx.project_id)
    for key in FILTERS:
        if request.query_params.get(key):
            where.append(getattr(Message, key) == request.query_params[key])
    order = sort_keys(request, SORT_COLUMNS)
    async with service.db.read() as session:
        rows = list(await session.scalars(select(Message).where(*where).order_by(*order)))
    by_id = {m.id: m for m in rows}
    page, more = page_of([m.id for m in rows], marker, limit, offset)
    items = [_view(request, by_id[i]) for i in page]
    return json(list_body(request, "messages", items, "messages", page, more))


async def show_message(request: Request) -> Response:
    _require_version(request)
    ctx = await authorize(request, "message:get")
    return json({"message": _view(request, await _load(request, ctx, request.path_params["id"]))})


async def delete_message(request: Request) -> Response:
    _require_version(request)
    ctx = await authorize(request, "message:delete")
    m = await _load(request, ctx, request.path_params["id"])
    async with service_of(request).db.write() as session:
        row = await session.get(Message, m.id)
        if row is not None:
            await session.delete(row)
    return Response(status_code=204)


routes = [
    Route("/v3/messages", list_messages, methods=["GET"]),
    Route("/v3/messages/{id}", show_message, methods=["GET"]),
    Route("/v3/messages/{id}", delete_message, methods=["DELETE"]),
]
