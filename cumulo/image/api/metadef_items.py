"""A metadata definition namespace's properties, objects and tags
(`/v2/metadefs/namespaces/{namespace}/{properties,objects,tags}`): list, create, show,
update (a new `name` renames), delete one or all.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import Conflict, Forbidden, NotFound
from cumulo.image.api.common import authorize, json, no_content, service_of
from cumulo.image.api.metadef_common import (
    BASE,
    KINDS,
    as_object,
    new_item,
    render_item,
    render_property,
    visible_namespace,
)
from cumulo.image.models import (
    MetadefItem,
    MetadefNamespace,
)


async def _get_item(request: Request, ns: MetadefNamespace, kind: str) -> MetadefItem:
    name = request.path_params["name"]
    async with service_of(request).db.read() as session:
        item = await session.get(
            MetadefItem, {"namespace": ns.namespace, "kind": kind, "name": name}
        )
    if item is None:
        raise NotFound(f"Metadata definition {kind}={name} was not found in {ns.namespace}.")
    return item


def _segment(request: Request) -> str:
    return request.url.path.split("/")[5]


async def list_items(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    segment = _segment(request)
    kind = KINDS[segment][0]
    async with service_of(request).db.read() as session:
        items = list(
            await session.scalars(
                select(MetadefItem)
                .where(MetadefItem.namespace == ns.namespace, MetadefItem.kind == kind)
                .order_by(MetadefItem.name)
            )
        )
    if kind == "property":
        return json({"properties": {i.name: render_property(i, named=False) for i in items}})
    body: dict[str, Any] = {segment: [render_item(kind, ns.namespace, i) for i in items]}
    if kind == "object":
        body["schema"] = "v2/schemas/metadefs/objects"
    return json(body)


async def create_item(request: Request) -> Response:
    """POST .../properties, .../objects, .../tags/{name}; POST .../tags creates several,
    replacing the namespace's tags unless `X-Openstack-Append: true`."""
    kind, parse = KINDS[_segment(request)]
    many = kind == "tag" and "name" not in request.path_params
    if kind == "tag" and not many:
        bodies = [{"name": request.path_params["name"]}]
    elif many:
        bodies = [
            parse(as_object(t)) for t in as_object(await json_body(request)).get("tags") or []
        ]
    else:
        bodies = [parse(as_object(await json_body(request)))]
    _, ns = await visible_namespace(request)
    await authorize(request, "image:add_metadef_item")
    items = [new_item(ns.namespace, kind, b.pop("name"), b) for b in bodies]
    append = request.headers.get("x-openstack-append", "").lower() == "true"
    try:
        async with service_of(request).db.write() as session:
            if many and not append:
                await session.execute(
                    delete(MetadefItem).where(
                        MetadefItem.namespace == ns.namespace, MetadefItem.kind == "tag"
                    )
                )
            session.add_all(items)
    except IntegrityError:
        raise Conflict(
            f"A metadata definition {kind} of that name exists in {ns.namespace}."
        ) from None
    if many:
        return json({"tags": [{"name": i.name} for i in items]}, status=201)
    return json(render_item(kind, ns.namespace, items[0]), status=201)


async def show_item(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    kind = KINDS[_segment(request)][0]
    return json(render_item(kind, ns.namespace, await _get_item(request, ns, kind)))


async def update_item(request: Request) -> Response:
    """PUT .../{kind}/{name}: replaces the definition (a new `name` renames it)."""
    kind, parse = KINDS[_segment(request)]
    body = parse(as_object(await json_body(request)))
    _, ns = await visible_namespace(request)
    await authorize(request, "image:modify_metadef_item")
    item = await _get_item(request, ns, kind)
    new_name = body.pop("name")
    try:
        async with service_of(request).db.write() as session:
            await session.execute(
                update(MetadefItem)
                .where(
                    MetadefItem.namespace == ns.namespace,
                    MetadefItem.kind == kind,
                    MetadefItem.name == item.name,
                )
                .values(name=new_name, body=jsonlib.dumps(body), updated_at=utcnow())
            )
            item = await session.get(
                MetadefItem, {"namespace": ns.namespace, "kind": kind, "name": new_name}
            )
    except IntegrityError:
        raise Conflict(
            f"A metadata definition {kind}={new_name} exists in {ns.namespace}."
        ) from None
    assert item is not None
    return json(render_item(kind, ns.namespace, item))


async def delete_item(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    await authorize(request, "image:delete_metadef_item")
    kind = KINDS[_segment(request)][0]
    item = await _get_item(request, ns, kind)
    async with service_of(request).db.write() as session:
        await session.execute(
            delete(MetadefItem).where(
                MetadefItem.namespace == ns.namespace,
                MetadefItem.kind == kind,
                MetadefItem.name == item.name,
            )
        )
    return no_content()


async def delete_all_items(request: Request) -> Response:
    """DELETE .../properties, .../objects, .../tags: all of that kind in the namespace."""
    _, ns = await visible_namespace(request)
    await authorize(request, "image:delete_metadef_item")
    if ns.protected:
        raise Forbidden(f"Namespace {ns.namespace} is protected: its contents stay.")
    kind = KINDS[_segment(request)][0]
    async with service_of(request).db.write() as session:
        await session.execute(
            delete(MetadefItem).where(
                MetadefItem.namespace == ns.namespace, MetadefItem.kind == kind
            )
        )
    return no_content()


_NS = BASE + "/{namespace}"
routes = []
for _segment_name in KINDS:
    routes += [
        Route(f"{_NS}/{_segment_name}", list_items, methods=["GET"]),
        Route(f"{_NS}/{_segment_name}", delete_all_items, methods=["DELETE"]),
        Route(f"{_NS}/{_segment_name}/{{name}}", show_item, methods=["GET"]),
        Route(f"{_NS}/{_segment_name}/{{name}}", update_item, methods=["PUT"]),
        Route(f"{_NS}/{_segment_name}/{{name}}", delete_item, methods=["DELETE"]),
    ]
routes += [
    Route(f"{_NS}/properties", create_item, methods=["POST"]),
    Route(f"{_NS}/objects", create_item, methods=["POST"]),
    Route(f"{_NS}/tags", create_item, methods=["POST"]),
    Route(f"{_NS}/tags/{{name}}", create_item, methods=["POST"]),
]
