"""What every Identity API module shares: the caller's context, policy, links, lists."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.app import JSONResponse, json_body, validate
from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, NotFound
from cumulo.identity.core import Identity

B = TypeVar("B", bound="Body")

MAX_TAGS = 80
TAG_PATTERN = re.compile(r"^[^,/]{1,255}$")

# Names: non-empty, no surrounding whitespace-only strings (Keystone's parameter_types.name).
NAME_PATTERN = r"\S"


class Body(BaseModel):
    """Request bodies: strict JSON types, unknown keys kept (Keystone stores them as extras)."""

    model_config = ConfigDict(strict=True, extra="allow")


class ClosedBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def Name(max_length: int = 255, *, required: bool = True) -> Any:  # noqa: N802 - reads as a type
    if required:
        return Field(min_length=1, max_length=max_length, pattern=NAME_PATTERN)
    return Field(None, min_length=1, max_length=max_length, pattern=NAME_PATTERN)


def check_tags(tags: list[str]) -> list[str]:
    """Project and domain tags: Keystone's rules, duplicates dropped."""
    for tag in tags:
        if not TAG_PATTERN.match(tag):
            raise BadRequest(f"Invalid tag {tag!r}: 1-255 characters, no ',' or '/'.")
    return list(dict.fromkeys(tags))


def identity_of(request: Request) -> Identity:
    return request.app.state.identity


def new_id() -> str:
    return uuid.uuid4().hex


# The caller, from X-Auth-Token; 401 when it is missing or not valid.
context = request_context


async def authorize(
    request: Request, rule: str, target: dict[str, Any] | None = None
) -> RequestContext:
    ctx = await context(request)
    identity_of(request).policy.enforce(rule, ctx, {"target": target or {}, **(target or {})})
    return ctx


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def self_link(request: Request, path: str) -> dict[str, str]:
    return {"self": f"{base_url(request)}/v3/{path}"}


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)


def query_bool(request: Request, name: str) -> bool | None:
    """A boolean query filter as Keystone reads it: absent means None; '0'/'false'/'no' false."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    return raw.strip().lower() not in ("0", "false", "no", "off", "f", "n")


async def paginate(
    request: Request,
    session: AsyncSession,
    query: Select,
    id_column: Any,
) -> tuple[Sequence[Any], bool]:
    """Apply `marker` and `limit` (capped by list_limit); returns rows and `truncated`."""
    identity = identity_of(request)
    limit = identity.config.identity.list_limit
    raw_limit = request.query_params.get("limit")
    if raw_limit is not None:
        try:
            asked = int(raw_limit)
        except ValueError:
            raise BadRequest(f"Invalid limit: {raw_limit!r} is not an integer.") from None
        if asked < 0:
            raise BadRequest("Invalid limit: must not be negative.")
        limit = min(limit, asked)
    marker = request.query_params.get("marker")
    if marker:
        query = query.where(id_column > marker)
    rows = (await session.scalars(query.order_by(id_column).limit(limit + 1))).all()
    return rows[:limit], len(rows) > limit


def list_body(
    request: Request, key: str, items: list[dict[str, Any]], truncated: bool = False
) -> dict[str, Any]:
    links: dict[str, Any] = {"self": str(request.url), "previous": None, "next": None}
    if truncated and items:
        params = dict(request.query_params)
        params["marker"] = items[-1]["id"]
        query = "&".join(f"{k}={v}" for k, v in params.items())
        links["next"] = f"{str(request.url).split('?')[0]}?{query}"
    body: dict[str, Any] = {key: items, "links": links}
    if truncated:
        body["truncated"] = True
    return body


# -- what the CRUD modules share ---------------------------------------------------------


def section(data: Any, key: str) -> Any:
    """The `{"region": {...}}` wrapper's content, or None (validation then says 400)."""
    return data.get(key) if isinstance(data, dict) else None


def extras_of(body: Body, known: set[str]) -> dict[str, Any]:
    """The attributes a client sent beyond the known ones: Keystone stores them as extras."""
    return {k: v for k, v in (body.model_extra or {}).items() if k not in known}


def require_matching_id(body: Body, path_id: str) -> None:
    body_id = getattr(body, "id", None) or (body.model_extra or {}).get("id")
    if body_id is not None and body_id != path_id:
        raise BadRequest("Cannot change ID")


def missing_reference(attribute: str, table: str) -> BadRequest:
    return BadRequest(
        f"Expecting to find {attribute} in {table}. The server could not comply with the "
        "request since it is either malformed or otherwise incorrect. "
        "The client is assumed to be in error."
    )


async def get_or_404(session: AsyncSession, model: type[Any], ident: str) -> Any:
    row = await session.get(model, ident)
    if row is None:
        raise NotFound(f"Could not find {model.__tablename__}: {ident}.")
    return row


async def update_body(request: Request, key: str, model: type[B], path_id: str) -> B:
    """A PATCH body: at least one property, and no other id than the one in the path."""
    data = section(await json_body(request), key)
    body = validate(model, data)
    if not data:
        raise BadRequest(f"Invalid input for field '{key}': at least one property is required.")
    require_matching_id(body, path_id)
    return body


async def list_rows(
    request: Request,
    key: str,
    model: type[Any],
    filters: dict[str, Any],
    render: Callable[[Request, Any], dict[str, Any]],
) -> Response:
    """A list filtered by exact match on each query parameter named in `filters`."""
    query = select(model)
    for name, column in filters.items():
        if name in request.query_params:
            query = query.where(column == request.query_params[name])
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, model.id)
    return json(list_body(request, key, [render(request, r) for r in rows], truncated))


def apply_update(row: Any, body: Body, names: tuple[str, ...], known: set[str]) -> None:
    """Set the given attributes that the PATCH body carries, and merge its extras."""
    for name in names:
        if name in body.model_fields_set and getattr(body, name) is not None:
            setattr(row, name, getattr(body, name))
    if extras := extras_of(body, known):
        row.extra = {**(row.extra or {}), **extras}


async def delete_row(request: Request, model: type[Any], ident: str) -> Response:
    """DELETE of a row that nothing else refers to: 404 when unknown, else 204."""
    async with identity_of(request).write() as session:
        await get_or_404(session, model, ident)
        await session.execute(delete(model).where(model.id == ident))
    return no_content()
