"""Migration records (api-ref: Migrations os-migrations; Server migrations
servers/{id}/migrations): every cold migration, resize, live migration and evacuation,
and a server's live migration in progress (show, force_complete, abort)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, NotFound
from cumulo.compute.api.common import (
    authorize,
    base_url,
    compute_of,
    json,
    limit_and_marker,
    next_link,
    no_content,
    version,
)
from cumulo.compute.models import Migration
from cumulo.compute.service_moves import IN_PROGRESS_LIVE

_FILTERS = ("host", "status", "source_compute", "migration_type")


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _changes(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid input for query parameters {name}. Value: {raw}.") from None
    return value.replace(tzinfo=None) if value.tzinfo else value


def _places(m: Migration, hosts: bool) -> dict[str, Any]:
    """Where the migration goes: null for callers who may not see hosts (Nova)."""
    return {
        "source_node": m.source_node if hosts else None,
        "source_compute": m.source_compute if hosts else None,
        "dest_node": m.dest_node if hosts else None,
        "dest_compute": m.dest_compute if hosts else None,
        "dest_host": m.dest_host if hosts else None,
    }


def migration_view(request: Request, m: Migration, hosts: bool = True) -> dict[str, Any]:
    """One row of GET /os-migrations, for the request's microversion."""
    body: dict[str, Any] = {
        "id": m.id,
        "status": m.status,
        "instance_uuid": m.instance_uuid,
        **_places(m, hosts),
        "old_instance_type_id": m.old_flavor_id,
        "new_instance_type_id": m.new_flavor_id,
        "created_at": _time(m.created_at),
        "updated_at": _time(m.updated_at),
    }
    v = version(request)
    if v >= (2, 23):
        body["migration_type"] = m.migration_type
        if m.migration_type == "live-migration" and m.status in IN_PROGRESS_LIVE:
            href = f"servers/{m.instance_uuid}/migrations/{m.id}"
            body["links"] = [
                {"rel": "self", "href": f"{base_url(request)}/v2.1/{href}"},
                {"rel": "bookmark", "href": f"{base_url(request)}/{href}"},
            ]
    if v >= (2, 59):
        body["uuid"] = m.uuid
    if v >= (2, 80):
        body["user_id"] = m.user_id
        body["project_id"] = m.project_id
    return body


def live_migration_view(request: Request, m: Migration, hosts: bool = True) -> dict[str, Any]:
    """A server's live migration (GET /servers/{id}/migrations[/{id}])."""
    body: dict[str, Any] = {
        "id": m.id,
        "status": m.status,
        "server_uuid": m.instance_uuid,
        **_places(m, hosts),
        "disk_processed_bytes": m.disk_processed,
        "disk_remaining_bytes": m.disk_remaining,
        "disk_total_bytes": m.disk_total,
        "memory_processed_bytes": m.memory_processed,
        "memory_remaining_bytes": m.memory_remaining,
        "memory_total_bytes": m.memory_total,
        "created_at": _time(m.created_at),
        "updated_at": _time(m.updated_at),
    }
    if version(request) >= (2, 59):
        body["uuid"] = m.uuid
    if version(request) >= (2, 80):
        body["user_id"] = m.user_id
        body["project_id"] = m.project_id
    return body


