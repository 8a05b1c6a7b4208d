"""Per-project compute quotas (api-ref: Quota sets (os-quota-sets)).

The nova-network quotas (fixed_ips, floating_ips, security_groups, security_group_rules)
are shown as -1 until 2.36, which drops them; 2.57 drops the injected-file quotas.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest
from cumulo.compute import quotas
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, no_content, version
from cumulo.compute.models import Quota

NETWORK_QUOTAS = ("fixed_ips", "floating_ips", "security_group_rules", "security_groups")
INJECTED_FILE_QUOTAS = ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes")


def shown_resources(request: Request) -> list[str]:
    """The quota names this microversion shows and accepts."""
    names = list(quotas.DEFAULTS)
    if version(request) < (2, 36):
        names += NETWORK_QUOTAS
    if version(request) >= (2, 57):
        names = [n for n in names if n not in INJECTED_FILE_QUOTAS]
    return sorted(names)


def _quota_set(request: Request, limits: dict[str, int]) -> dict[str, int]:
    return {name: limits.get(name, -1) for name in shown_resources(request)}


async def _target(request: Request, rule: str) -> str:
    project_id = request.path_params["project_id"]
    await authorize(request, rule, {"project_id": project_id})
    return project_id


async def show_quota_set(request: Request) -> Response:
    """GET /os-quota-sets/{project_id}"""
    project_id = await _target(request, "compute:quotas:show")
    async with compute_of(request).db.read() as s:
        limits = await s.run_sync(quotas.limits, project_id)
    return json({"quota_set": {"id": project_id, **_quota_set(request, limits)}})


async def show_quota_set_detail(request: Request) -> Response:
    """GET /os-quota-sets/{project_id}/detail: limit, in_use and reserved of each."""
    project_id = await _target(request, "compute:quotas:show")
    async with compute_of(request).db.read() as s:
        limits = await s.run_sync(quotas.limits, project_id)
        used = await s.run_sync(quotas.usage, project_id)
    body: dict[str, Any] = {"id": project_id}
    for name, limit in _quota_set(request, limits).items():
        body[name] = {"limit": limit, "in_use": used.get(name, 0), "reserved": 0}
    return json({"quota_set": body})


async def show_defaults(request: Request) -> Response:
    """GET /os-quota-sets/{project_id}/defaults"""
    project_id = request.path_params["project_id"]
    await authorize(request, "compute:quotas:defaults")
    async with compute_of(request).db.read() as s:
        limits = await s.run_sync(quotas.defaults)
    return json({"quota_set": {"id": project_id, **_quota_set(request, limits)}})


async def update_quota_set(request: Request) -> Response:
    """PUT /os-quota-sets/{project_id} (admin): unless forced, not below what is in use."""
    project_id = await _target(request, "compute:quotas:update")
    body = wire.object_body(await json_body(request), "quota_set")
    allowed = set(shown_resources(request))
    wire.reject_unknown(body, allowed | {"force"})
    force = wire.boolean("force", body.pop("force", False))
    wanted = {name: wire.integer(name, value, -1) for name, value in body.items()}
    async with compute_of(request).db.write() as s:
        used = await s.run_sync(quotas.usage, project_id)
        for name, limit in wanted.items():
            if name in NETWORK_QUOTAS:
                continue  # nova-network is gone: accepted and ignored, as Nova does
            minimum = used.get(name, 0)
            if not force and limit != -1 and limit < minimum:
                raise BadRequest(
                    f"Quota limit {limit} for {name} must be greater than or equal to "
                    f"already used and reserved {minimum}."
                )
            await _set_limit(s, project_id, name, limit)
        await s.flush()
        limits = await s.run_sync(quotas.limits, project_id)
    return json({"quota_set": _quota_set(request, limits)})


async def _set_limit(s, key: str, name: str, limit: int) -> None:
    row = await s.get(Quota, (key, name))
    if row is None:
        s.add(Quota(project_id=key, resource=name, hard_limit=limit))
    else:
        row.hard_limit = limit


# -- quota classes (api-ref: Quota class sets (os-quota-class-sets)) ----------------------


def class_resources(request: Request) -> list[str]:
    """Before 2.50 the class set has the network quotas and not the server group ones."""
    names = shown_resources(request)
    if version(request) < (2, 50):
        return sorted({*names, *NETWORK_QUOTAS} - {"server_groups", "server_group_members"})
    return [n for n in names if n not in NETWORK_QUOTAS]


def _class_name(request: Request) -> str:
    name = request.path_params["class_name"]
    if not 1 <= len(quotas.class_key(name)) <= 64:
        raise BadRequest(f"Invalid input for field/attribute id. Value: {name}.")
    return name


async def show_quota_class_set(request: Request) -> Response:
    await authorize(request, "compute:quotas:update")
    name = _class_name(request)
    async with compute_of(request).db.read() as s:
        limits = await s.run_sync(quotas.class_limits, name)
    shown = {n: limits.get(n, -1) for n in class_resources(request)}
    return json({"quota_class_set": {"id": name, **shown}})


async def update_quota_class_set(request: Request) -> Response:
    """PUT /os-quota-class-sets/{name} (admin); `default` is every project's default."""
    await authorize(request, "compute:quotas:update")
    name = _class_name(request)
    body = wire.object_body(await json_body(request), "quota_class_set")
    wire.reject_unknown(body, set(class_resources(request)))
    wanted = {n: wire.integer(n, value, -1) for n, value in body.items()}
    async with compute_of(request).db.write() as s:
        for resource, limit in wanted.items():
            # The nova-network quotas are kept (and shown) but limit nothing, as in Nova.
            await _set_limit(s, quotas.class_key(name), resource, limit)
        await s.flush()
        limits = await s.run_sync(quotas.class_limits, name)
    return json({"quota_class_set": {n: limits.get(n, -1) for n in class_resources(request)}})


async def revert_quota_set(request: Request) -> Response:
    """DELETE /os-quota-sets/{project_id} (admin): back to the defaults."""
    project_id = await _target(request, "compute:quotas:update")
    async with compute_of(request).db.write() as s:
        await s.execute(delete(Quota).where(Quota.project_id == project_id))
    return no_content(202)


routes = [
    Route("/v2.1/os-quota-sets/{project_id}", show_quota_set, methods=["GET"]),
    Route("/v2.1/os-quota-sets/{project_id}", update_quota_set, methods=["PUT"]),
    Route("/v2.1/os-quota-sets/{project_id}", revert_quota_set, methods=["DELETE"]),
    Route("/v2.1/os-quota-sets/{project_id}/defaults", show_defaults, methods=["GET"]),
    Route("/v2.1/os-quota-sets/{project_id}/detail", show_quota_set_detail, methods=["GET"]),
    Route("/v2.1/os-quota-class-sets/{class_name}", show_quota_class_set, methods=["GET"]),
    Route("/v2.1/os-quota-class-sets/{class_name}", update_quota_class_set, methods=["PUT"]),
]
