"""/v2.0/quotas (api-ref: Quotas extension, with quota_details)."""

from __future__ import annotations

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network.api.common import caller, json, no_content, resource_body, service_of, to_int
from cumulo.network.core import QUOTA_MODELS
from cumulo.network.models import Quota
from cumulo.network.ports import write_retrying


def _with_project(quota: dict[str, int], project_id: str) -> dict:
    return {**quota, "project_id": project_id, "tenant_id": project_id}


async def list_quotas(request: Request) -> Response:
    """Projects with non-default quotas (admin)."""
    service, ctx = service_of(request), await caller(request)
    service.enforce(ctx, "network:admin_only")
    async with service.db.read() as session:
        projects = sorted(set(await session.scalars(select(Quota.project_id))))
        quotas = [_with_project(await service.quota_limits(session, p), p) for p in projects]
    return json({"quotas": quotas})


async def show_quota(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    project_id = request.path_params["project_id"]
    service.enforce(ctx, "network:get_quota", project_id)
    async with service.db.read() as session:
        return json({"quota": await service.quota_limits(session, project_id)})


async def default_quota(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    service.enforce(ctx, "network:get_quota", request.path_params["project_id"])
    return json({"quota": dict(service.config.network.quota)})


async def quota_details(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    project_id = request.path_params["project_id"]
    service.enforce(ctx, "network:get_quota", project_id)
    async with service.db.read() as session:
        limits = await service.quota_limits(session, project_id)
        details = {
            name: {
                "limit": limit,
                "used": await service.usage(session, project_id, name),
                "reserved": 0,
            }
            for name, limit in limits.items()
        }
    return json({"quota": details})


@describes(body=wrapped("quota", [*QUOTA_MODELS, "rbac_policy", "check_limit"]))
async def update_quota(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    project_id = request.path_params["project_id"]
    service.enforce(ctx, "network:update_quota", project_id)
    attrs = await resource_body(request, "quota", [*QUOTA_MODELS, "rbac_policy", "check_limit"])
    attrs.pop("check_limit", None)
    attrs.pop("rbac_policy", None)
    if "project_id" in attrs:
        raise BadRequest("Unrecognized attribute(s) 'project_id'")
    limits = {name: to_int(name, value, lo=-1) for name, value in attrs.items()}

    async def work(session):
        for name, limit in limits.items():
            row = await session.get(Quota, {"project_id": project_id, "resource": name})
            if row is None:
                session.add(Quota(project_id=project_id, resource=name, limit=limit))
            else:
                row.limit = limit
        await session.flush()
        return await service.quota_limits(session, project_id)

    return json({"quota": await write_retrying(service.db, work)})


async def reset_quota(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    project_id = request.path_params["project_id"]
    service.enforce(ctx, "network:update_quota", project_id)

    async def work(session):
        await session.execute(delete(Quota).where(Quota.project_id == project_id))

    await write_retrying(service.db, work)
    return no_content()


routes = [
    Route("/v2.0/quotas", list_quotas, methods=["GET"]),
    Route("/v2.0/quotas/{project_id}", show_quota, methods=["GET"]),
    Route("/v2.0/quotas/{project_id}", update_quota, methods=["PUT"]),
    Route("/v2.0/quotas/{project_id}", reset_quota, methods=["DELETE"]),
    Route("/v2.0/quotas/{project_id}/default", default_quota, methods=["GET"]),
    Route("/v2.0/quotas/{project_id}/details", quota_details, methods=["GET"]),
]
