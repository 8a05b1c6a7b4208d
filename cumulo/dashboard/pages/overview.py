"""The project overview (quota usage as charts) and the admin pages."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, gather, optional
from cumulo.dashboard.web import apis_of, error_page, page, render, session_of


def _usage(label: str, used: Any, limit: Any) -> dict[str, Any]:
    used, limit = int(used or 0), int(limit if limit is not None else -1)
    share = 0.0 if limit <= 0 else min(1.0, used / limit)
    return {"label": label, "used": used, "limit": limit, "share": share}


@page
async def overview(request: Request) -> Response:
    api, project = apis_of(request), session_of(request).project_id
    compute, volume, network, servers = await gather(
        api.compute.get("/v2.1/limits"),
        optional(api.volume.get("/v3/limits"), {"limits": {"absolute": {}}}),
        optional(api.network.get(url_path("/v2.0/quotas/{}/details.json", project)), {"quota": {}}),
        api.compute.get("/v2.1/servers/detail?limit=5"),
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
    return render(request, "overview.html", charts=charts, recent=servers["servers"])


ADMIN_PAGES = {
    "projects": ("identity", "/v3/projects", "projects", ["name", "id", "domain_id", "enabled"]),
    "users": ("identity", "/v3/users", "users", ["name", "id", "domain_id", "enabled"]),
    "hypervisors": (
        "compute",
        "/v2.1/os-hypervisors/detail",
        "hypervisors",
        [
            "hypervisor_hostname",
            "state",
            "status",
            "vcpus_used",
            "vcpus",
            "memory_mb_used",
            "memory_mb",
            "running_vms",
        ],
    ),
    "services": (
        "compute",
        "/v2.1/os-services",
        "services",
        ["binary", "host", "zone", "status", "state", "updated_at"],
    ),
    "instances": (
        "compute",
        "/v2.1/servers/detail?all_tenants=1&limit=500",
        "servers",
        ["name", "id", "status", "tenant_id", "OS-EXT-SRV-ATTR:host"],
    ),
    "volumes": (
        "volume",
        "/v3/volumes/detail?all_tenants=1",
        "volumes",
        ["name", "id", "status", "size", "os-vol-tenant-attr:tenant_id"],
    ),
    "flavors": (
        "compute",
        "/v2.1/flavors/detail?is_public=None",
        "flavors",
        ["name", "id", "vcpus", "ram", "disk", "os-flavor-access:is_public"],
    ),
}


@page(admin=True)
async def admin_page(request: Request) -> Response:
    kind = request.path_params["kind"]
    if kind not in ADMIN_PAGES:
        return error_page(request, ApiFailure("dashboard", 404, "No such page."))
    service, path, key, columns = ADMIN_PAGES[kind]
    api = getattr(apis_of(request), service.replace("-", "_"))
    body = await api.get(path)
    return render(
        request, "admin.html", kind=kind, rows=body[key], columns=columns, kinds=list(ADMIN_PAGES)
    )


routes = [
    Route("/", overview, methods=["GET"]),
    Route("/admin/{kind}", admin_page, methods=["GET"]),
]
