"""What every Compute API module shares: context, policy, links, pagination."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.app import JSONResponse
from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.compute.api.microversion import APIVersion, version_of
from cumulo.compute.service import ComputeService

MAX_LIMIT = 1000


def compute_of(request: Request) -> ComputeService:
    return request.app.state.compute


async def authorize(
    request: Request, rule: str, target: dict[str, Any] | None = None
) -> RequestContext:
    ctx = await request_context(request)
    if target is None:
        target = {"project_id": ctx.project_id, "user_id": ctx.user_id}
    compute_of(request).policy.enforce(rule, ctx, target)
    return ctx


def version(request: Request) -> APIVersion:
    return version_of(request)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def links(request: Request, collection: str, item_id: str) -> list[dict[str, str]]:
    """Nova's self and bookmark links."""
    base = base_url(request)
    return [
        {"rel": "self", "href": f"{base}/v2.1/{collection}/{item_id}"},
        {"rel": "bookmark", "href": f"{base}/{collection}/{item_id}"},
    ]


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def no_content(status: int = 204) -> Response:
    return Response(status_code=status)


def limit_and_marker(request: Request) -> tuple[int, str | None]:
    raw = request.query_params.get("limit")
    limit = MAX_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest(f"Invalid input for query parameters limit. Value: {raw}.") from None
        if limit < 0:
            raise BadRequest("Invalid input for query parameters limit: must be >= 0.")
        limit = min(limit, MAX_LIMIT)
    return limit, request.query_params.get("marker")


async def page(
    request: Request, session: AsyncSession, query: Select, marker_column: Any, marker_value: Any
) -> tuple[list[Any], bool]:
    """Rows after the marker (already resolved to marker_value), and whether more follow."""
    limit, _ = limit_and_marker(request)
    if marker_value is not None:
        query = query.where(marker_column > marker_value)
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    return rows[:limit], len(rows) > limit


def next_link(request: Request, collection: str, marker: str) -> list[dict[str, str]]:
    params = dict(request.query_params)
    params["marker"] = marker
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return [{"rel": "next", "href": f"{base_url(request)}/v2.1/{collection}?{query}"}]
