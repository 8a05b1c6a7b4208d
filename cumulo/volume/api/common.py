"""What every Block Storage API module shares: the service, the caller, policy,
microversions, timestamps, links, and the one pagination helper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import or_, select
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


def list_body(
    request: Request, key: str, items: list[dict], collection: str, page: list[str], more: bool
) -> dict[str, Any]:
    """{key: items} with `<key>_links` to the next page when there is one."""
    body: dict[str, Any] = {key: items}
    nxt = next_links(request, collection, page[-1] if page else None, more)
    if nxt:
        body[f"{key}_links"] = nxt
    return body


async def element(request: Request, name: str) -> dict[str, Any]:
    """The request body's top-level object `name` (400 when absent)."""
    body = await json_body(request)
    spec = body.get(name) if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest(f"Missing required element '{name}' in request body.")
    return spec


async def key_values(session: Any, owner: Any, ids: list[str]) -> dict[str, dict[str, str]]:
    """{id: {key: value}} from a key/value table whose `owner` column holds the ids
    (extra specs, group specs, QoS specs)."""
    out: dict[str, dict[str, str]] = {i: {} for i in ids}
    rows = await session.execute(
        select(owner, owner.class_.key, owner.class_.value).where(owner.in_(ids))
    )
    for owner_id, key, value in rows:
        out[owner_id][key] = value
    return out


async def find_by_id_or_name(session: Any, model: Any, ref: str, what: str) -> Any:
    found = await session.scalar(select(model).where(or_(model.id == ref, model.name == ref)))
    if found is None:
        raise NotFound(f"{what} {ref} could not be found.")
    return found


async def load_owned(
    request: Request, model: Any, item_id: str, what: str, read_rule: str, rule: str | None
) -> tuple[RequestContext, Any]:
    """A row of the caller's project (any project's for admins) allowed by `read_rule`,
    then by `rule` against its project; 404 `<what> <id> could not be found.` else."""
    ctx = await authorize(request, read_rule)
    service = service_of(request)
    async with service.db.read() as session:
        row = await session.get(model, item_id)
    if row is None or (row.project_id != ctx.project_id and not service.is_admin(ctx)):
        raise NotFound(f"{what} {item_id} could not be found.")
    if rule is not None and rule != read_rule:
        await authorize(request, rule, row.project_id)
    return ctx, row


async def owned_page(
    request: Request, model: Any, filters: tuple[str, ...], sort_columns: dict[str, Any]
) -> tuple[RequestContext, list[str], list[Any], bool]:
    """A list request's page of `model` rows: the caller's project's (every project's, or
    `project_id`'s, for admins with all_tenants), filtered by equality on `filters`,
    sorted and paged as Cinder does. (ctx, every matching id, the page's rows, more)."""
    ctx = await request_context(request)
    service = service_of(request)
    params = request.query_params
    limit, marker, offset = page_params(request, service.config.volume.list_limit)
    where: list[Any] = []
    if not (service.is_admin(ctx) and parse_bool(params.get("all_tenants"), "all_tenants")):
        where.append(model.project_id == ctx.project_id)
    elif params.get("project_id"):
        where.append(model.project_id == params["project_id"])
    where += [getattr(model, key) == params[key] for key in filters if params.get(key)]
    order = sort_keys(request, sort_columns)
    async with service.db.read() as session:
        ids = list(await session.scalars(select(model.id).where(*where).order_by(*order)))
        page, more = page_of(ids, marker, limit, offset)
        rows = {r.id: r for r in await session.scalars(select(model).where(model.id.in_(page)))}
    return ctx, ids, [rows[i] for i in page if i in rows], more
