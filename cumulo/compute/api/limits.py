"""Absolute limits of the caller's project with its usage (api-ref: Limits (limits))."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import Forbidden
from cumulo.compute import quotas
from cumulo.compute.api import wire
from cumulo.compute.api.common import authorize, compute_of, json, version

# limit name -> quota resource
_MAXIMA = {
    "maxServerMeta": "metadata_items",
    "maxPersonality": "injected_files",
    "maxPersonalitySize": "injected_file_content_bytes",
    "maxImageMeta": "metadata_items",
    "maxTotalKeypairs": "key_pairs",
    "maxServerGroups": "server_groups",
    "maxServerGroupMembers": "server_group_members",
    "maxTotalCores": "cores",
    "maxTotalInstances": "instances",
    "maxTotalRAMSize": "ram",
}
_USED = {
    "totalCoresUsed": "cores",
    "totalInstancesUsed": "instances",
    "totalRAMUsed": "ram",
    "totalServerGroupsUsed": "server_groups",
}
# nova-network's limits, shown (unlimited, unused) until 2.36.
_NETWORK = {
    "maxSecurityGroups": -1,
    "maxSecurityGroupRules": -1,
    "maxTotalFloatingIps": -1,
    "totalFloatingIpsUsed": 0,
    "totalSecurityGroupsUsed": 0,
}


def _dropped(request: Request) -> set[str]:
    v = version(request)
    dropped: set[str] = set()
    if v >= (2, 36):
        dropped |= set(_NETWORK)
    if v >= (2, 39):
        dropped.add("maxImageMeta")
    if v >= (2, 57):
        dropped |= {"maxPersonality", "maxPersonalitySize"}
    return dropped


async def show_limits(request: Request) -> Response:
    """GET /limits[?tenant_id=] (another project's: admins only)."""
    ctx = await authorize(request, "compute:limits")
    project_id = request.query_params.get("tenant_id") or ctx.project_id
    if project_id != ctx.project_id and not wire.is_admin(request, ctx):
        raise Forbidden("Policy doesn't allow os_compute_api:limits:other_project to be performed.")
    async with compute_of(request).db.read() as s:
        limits = await s.run_sync(quotas.limits, project_id or "")
        used = await s.run_sync(quotas.usage, project_id or "")
    absolute: dict[str, Any] = {name: limits.get(q, -1) for name, q in _MAXIMA.items()}
    absolute.update({name: used.get(q, 0) for name, q in _USED.items()})
    absolute.update(_NETWORK)
    for name in _dropped(request):
        absolute.pop(name, None)
    return json({"limits": {"rate": [], "absolute": absolute}})


routes = [Route("/v2.1/limits", show_limits, methods=["GET"])]
