"""What the metadata definitions API shares: paths, request checks, the namespace a path
names (if the caller may see it), and how properties, objects and tags are parsed from
requests and rendered. As Glance's defaults: everyone reads public namespaces (private
ones: their owner and admins); only admins write. A namespace's properties, objects and
tags are rows of `metadef_item` keyed by (namespace, kind, name) with their JSON body.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

from sqlalchemy import or_, select
from starlette.requests import Request

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound
from cumulo.image.api.common import authorize, isotime, service_of
from cumulo.image.models import (
    MetadefItem,
    MetadefNamespace,
)

BASE = "/v2/metadefs/namespaces"
PROPERTY_TYPES = ("array", "boolean", "integer", "number", "object", "string")
# What a property definition may say (a JSON-schema subset, as Glance's).
PROPERTY_KEYS = {
    "title", "description", "type", "enum", "default", "readonly", "operators",
    "minimum", "maximum", "minLength", "maxLength", "pattern", "items", "minItems",
    "maxItems", "uniqueItems", "additionalItems",
}  # fmt: skip


def stamps(row) -> dict[str, Any]:
    return {"created_at": isotime(row.created_at), "updated_at": isotime(row.updated_at)}


def as_object(request_body: Any) -> dict[str, Any]:
    if not isinstance(request_body, dict):
        raise BadRequest("Body expected in request.")
    return request_body


def checked_name(body: dict[str, Any], key: str = "name", limit: int = 80) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BadRequest(f"'{key}' is required: a string of 1 to {limit} characters.")
    return value


def visible_clause(ctx: RequestContext, is_admin: bool):
    if is_admin:
        return True
    return or_(MetadefNamespace.visibility == "public", MetadefNamespace.owner == ctx.project_id)


async def visible_namespace(request: Request) -> tuple[RequestContext, MetadefNamespace]:
    """The path's namespace if the caller may see it (404 otherwise)."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_metadef_namespace")
    name = request.path_params["namespace"]
    async with service.db.read() as session:
        ns = await session.scalar(
            select(MetadefNamespace).where(
                MetadefNamespace.namespace == name, visible_clause(ctx, service.is_admin(ctx))
            )
        )
    if ns is None:
        raise NotFound(f"Metadata definition namespace={name} was not found.")
    return ctx, ns


def new_item(namespace: str, kind: str, name: str, body: dict[str, Any]) -> MetadefItem:
    now = utcnow()
    return MetadefItem(
        namespace=namespace,
        kind=kind,
        name=name,
        body=jsonlib.dumps(body),
        created_at=now,
        updated_at=now,
    )


def parse_property(body: Any) -> dict[str, Any]:
    body = as_object(body)
    unknown = set(body) - PROPERTY_KEYS - {"name"}
    if unknown:
        raise BadRequest(f"Additional properties are not allowed: {sorted(unknown)}")
    if not isinstance(body.get("title"), str):
        raise BadRequest("'title' is a required property.")
    if body.get("type") not in PROPERTY_TYPES:
        raise BadRequest(f"'type' is required, one of {list(PROPERTY_TYPES)}.")
    return {k: v for k, v in body.items() if k != "name"}


def parse_object(body: dict[str, Any]) -> dict[str, Any]:
    name = checked_name(body)
    required = body.get("required", [])
    if not isinstance(required, list):
        raise BadRequest("'required' must be a list of property names.")
    properties = body.get("properties", {})
    if not isinstance(properties, dict):
        raise BadRequest("'properties' must be an object.")
    out = {
        "name": name,
        "required": required,
        "properties": {k: parse_property(v) for k, v in properties.items()},
    }
    if body.get("description") is not None:
        out["description"] = body["description"]
    return out


def render_property(item: MetadefItem, named: bool = True) -> dict[str, Any]:
    body = jsonlib.loads(item.body)
    return {"name": item.name, **body} if named else body


def render_object(namespace: str, item: MetadefItem) -> dict[str, Any]:
    return {
        **jsonlib.loads(item.body),
        "name": item.name,
        **stamps(item),
        "self": f"{BASE}/{namespace}/objects/{item.name}",
        "schema": "/v2/schemas/metadefs/object",
    }


def render_tag(item: MetadefItem) -> dict[str, Any]:
    return {"name": item.name, **stamps(item)}


KINDS = {
    # path segment: (kind, what a request body becomes, how a row is shown)
    "properties": ("property", lambda b: {"name": checked_name(b, limit=255), **parse_property(b)}),
    "objects": ("object", parse_object),
    "tags": ("tag", lambda b: {"name": checked_name(b, limit=255)}),
}


def render_item(kind: str, namespace: str, item: MetadefItem) -> dict[str, Any]:
    if kind == "property":
        return render_property(item)
    if kind == "object":
        return render_object(namespace, item)
    return render_tag(item)
