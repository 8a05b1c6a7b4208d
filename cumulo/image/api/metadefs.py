"""Metadata definitions (api-ref: Metadata definitions, `/v2/metadefs`): namespaces of
property definitions, objects and tags, and the resource types they apply to. The
namespaces' contents one by one: metadef_items.py.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.image.api.common import authorize, json, no_content, service_of
from cumulo.image.api.metadef_common import (
    BASE,
    as_object,
    checked_name,
    new_item,
    parse_object,
    parse_property,
    render_object,
    render_property,
    render_tag,
    stamps,
    visible_clause,
    visible_namespace,
)
from cumulo.image.models import (
    MetadefAssociation,
    MetadefItem,
    MetadefNamespace,
    MetadefResourceType,
)

# -- namespaces ------------------------------------------------------------------------


def _render_namespace(ns: MetadefNamespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "namespace": ns.namespace,
        "visibility": ns.visibility,
        "protected": ns.protected,
        "owner": ns.owner,
        **stamps(ns),
        "self": f"{BASE}/{ns.namespace}",
        "schema": "/v2/schemas/metadefs/namespace",
    }
    for key in ("display_name", "description"):
        if getattr(ns, key) is not None:
            body[key] = getattr(ns, key)
    return body


def _namespace_values(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    values: dict[str, Any] = {"namespace": checked_name(body, "namespace")}
    if "visibility" in body or creating:
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise BadRequest(f"Invalid visibility {visibility!r}: public or private.")
        values["visibility"] = visibility
    if "protected" in body or creating:
        if not isinstance(body.get("protected", False), bool):
            raise BadRequest("'protected' must be a boolean.")
        values["protected"] = body.get("protected", False)
    for key in ("display_name", "description"):
        if key in body:
            if body[key] is not None and not isinstance(body[key], str):
                raise BadRequest(f"'{key}' must be a string.")
            values[key] = body[key]
    return values


async def create_namespace(request: Request) -> Response:
    """POST /v2/metadefs/namespaces: with its associations, properties, objects, tags."""
    body = as_object(await json_body(request))
    values = _namespace_values(body, creating=True)
    ctx = await authorize(request, "image:add_metadef_namespace")
    values["owner"] = body.get("owner") or ctx.project_id
    now = utcnow()
    ns = MetadefNamespace(**values, created_at=now, updated_at=now)
    service = service_of(request)
    try:
        async with service.db.write() as session:
            session.add(ns)
            await session.flush()
            for assoc in body.get("resource_type_associations") or []:
                await _associate(session, ns.namespace, as_object(assoc))
            for name, definition in (body.get("properties") or {}).items():
                session.add(new_item(ns.namespace, "property", name, parse_property(definition)))
            for obj in body.get("objects") or []:
                obj = parse_object(as_object(obj))
                session.add(new_item(ns.namespace, "object", obj["name"], obj))
            for tag in body.get("tags") or []:
                tag_name = checked_name(as_object(tag), limit=255)
                session.add(new_item(ns.namespace, "tag", tag_name, {"name": tag_name}))
    except IntegrityError:
        raise Conflict(
            f"Metadata definition namespace={ns.namespace} already exists or names what "
            "does not exist."
        ) from None
    return json(await _full_namespace(request, ns), status=201)


async def _full_namespace(request: Request, ns: MetadefNamespace) -> dict[str, Any]:
    """A namespace as show renders it: with what it holds (empty parts left out)."""
    service = service_of(request)
    async with service.db.read() as session:
        assocs = list(
            await session.scalars(
                select(MetadefAssociation).where(MetadefAssociation.namespace == ns.namespace)
            )
        )
        items = list(
            await session.scalars(
                select(MetadefItem)
                .where(MetadefItem.namespace == ns.namespace)
                .order_by(MetadefItem.name)
            )
        )
    body = _render_namespace(ns)
    if assocs:
        body["resource_type_associations"] = [_render_association(a) for a in assocs]
    props = {i.name: render_property(i, named=False) for i in items if i.kind == "property"}
    if props:
        body["properties"] = props
    objects = [render_object(ns.namespace, i) for i in items if i.kind == "object"]
    if objects:
        body["objects"] = objects
    tags = [render_tag(i) for i in items if i.kind == "tag"]
    if tags:
        body["tags"] = tags
    return body


async def list_namespaces(request: Request) -> Response:
    """GET /v2/metadefs/namespaces (`visibility`, `resource_types`, `limit`, `marker`)."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_metadef_namespaces")
    query = select(MetadefNamespace).where(visible_clause(ctx, service.is_admin(ctx)))
    params = request.query_params
    if "visibility" in params:
        query = query.where(MetadefNamespace.visibility == params["visibility"])
    if "resource_types" in params:
        types = [t for t in params["resource_types"].split(",") if t]
        query = query.where(
            MetadefNamespace.namespace.in_(
                select(MetadefAssociation.namespace).where(
                    MetadefAssociation.resource_type.in_(types)
                )
            )
        )
    if "marker" in params:
        query = query.where(MetadefNamespace.namespace > params["marker"])
    try:
        limit = int(params.get("limit", service.config.image.list_limit))
    except ValueError:
        raise BadRequest("limit param must be an integer") from None
    limit = min(max(limit, 0), service.config.image.max_list_limit)
    query = query.order_by(MetadefNamespace.namespace).limit(limit + 1)
    async with service.db.read() as session:
        rows = list(await session.scalars(query))
    body: dict[str, Any] = {
        "namespaces": [_render_namespace(ns) for ns in rows[:limit]],
        "first": BASE,
        "schema": "/v2/schemas/metadefs/namespaces",
    }
    if len(rows) > limit:
        body["next"] = f"{BASE}?marker={rows[limit - 1].namespace}&limit={limit}"
    return json(body)


