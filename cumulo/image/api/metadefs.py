"""Metadata definitions (api-ref: Metadata definitions, `/v2/metadefs`): namespaces of
property definitions, objects and tags, and the resource types they apply to.

As Glance's defaults: everyone reads public namespaces (private ones: their owner and
admins); only admins write. A namespace's properties, objects and tags are rows of
`metadef_item` keyed by (namespace, kind, name) with their JSON body.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.image.api.common import authorize, isotime, json, no_content, service_of
from cumulo.image.models import (
    MetadefAssociation,
    MetadefItem,
    MetadefNamespace,
    MetadefResourceType,
)

BASE = "/v2/metadefs/namespaces"
PROPERTY_TYPES = ("array", "boolean", "integer", "number", "object", "string")
# What a property definition may say (a JSON-schema subset, as Glance's).
PROPERTY_KEYS = {
    "title", "description", "type", "enum", "default", "readonly", "operators",
    "minimum", "maximum", "minLength", "maxLength", "pattern", "items", "minItems",
    "maxItems", "uniqueItems", "additionalItems",
}  # fmt: skip


def _stamps(row) -> dict[str, Any]:
    return {"created_at": isotime(row.created_at), "updated_at": isotime(row.updated_at)}


def _body(request_body: Any) -> dict[str, Any]:
    if not isinstance(request_body, dict):
        raise BadRequest("Body expected in request.")
    return request_body


def _name(body: dict[str, Any], key: str = "name", limit: int = 80) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BadRequest(f"'{key}' is required: a string of 1 to {limit} characters.")
    return value


# -- namespaces ------------------------------------------------------------------------


def _render_namespace(ns: MetadefNamespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "namespace": ns.namespace,
        "visibility": ns.visibility,
        "protected": ns.protected,
        "owner": ns.owner,
        **_stamps(ns),
        "self": f"{BASE}/{ns.namespace}",
        "schema": "/v2/schemas/metadefs/namespace",
    }
    for key in ("display_name", "description"):
        if getattr(ns, key) is not None:
            body[key] = getattr(ns, key)
    return body


def _visible(ctx: RequestContext, is_admin: bool):
    if is_admin:
        return True
    return or_(MetadefNamespace.visibility == "public", MetadefNamespace.owner == ctx.project_id)


async def _namespace(request: Request) -> tuple[RequestContext, MetadefNamespace]:
    """The path's namespace if the caller may see it (404 otherwise)."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_metadef_namespace")
    name = request.path_params["namespace"]
    async with service.db.read() as session:
        ns = await session.scalar(
            select(MetadefNamespace).where(
                MetadefNamespace.namespace == name, _visible(ctx, service.is_admin(ctx))
            )
        )
    if ns is None:
        raise NotFound(f"Metadata definition namespace={name} was not found.")
    return ctx, ns