async def list_migrations(request: Request) -> Response:
    """GET /os-migrations: filters; from 2.59 paging (limit, marker = a migration's
    uuid) and changes-since, 2.66 changes-before, 2.80 user_id / project_id."""
    ctx = await authorize(request, "compute:migrations:index")
    v = version(request)
    params = request.query_params
    policy = compute_of(request).policy
    # Another project's migrations, or every project's: admins (a manager names its own).
    asked = params.get("project_id") if v >= (2, 80) else None
    if asked != ctx.project_id:
        policy.enforce("compute:migrations:index:all_projects", ctx, {"project_id": asked})
    hosts = policy.check("compute:migrations:index:host", ctx, {"project_id": asked})
    filters = {k: params[k] for k in _FILTERS if k in params}
    rows = await compute_of(request).migrations(
        instance_uuid=params.get("instance_uuid"),
        user_id=params.get("user_id") if v >= (2, 80) else None,
        project_id=params.get("project_id") if v >= (2, 80) else None,
        filters=filters,
    )
    if v < (2, 59):
        return json({"migrations": [migration_view(request, m, hosts) for m in rows]})
    since = _changes(request, "changes-since")
    before = _changes(request, "changes-before") if v >= (2, 66) else None
    if since and before and since > before:
        raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
    if since:
        rows = [m for m in rows if (m.updated_at or m.created_at) >= since]
    if before:
        rows = [m for m in rows if (m.updated_at or m.created_at) <= before]
    limit, marker = limit_and_marker(request)
    if marker is not None:
        index = next((i for i, m in enumerate(rows) if m.uuid == marker), None)
        if index is None:
            raise BadRequest(f"Marker {marker} could not be found.")
        rows = rows[index + 1 :]
    page, more = rows[:limit], len(rows) > limit
    body: dict[str, Any] = {"migrations": [migration_view(request, m, hosts) for m in page]}
    if more and page:
        body["migrations_links"] = next_link(request, "os-migrations", page[-1].uuid)
    return json(body)


async def _server(request: Request, since: tuple[int, int], rule: str | None = None):
    """The server, once the caller may see it and (`rule`) do this to it; the actions
    (abort, force_complete) check their own rule."""
    if version(request) < since:
        raise NotFound("The resource could not be found.")
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await service.get_instance(
        ctx, request.path_params["server_id"], "compute:servers:action"
    )
    if rule:
        service.policy.enforce(rule, ctx, {"project_id": inst.project_id})
    return ctx, service, inst


async def list_server_migrations(request: Request) -> Response:
    """2.23: the server's live migrations in progress (hosts for admins only)."""
    ctx, service, inst = await _server(request, (2, 23), "compute:servers:migrations:index")
    hosts = service.policy.check(
        "compute:servers:migrations:index:host", ctx, {"project_id": inst.project_id}
    )
    rows = await service.migrations(
        instance_uuid=inst.uuid, migration_type="live-migration", statuses=IN_PROGRESS_LIVE
    )
    return json({"migrations": [live_migration_view(request, m, hosts) for m in rows]})


async def show_server_migration(request: Request) -> Response:
    _, service, inst = await _server(request, (2, 23), "compute:servers:migrations:show")
    migration = await service.server_migration(inst, request.path_params["migration_id"])
    if migration.migration_type != "live-migration" or migration.status not in IN_PROGRESS_LIVE:
        raise NotFound(
            f"In progress migration {migration.id} for instance {inst.uuid} could not be found."
        )
    return json({"migration": live_migration_view(request, migration)})


async def abort_server_migration(request: Request) -> Response:
    """2.24: DELETE aborts a live migration in progress."""
    ctx, service, inst = await _server(request, (2, 24))
    await service.abort_live_migration(inst, ctx, request.path_params["migration_id"])
    return no_content(202)


async def server_migration_action(request: Request) -> Response:
    """2.22: {"force_complete": null}."""
    ctx, service, inst = await _server(request, (2, 22))
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"force_complete"}:
        raise BadRequest("Invalid input for field/attribute force_complete.")
    await service.force_complete(inst, ctx, request.path_params["migration_id"])
    return no_content(202)


routes = [
    Route("/v2.1/os-migrations", list_migrations, methods=["GET"]),
    Route("/v2.1/servers/{server_id}/migrations", list_server_migrations, methods=["GET"]),
    Route(
        "/v2.1/servers/{server_id}/migrations/{migration_id}",
        show_server_migration,
        methods=["GET"],
    ),
    Route(
        "/v2.1/servers/{server_id}/migrations/{migration_id}",
        abort_server_migration,
        methods=["DELETE"],
    ),
    Route(
        "/v2.1/servers/{server_id}/migrations/{migration_id}/action",
        server_migration_action,
        methods=["POST"],
    ),
]
