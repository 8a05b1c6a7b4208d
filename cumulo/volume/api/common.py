"""What every Block Storage API module shares: the service, the caller, policy,
microversions, timestamps, links, and the one pagination helper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cumulo.common.app import json_body
from cumulo.common.auth import request_context
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, NotFound
from cumulo.volume.api.microversion import MIN_VERSION
from cumulo.volume.core import VolumeService


def service_of(request: Request) -> VolumeService:
    return request.app.state.volume


async def authorize(request: Request, rule: str, project_id: str | None = None) -> RequestContext:
    ctx = await request_context(request)
    target = {"project_id": project_id or ctx.project_id or "", "user_id": ctx.user_id}
    service_of(request).policy.enforce(rule, ctx, target)
    return ctx


def version(request: Request) -> tuple[int, int]:
    return request.scope.get("volume.version", MIN_VERSION)


def at_least(request: Request, major: int, minor: int) -> bool:
    return version(request) >= (major, minor)


def isotime(ts: datetime | None) -> str | None:
    """Cinder's timestamps: 2019-04-02T11:03:33.000000."""
    return ts.isoformat(timespec="microseconds") if ts else None


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def project_in_url(request: Request) -> str:
    """ "/<project id>" when the request's URL carried one, else "": links follow the
    caller's form (the project id is optional since 3.67)."""
    project = request.scope.get("volume.url_project")
    return f"/{project}" if project else ""


def links(request: Request, collection: str, item_id: str) -> list[dict]:
    path = f"{project_in_url(request)}/{collection}/{item_id}"
    return [
        {"rel": "self", "href": f"{base_url(request)}/v3{path}"},
        {"rel": "bookmark", "href": f"{base_url(request)}{path}"},
    ]


def json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def accepted(body: Any = None) -> Response:
    return JSONResponse(body, status_code=202) if body is not None else Response(status_code=202)


def parse_bool(raw: str | None, name: str) -> bool | None:
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on", "t", "y"):
        return True
    if value in ("false", "0", "no", "off", "f", "n"):
        return False
    raise BadRequest(f"Invalid input received: Invalid value '{raw}' for {name}.")


def parse_int(raw: Any, name: str, *, minimum: int | None = None) -> int:
    if isinstance(raw, bool):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {raw}.")
    try:
        value = int(raw)
        if isinstance(raw, float) and raw != value:
            raise ValueError
    except (TypeError, ValueError):
        raise BadRequest(
            f"Invalid input for field/attribute {name}. Value: {raw}. "
            f"{raw!r} is not of type 'integer'"
        ) from None
    if minimum is not None and value < minimum:
        raise BadRequest(
            f"Invalid input for field/attribute {name}. Value: {raw}. "
            f"{value} is less than the minimum of {minimum}"
        )
    return value


def sort_keys(request: Request, allowed: dict[str, Any]) -> list[Any]:
    """ORDER BY from `sort=k1:dir,k2` or `sort_key`/`sort_dir` (Cinder's default:
    created_at desc, then id desc)."""
    params = request.query_params
    pairs: list[tuple[str, str]] = []
    if params.get("sort"):
        for item in params["sort"].split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
    elif params.get("sort_key"):
        pairs.append((params["sort_key"], params.get("sort_dir", "desc")))
    pairs = pairs or [("created_at", "desc")]
    if all(k != "id" for k, _ in pairs):
        pairs.append(("id", pairs[-1][1]))
    order = []
    for key, direction in pairs:
        if key == "name":
            key = "display_name" if "display_name" in allowed else key
        column = allowed.get(key)
        if column is None:
            raise BadRequest(f"Invalid input received: Invalid sort key {key}.")
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid input received: Invalid sort dir {direction}.")
        order.append(column.asc() if direction == "asc" else column.desc())
    return order


def page_params(request: Request, max_limit: int) -> tuple[int, str | None, int]:
    params = request.query_params
    limit = max_limit
    if params.get("limit") is not None:
        limit = min(parse_int(params["limit"], "limit", minimum=0), max_limit)
    offset = parse_int(params["offset"], "offset", minimum=0) if params.get("offset") else 0
    return limit, params.get("marker"), offset


def page_of(
    ordered_ids: list[str], marker: str | None, limit: int, offset: int
) -> tuple[list[str], bool]:
    """One page of an ordered id list after the marker; and whether to link a next one."""
    start = 0
    if marker:
        try:
            start = ordered_ids.index(marker) + 1
        except ValueError:
            raise NotFound(f"Marker {marker} could not be found.") from None
    start += offset
    page = ordered_ids[start : start + limit]
    # Cinder links the next page whenever a page is full, even when it is the last.
    return page, limit > 0 and len(page) == limit


def next_links(
    request: Request, collection: str, last_id: str | None, more: bool
) -> list[dict[str, str]]:
    if not more or last_id is None:
        return []
    params = {k: v for k, v in request.query_params.items() if k not in ("marker", "offset")}
    params["marker"] = last_id
    url = f"{base_url(request)}/v3{project_in_url(request)}/{collection}"
    return [{"rel": "next", "href": f"{url}?{urlencode(params)}"}]


Action = Callable[[Request, str, Any], Awaitable[Response]]


async def run_action(request: Request, actions: dict[str, Action]) -> Response:
    """`POST .../{id}/action` with a body of one action: {"os-name": args}."""
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Invalid request body: exactly one action is expected.")
    ((name, args),) = body.items()
    action = actions.get(name)
    if action is None:
        raise BadRequest(f"There is no such action: {name}")
    return await action(request, request.path_params["id"], args)