async def show_namespace(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    return json(await _full_namespace(request, ns))


async def update_namespace(request: Request) -> Response:
    """PUT /v2/metadefs/namespaces/{ns}: the namespace's own attributes (and name)."""
    body = as_object(await json_body(request))
    values = _namespace_values(body, creating=False)
    _, ns = await visible_namespace(request)
    await authorize(request, "image:modify_metadef_namespace")
    service = service_of(request)
    new_name = values.pop("namespace")
    try:
        async with service.db.write() as session:
            row = await session.get(MetadefNamespace, ns.namespace)
            if row is None:
                raise NotFound(f"Metadata definition namespace={ns.namespace} was not found.")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            if new_name != ns.namespace:  # a rename: a new row, its contents moved to it
                await session.flush()
                renamed = MetadefNamespace(
                    **{c.key: getattr(row, c.key) for c in MetadefNamespace.__table__.columns}
                )
                renamed.namespace = new_name
                session.add(renamed)
                await session.flush()
                for model in (MetadefAssociation, MetadefItem):
                    await session.execute(
                        update(model)
                        .where(model.namespace == ns.namespace)
                        .values(namespace=new_name)
                    )
                await session.delete(row)
                row = renamed
    except IntegrityError:
        raise Conflict(
            f"Metadata definition namespace={values['namespace']} already exists."
        ) from None
    return json(await _full_namespace(request, row))


async def delete_namespace(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    await authorize(request, "image:delete_metadef_namespace")
    if ns.protected:
        raise Forbidden(f"Namespace {ns.namespace} is protected and cannot be deleted.")
    async with service_of(request).db.write() as session:
        await session.execute(
            delete(MetadefNamespace).where(MetadefNamespace.namespace == ns.namespace)
        )
    return no_content()


# -- resource types ------------------------------------------------------------------------


def _render_association(a: MetadefAssociation) -> dict[str, Any]:
    body: dict[str, Any] = {"name": a.resource_type, **stamps(a)}
    for key in ("prefix", "properties_target"):
        if getattr(a, key) is not None:
            body[key] = getattr(a, key)
    return body


async def _associate(session, namespace: str, body: dict[str, Any]) -> MetadefAssociation:
    name = checked_name(body)
    if await session.get(MetadefResourceType, name) is None:
        raise NotFound(f"Metadata definition resource-type={name} was not found.")
    if await session.get(MetadefAssociation, {"namespace": namespace, "resource_type": name}):
        raise Conflict(f"Resource type {name} is already associated with namespace {namespace}.")
    now = utcnow()
    row = MetadefAssociation(
        namespace=namespace,
        resource_type=name,
        prefix=body.get("prefix"),
        properties_target=body.get("properties_target"),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    return row


async def list_resource_types(request: Request) -> Response:
    await authorize(request, "image:list_metadef_resource_types")
    async with service_of(request).db.read() as session:
        rows = list(
            await session.scalars(select(MetadefResourceType).order_by(MetadefResourceType.name))
        )
    return json({"resource_types": [{"name": r.name, **stamps(r)} for r in rows]})


async def list_associations(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    async with service_of(request).db.read() as session:
        rows = await session.scalars(
            select(MetadefAssociation).where(MetadefAssociation.namespace == ns.namespace)
        )
        return json({"resource_type_associations": [_render_association(a) for a in rows]})


async def add_association(request: Request) -> Response:
    body = as_object(await json_body(request))
    _, ns = await visible_namespace(request)
    await authorize(request, "image:add_metadef_resource_type_association")
    async with service_of(request).db.write() as session:
        row = await _associate(session, ns.namespace, body)
    return json(_render_association(row), status=201)


async def remove_association(request: Request) -> Response:
    _, ns = await visible_namespace(request)
    await authorize(request, "image:remove_metadef_resource_type_association")
    name = request.path_params["name"]
    async with service_of(request).db.write() as session:
        result = await session.execute(
            delete(MetadefAssociation).where(
                MetadefAssociation.namespace == ns.namespace,
                MetadefAssociation.resource_type == name,
            )
        )
    if result.rowcount == 0:
        raise NotFound(f"Resource type {name} is not associated with namespace {ns.namespace}.")
    return no_content()


_NS = BASE + "/{namespace}"
routes = [
    Route("/v2/metadefs/resource_types", list_resource_types, methods=["GET"]),
    Route(BASE, list_namespaces, methods=["GET"]),
    Route(BASE, create_namespace, methods=["POST"]),
    Route(_NS, show_namespace, methods=["GET"]),
    Route(_NS, update_namespace, methods=["PUT"]),
    Route(_NS, delete_namespace, methods=["DELETE"]),
    Route(_NS + "/resource_types", list_associations, methods=["GET"]),
    Route(_NS + "/resource_types", add_association, methods=["POST"]),
    Route(_NS + "/resource_types/{name}", remove_association, methods=["DELETE"]),
]
