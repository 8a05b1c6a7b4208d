"""The overview: a project's quota usage as charts, or a domain's projects and users."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.activity import recent_activity
from cumulo.dashboard.apis import gather, optional
from cumulo.dashboard.web import apis_of, page, render, session_of


def _usage(label: str, used: Any, limit: Any) -> dict[str, Any]:
    used, limit = int(used or 0), int(limit if limit is not None else -1)
    share = 0.0 if limit <= 0 else min(1.0, used / limit)
    return {"label": label, "used": used, "limit": limit, "share": share}


async def domain_overview(request: Request) -> Response:
    """A domain-scoped session: the domain's projects and users (Compute, Network and
    Storage want a project)."""
    identity, domain_id = apis_of(request).identity, session_of(request).scope_domain_id
    projects, users, groups = await gather(
        identity.get(url_path("/v3/projects?domain_id={}", domain_id)),
        identity.get(url_path("/v3/users?domain_id={}", domain_id)),
        identity.get(url_path("/v3/groups?domain_id={}", domain_id)),
    )
    return render(
        request,
        "overview.html",
        projects=projects["projects"],
        users=users["users"],
        groups=groups["groups"],
    )


@page
async def overview(request: Request) -> Response:
    if session_of(request).scope_domain_id:
        return await domain_overview(request)
    api, project = apis_of(request), session_of(request).project_id
    compute, volume, network, servers, activity = await gather(
        api.compute.get("/v2.1/limits"),
        optional(api.volume.get("/v3/limits"), {"limits": {"absolute": {}}}),
        optional(api.network.get(url_path("/v2.0/quotas/{}/details.json", project)), {"quota": {}}),
        api.compute.get("/v2.1/servers/detail?limit=5"),
        recent_activity(api, project),
    )
    c, v, n = compute["limits"]["absolute"], volume["limits"]["absolute"], network["quota"]

    def net(key: str, label: str) -> dict[str, Any]:
        q = n.get(key, {})
        return _usage(label, q.get("used"), q.get("limit"))

    charts = [
        _usage("Instances", c.get("totalInstancesUsed"), c.get("maxTotalInstances")),
        _usage("vCPUs", c.get("totalCoresUsed"), c.get("maxTotalCores")),
        _usage("RAM (MiB)", c.get("totalRAMUsed"), c.get("maxTotalRAMSize")),
        _usage("Volumes", v.get("totalVolumesUsed"), v.get("maxTotalVolumes")),
        _usage("Gigabytes", v.get("totalGigabytesUsed"), v.get("maxTotalVolumeGigabytes")),
        net("floatingip", "Floating IPs"),
        net("security_group", "Security groups"),
        net("network", "Networks"),
        net("port", "Ports"),
    ]
    return render(
        request, "overview.html", charts=charts, recent=servers["servers"], activity=activity
    )


routes = [
    Route("/", overview, methods=["GET"]),
]