def _namespace_values(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    values: dict[str, Any] = {"namespace": _name(body, "namespace")}
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
    body = _body(await json_body(request))
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
                await _associate(session, ns.namespace, _body(assoc))
            for name, definition in (body.get("properties") or {}).items():
                session.add(_item(ns.namespace, "property", name, _property(definition)))
            for obj in body.get("objects") or []:
                obj = _object(_body(obj))
                session.add(_item(ns.namespace, "object", obj["name"], obj))
            for tag in body.get("tags") or []:
                tag_name = _name(_body(tag), limit=255)
                session.add(_item(ns.namespace, "tag", tag_name, {"name": tag_name}))
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
    props = {i.name: _render_property(i, named=False) for i in items if i.kind == "property"}
    if props:
        body["properties"] = props
    objects = [_render_object(ns.namespace, i) for i in items if i.kind == "object"]
    if objects:
        body["objects"] = objects
    tags = [_render_tag(i) for i in items if i.kind == "tag"]
    if tags:
        body["tags"] = tags
    return body


async def list_namespaces(request: Request) -> Response:
    """GET /v2/metadefs/namespaces (`visibility`, `resource_types`, `limit`, `marker`)."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_metadef_namespaces")
    query = select(MetadefNamespace).where(_visible(ctx, service.is_admin(ctx)))
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
    _, ns = await _namespace(request)
    return json(await _full_namespace(request, ns))


async def update_namespace(request: Request) -> Response:
    """PUT /v2/metadefs/namespaces/{ns}: the namespace's own attributes (and name)."""
    body = _body(await json_body(request))
    values = _namespace_values(body, creating=False)
    _, ns = await _namespace(request)
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
    _, ns = await _namespace(request)
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
    body: dict[str, Any] = {"name": a.resource_type, **_stamps(a)}
    for key in ("prefix", "properties_target"):
        if getattr(a, key) is not None:
            body[key] = getattr(a, key)
    return body


async def _associate(session, namespace: str, body: dict[str, Any]) -> MetadefAssociation:
    name = _name(body)
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
    return json({"resource_types": [{"name": r.name, **_stamps(r)} for r in rows]})


async def list_associations(request: Request) -> Response:
    _, ns = await _namespace(request)
    async with service_of(request).db.read() as session:
        rows = await session.scalars(
            select(MetadefAssociation).where(MetadefAssociation.namespace == ns.namespace)
        )
        return json({"resource_type_associations": [_render_association(a) for a in rows]})


async def add_association(request: Request) -> Response:
    body = _body(await json_body(request))
    _, ns = await _namespace(request)
    await authorize(request, "image:add_metadef_resource_type_association")
    async with service_of(request).db.write() as session:
        row = await _associate(session, ns.namespace, body)
    return json(_render_association(row), status=201)


async def remove_association(request: Request) -> Response:
    _, ns = await _namespace(request)
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


# -- properties, objects, tags -----------------------------------------------------------------


def _item(namespace: str, kind: str, name: str, body: dict[str, Any]) -> MetadefItem:
    now = utcnow()
    return MetadefItem(
        namespace=namespace,
        kind=kind,
        name=name,
        body=jsonlib.dumps(body),
        created_at=now,
        updated_at=now,
    )


def _property(body: Any) -> dict[str, Any]:
    body = _body(body)
    unknown = set(body) - PROPERTY_KEYS - {"name"}
    if unknown:
        raise BadRequest(f"Additional properties are not allowed: {sorted(unknown)}")
    if not isinstance(body.get("title"), str):
        raise BadRequest("'title' is a required property.")
    if body.get("type") not in PROPERTY_TYPES:
        raise BadRequest(f"'type' is required, one of {list(PROPERTY_TYPES)}.")
    return {k: v for k, v in body.items() if k != "name"}


def _object(body: dict[str, Any]) -> dict[str, Any]:
    name = _name(body)
    required = body.get("required", [])
    if not isinstance(required, list):
        raise BadRequest("'required' must be a list of property names.")
    properties = body.get("properties", {})
    if not isinstance(properties, dict):
        raise BadRequest("'properties' must be an object.")
    out = {
        "name": name,
        "required": required,
        "properties": {k: _property(v) for k, v in properties.items()},
    }
    if body.get("description") is not None:
        out["description"] = body["description"]
    return out


def _render_property(item: MetadefItem, named: bool = True) -> dict[str, Any]:
    body = jsonlib.loads(item.body)
    return {"name": item.name, **body} if named else body


def _render_object(namespace: str, item: MetadefItem) -> dict[str, Any]:
    return {
        **jsonlib.loads(item.body),
        "name": item.name,
        **_stamps(item),
        "self": f"{BASE}/{namespace}/objects/{item.name}",
        "schema": "/v2/schemas/metadefs/object",
    }


def _render_tag(item: MetadefItem) -> dict[str, Any]:
    return {"name": item.name, **_stamps(item)}


KINDS = {
    # path segment: (kind, what a request body becomes, how a row is shown)
    "properties": ("property", lambda b: {"name": _name(b, limit=255), **_property(b)}),
    "objects": ("object", _object),
    "tags": ("tag", lambda b: {"name": _name(b, limit=255)}),
}


def _render(kind: str, namespace: str, item: MetadefItem) -> dict[str, Any]:
    if kind == "property":
        return _render_property(item)
    if kind == "object":
        return _render_object(namespace, item)
    return _render_tag(item)


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
    _, ns = await _namespace(request)
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
        return json({"properties": {i.name: _render_property(i, named=False) for i in items}})
    body: dict[str, Any] = {segment: [_render(kind, ns.namespace, i) for i in items]}
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
        bodies = [parse(_body(t)) for t in _body(await json_body(request)).get("tags") or []]
    else:
        bodies = [parse(_body(await json_body(request)))]
    _, ns = await _namespace(request)
    await authorize(request, "image:add_metadef_item")
    items = [_item(ns.namespace, kind, b.pop("name"), b) for b in bodies]
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
    return json(_render(kind, ns.namespace, items[0]), status=201)


async def show_item(request: Request) -> Response:
    _, ns = await _namespace(request)
    kind = KINDS[_segment(request)][0]
    return json(_render(kind, ns.namespace, await _get_item(request, ns, kind)))


async def update_item(request: Request) -> Response:
    """PUT .../{kind}/{name}: replaces the definition (a new `name` renames it)."""
    kind, parse = KINDS[_segment(request)]
    body = parse(_body(await json_body(request)))
    _, ns = await _namespace(request)
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
    return json(_render(kind, ns.namespace, item))


async def delete_item(request: Request) -> Response:
    _, ns = await _namespace(request)
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
    _, ns = await _namespace(request)
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
