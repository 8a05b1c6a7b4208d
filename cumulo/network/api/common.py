"""What every Network API module shares: the service, the caller, bodies, and lists.

Lists follow the api-ref's conventions: filters by attribute (`?name=x&status=ACTIVE`,
repeated for "any of"), `fields=`, `sort_key`/`sort_dir`, `limit`/`marker`/`page_reverse`
with `<collection>_links`, and the tag filters `tags`, `tags-any`, `not-tags`, `not-tags-any`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cumulo.common.app import json_body
from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.network.core import NetworkService
from cumulo.network.errors import InvalidInput
from cumulo.network.models import Standard, Tag

PAGING_PARAMS = ("fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse")
TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")
STANDARD_ATTRS = ("name", "description")


def service_of(request: Request) -> NetworkService:
    return request.app.state.network


async def caller(request: Request) -> RequestContext:
    return await request_context(request)


def isotime(ts: datetime | None) -> str | None:
    """Neutron's timestamps: 2016-03-08T20:19:41Z."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def no_content() -> Response:
    return Response(status_code=204)


def standard(row: Standard, tags: Sequence[str]) -> dict[str, Any]:
    """The standard attributes every resource shows."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "project_id": row.project_id,
        "tenant_id": row.project_id,
        "tags": list(tags),
        "created_at": isotime(row.created_at),
        "updated_at": isotime(row.updated_at),
        "revision_number": row.revision_number,
    }


async def tags_of(session: AsyncSession, ids: Iterable[str]) -> dict[str, list[str]]:
    ids = list(ids)
    found: dict[str, list[str]] = {i: [] for i in ids}
    for chunk in range(0, len(ids), 500):
        rows = await session.scalars(
            select(Tag).where(Tag.resource_id.in_(ids[chunk : chunk + 500])).order_by(Tag.tag)
        )
        for t in rows:
            found[t.resource_id].append(t.tag)
    return found


# -- request bodies ---------------------------------------------------------------------


async def resource_body(request: Request, resource: str, allowed: Iterable[str]) -> dict[str, Any]:
    """The `{resource: {...}}` object of a request; unknown attributes are refused."""
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get(resource), dict):
        raise BadRequest(f"Resource body required: an object named '{resource}'.")
    return _checked_attrs(body[resource], allowed)


async def create_bodies(
    request: Request, resource: str, collection: str, allowed: Iterable[str]
) -> tuple[list[dict[str, Any]], bool]:
    """What a create asks for: one `{resource: {...}}`, or Neutron's bulk form
    `{collection: [{...}, ...]}` (created all or none); the flag says which it was."""
    body = await json_body(request)
    if isinstance(body, dict) and resource not in body and isinstance(body.get(collection), list):
        items = body[collection]
        if not items or not all(isinstance(i, dict) for i in items):
            raise BadRequest(f"Resources required: a non-empty list of objects '{collection}'.")
        return [_checked_attrs(i, allowed) for i in items], True
    if not isinstance(body, dict) or not isinstance(body.get(resource), dict):
        raise BadRequest(f"Resource body required: an object named '{resource}'.")
    return [_checked_attrs(body[resource], allowed)], False


def _checked_attrs(attrs: dict[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    unknown = sorted(set(attrs) - set(allowed) - {"tenant_id", "project_id"})
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    if "tenant_id" in attrs and "project_id" in attrs and attrs["tenant_id"] != attrs["project_id"]:
        raise BadRequest("'project_id' and 'tenant_id' do not match")
    if "tenant_id" in attrs:
        attrs.setdefault("project_id", attrs.pop("tenant_id"))
    return attrs


def owner_of(service: NetworkService, ctx: RequestContext, attrs: dict[str, Any]) -> str:
    """The project a new resource belongs to: the caller's, or any for an admin."""
    project_id = attrs.get("project_id")
    if project_id is None or project_id == ctx.project_id:
        return ctx.project_id or ""
    if not isinstance(project_id, str) or len(project_id) > 255:
        raise InvalidInput("Invalid input for project_id.")
    service.enforce(ctx, "network:set_project")
    return project_id


def to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidInput(f"Invalid input for {name}. Reason: '{value}' is not a valid boolean value.")


def to_str(name: str, value: Any, max_len: int = 255, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"Invalid input for {name}. Reason: '{value}' is not a valid string.")
    if len(value) > max_len:
        raise InvalidInput(
            f"Invalid input for {name}. Reason: '{value}' exceeds maximum length of {max_len}."
        )
    return value


def to_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        value = None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"Invalid input for {name}. Reason: '{value}' is not an integer."
        ) from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise InvalidInput(
            f"Invalid input for {name}. Reason: '{n}' is not in range {lo} through {hi}."
        )
    return n


def to_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"Invalid input for {name}. Reason: '{value}' is not a list.")
    return value


