"""/v2.0/{resources}/{id}/tags (api-ref: Tag extension, standard-attr-tag)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest
from cumulo.network.api.common import caller, json, no_content, service_of
from cumulo.network.api.floatingips import visible_fip
from cumulo.network.api.networks import visible_network
from cumulo.network.api.ports import visible_port
from cumulo.network.api.routers import visible_router
from cumulo.network.api.security_groups import visible_group
from cumulo.network.api.subnetpools import visible_pool
from cumulo.network.api.subnets import visible_subnet
from cumulo.network.errors import TagNotFound
from cumulo.network.models import Tag
from cumulo.network.ports import write_retrying

MAX_TAGS = 50
FINDERS: dict[str, Callable[..., Awaitable[Any]]] = {
    "networks": visible_network,
    "subnets": visible_subnet,
    "ports": visible_port,
    "routers": visible_router,
    "floatingips": visible_fip,
    "security-groups": visible_group,
    "subnetpools": visible_pool,
}


async def _resource(request: Request, write: bool) -> str:
    service, ctx = service_of(request), await caller(request)
    kind = request.path_params["resource"]
    finder = FINDERS.get(kind)
    if finder is None:
        raise TagNotFound(f"Resource type {kind} does not support tags.")
    row = await finder(service, ctx, request.path_params["resource_id"])
    if write:
        service.enforce(ctx, "network:owner", row.project_id)
    return row.id


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag or len(tag) > 255 or "," in tag or "/" in tag:
        raise BadRequest(f"Invalid input for tags. Reason: '{tag}' is not a valid tag.")
    return tag


async def _current(request: Request, resource_id: str) -> list[str]:
    async with service_of(request).db.read() as session:
        rows = await session.scalars(
            select(Tag.tag).where(Tag.resource_id == resource_id).order_by(Tag.tag)
        )
        return list(rows)


async def list_tags(request: Request) -> Response:
    resource_id = await _resource(request, write=False)
    return json({"tags": await _current(request, resource_id)})


async def replace_tags(request: Request) -> Response:
    resource_id = await _resource(request, write=True)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise BadRequest("Invalid input for tags: a list named 'tags' is required.")
    tags = sorted({_check_tag(t) for t in body["tags"]})
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"Too many tags: at most {MAX_TAGS}.")

    async def work(session):
        await session.execute(delete(Tag).where(Tag.resource_id == resource_id))
        for t in tags:
            session.add(Tag(resource_id=resource_id, tag=t))

    await write_retrying(service_of(request).db, work)
    return json({"tags": tags})


async def clear_tags(request: Request) -> Response:
    resource_id = await _resource(request, write=True)

    async def work(session):
        await session.execute(delete(Tag).where(Tag.resource_id == resource_id))

    await write_retrying(service_of(request).db, work)
    return no_content()


async def check_tag(request: Request) -> Response:
    resource_id = await _resource(request, write=False)
    if request.path_params["tag"] not in await _current(request, resource_id):
        raise TagNotFound(f"Tag {request.path_params['tag']} could not be found.")
    return no_content()


async def add_tag(request: Request) -> Response:
    resource_id = await _resource(request, write=True)
    tag = _check_tag(request.path_params["tag"])

    async def work(session):
        if await session.get(Tag, {"resource_id": resource_id, "tag": tag}) is None:
            session.add(Tag(resource_id=resource_id, tag=tag))

    await write_retrying(service_of(request).db, work)
    return Response(status_code=201)


async def remove_tag(request: Request) -> Response:
    resource_id = await _resource(request, write=True)
    tag = request.path_params["tag"]

    async def work(session):
        result = await session.execute(
            delete(Tag).where(Tag.resource_id == resource_id, Tag.tag == tag)
        )
        if result.rowcount == 0:
            raise TagNotFound(f"Tag {tag} could not be found.")

    await write_retrying(service_of(request).db, work)
    return no_content()


_BASE = "/v2.0/{resource}/{resource_id}/tags"
routes = [
    Route(_BASE, list_tags, methods=["GET"]),
    Route(_BASE, replace_tags, methods=["PUT"]),
    Route(_BASE, clear_tags, methods=["DELETE"]),
    Route(_BASE + "/{tag}", check_tag, methods=["GET"]),
    Route(_BASE + "/{tag}", add_tag, methods=["PUT"]),
    Route(_BASE + "/{tag}", remove_tag, methods=["DELETE"]),
]