def apply_standard(row: Standard, attrs: dict[str, Any]) -> None:
    """Set name/description from a body; every update bumps the revision."""
    for name in STANDARD_ATTRS:
        if name in attrs:
            setattr(row, name, to_str(name, attrs[name]))


# -- responses: fields, filters, sorting, pagination ------------------------------------


def select_fields(request: Request, item: dict[str, Any]) -> dict[str, Any]:
    fields = [f for f in request.query_params.getlist("fields") if f]
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def show(request: Request, member: str, item: dict[str, Any], status: int = 200) -> Response:
    return json({member: select_fields(request, item)}, status)


def created(
    request: Request, resource: str, collection: str, items: list[dict[str, Any]], bulk: bool
) -> Response:
    """201 with the one resource created, or the list a bulk create made."""
    if bulk:
        return json({collection: [select_fields(request, i) for i in items]}, 201)
    return show(request, resource, items[0], 201)


def _matches(value: Any, wanted: list[str]) -> bool:
    if isinstance(value, bool):
        return str(value).lower() in [w.lower() for w in wanted]
    if isinstance(value, list):
        return any(str(v) in wanted for v in value if not isinstance(v, dict))
    return ("" if value is None else str(value)) in wanted


def _fixed_ips_match(item: dict[str, Any], wanted: list[str]) -> bool:
    """`fixed_ips=ip_address=10.0.0.3` / `subnet_id=...` / `ip_address_substr=...`."""
    for spec in wanted:
        key, _, value = spec.partition("=")
        for fip in item.get("fixed_ips", []):
            if key == "ip_address_substr" and value in fip["ip_address"]:
                break
            if fip.get(key) == value:
                break
        else:
            return False
    return True


def _tag_filters(item: dict[str, Any], request: Request) -> bool:
    tags = set(item.get("tags", []))

    def wanted(name: str) -> set[str] | None:
        values = request.query_params.getlist(name)
        return {t for v in values for t in v.split(",") if t} if values else None

    if (w := wanted("tags")) is not None and not w <= tags:
        return False
    if (w := wanted("tags-any")) is not None and not w & tags:
        return False
    if (w := wanted("not-tags")) is not None and w <= tags:
        return False
    return not ((w := wanted("not-tags-any")) is not None and w & tags)


def _sort_value(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int):
        return (1, int(value), "")
    return (2, 0, str(value))


def list_response(request: Request, collection: str, items: list[dict[str, Any]]) -> Response:
    """Filter, sort and page rendered items, then answer `{collection: [...]}`."""
    params = request.query_params
    for key in {k for k in params if k not in PAGING_PARAMS and k not in TAG_FILTERS}:
        wanted = params.getlist(key)
        if key == "fixed_ips":
            items = [i for i in items if _fixed_ips_match(i, wanted)]
        elif items and key in items[0]:
            items = [i for i in items if _matches(i.get(key), wanted)]
    if any(t in params for t in TAG_FILTERS):
        items = [i for i in items if _tag_filters(i, request)]

    keys = params.getlist("sort_key")
    dirs = params.getlist("sort_dir")
    if len(dirs) > len(keys) or any(d not in ("asc", "desc") for d in dirs):
        raise BadRequest("The number of sort_keys and sort_dirs must be same")
    for key in keys:
        if items and key not in items[0]:
            raise BadRequest(f"{key} is an invalid attribute for sort_keys")
    order = list(zip(keys, dirs + ["asc"] * (len(keys) - len(dirs)), strict=True)) + [("id", "asc")]
    for key, direction in reversed(order):
        items.sort(key=lambda i, k=key: _sort_value(i.get(k)), reverse=direction == "desc")

    reverse = params.get("page_reverse", "false").lower() == "true"
    if reverse:
        items.reverse()
    marker = params.get("marker")
    if marker:
        ids = [i["id"] for i in items]
        items = items[ids.index(marker) + 1 :] if marker in ids else []
    links = []
    limit_raw = params.get("limit")
    if limit_raw:
        limit = to_int("limit", limit_raw, lo=0)
        if limit and len(items) > limit:
            items = items[:limit]
            links.append(_link(request, "next", items[-1]["id"], limit, reverse))
        if marker and items:
            links.append(_link(request, "previous", items[0]["id"], limit, not reverse))
    if reverse:
        items.reverse()
    body: dict[str, Any] = {collection: [select_fields(request, i) for i in items]}
    if links:
        body[f"{collection}_links"] = links
    return json(body)


def _link(request: Request, rel: str, marker: str, limit: int, reverse: bool) -> dict[str, str]:
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in PAGING_PARAMS[3:]]
    query += [("limit", str(limit)), ("marker", marker)]
    if reverse:
        query.append(("page_reverse", "True"))
    return {"rel": rel, "href": f"{str(request.url).split('?')[0]}?{urlencode(query)}"}
