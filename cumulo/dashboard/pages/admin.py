"""The admin pages: projects, users, groups and role assignments (Identity); quotas per
project (Compute, Block Storage, Network); hypervisors with their usage, compute services,
aggregates and availability zones, flavors (Compute); every project's instances and
volumes. Admins only: everyone else gets the 403 page, on every page and form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, gather
from cumulo.dashboard.web import (
    apis_of,
    error_page,
    form_of,
    page,
    redirect,
    render,
    session_of,
)

# 2.87: the last microversion whose hypervisor details carry the usage figures (2.88
# dropped them); it also takes services and aggregates by UUID (2.53).
ADMIN_COMPUTE = {"OpenStack-API-Version": "compute 2.87", "X-OpenStack-Nova-API-Version": "2.87"}

# The read-only lists: (service, path, key in the body, columns).
LISTS = {
    "projects": ("identity", "/v3/projects", "projects", ["name", "id", "domain_id", "enabled"]),
    "users": ("identity", "/v3/users", "users", ["name", "id", "domain_id", "enabled"]),
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
}
Shown = Callable[..., Awaitable[Response]]


def _shown(request: Request, template: str, error: ApiFailure | None, **context: Any) -> Response:
    """An admin page; after a refused form, with the API's status and message."""
    status = error.status if error is not None else 200
    return render(request, template, status=status, error=error, **context)


async def _submit(request: Request, action: Awaitable[Any], back: str, show: Shown) -> Response:
    """A form's API call: on success to `back`; refused, the page again with the API's
    message and what was typed (a 401 still ends the session)."""
    try:
        await action
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await show(request, error=exc, form=await form_of(request))
    return redirect(request, back)


def _in_scope(request: Request, path: str) -> str:
    """An Identity listing; in a domain-scoped session, of that domain only (what
    Keystone lets a domain admin list)."""
    domain_id = session_of(request).scope_domain_id
    if not domain_id:
        return path
    return f"{path}{'&' if '?' in path else '?'}{url_path('domain_id={}', domain_id)}"


async def _domains(request: Request) -> list[dict[str, Any]]:
    """The domains a group may be made in: every one, or the session's own domain."""
    identity, domain_id = apis_of(request).identity, session_of(request).scope_domain_id
    if domain_id:
        return [(await identity.get(url_path("/v3/domains/{}", domain_id)))["domain"]]
    return (await identity.get("/v3/domains"))["domains"]


def _number(value: Any) -> Any:
    """A typed number as a number; anything else as typed, for the API to refuse."""
    try:
        return int(str(value).strip())
    except ValueError:
        return value


@page(admin=True)
async def admin_list(request: Request) -> Response:
    kind = request.path_params["kind"]
    if kind not in LISTS:
        return error_page(request, ApiFailure("dashboard", 404, "No such page."))
    service, path, key, columns = LISTS[kind]
    if service == "identity":
        path = _in_scope(request, path)
    body = await getattr(apis_of(request), service).get(path)
    return _shown(request, "admin.html", None, kind=kind, rows=body[key], columns=columns)


# -- groups ----------------------------------------------------------------------------


async def _groups(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    groups, domains = await gather(
        apis_of(request).identity.get(_in_scope(request, "/v3/groups")), _domains(request)
    )
    return _shown(
        request,
        "admin_groups.html",
        error,
        groups=sorted(groups["groups"], key=lambda g: g["name"]),
        domains=domains,
        form=form or {},
    )


@page(admin=True)
async def groups_page(request: Request) -> Response:
    return await _groups(request)


@page(admin=True)
async def create_group(request: Request) -> Response:
    form = await form_of(request)
    group = {"name": form.get("name", ""), "description": form.get("description", "")}
    if form.get("domain_id"):
        group["domain_id"] = form["domain_id"]
    call = apis_of(request).identity.post("/v3/groups", {"group": group})
    return await _submit(request, call, "/admin/groups", _groups)


@page(admin=True)
async def delete_group(request: Request) -> Response:
    path = url_path("/v3/groups/{}", request.path_params["group_id"])
    return await _submit(request, apis_of(request).identity.delete(path), "/admin/groups", _groups)


async def _group(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    identity, group_id = apis_of(request).identity, request.path_params["group_id"]
    group, members, users = await gather(
        identity.get(url_path("/v3/groups/{}", group_id)),
        identity.get(url_path("/v3/groups/{}/users", group_id)),
        identity.get(_in_scope(request, "/v3/users")),
    )
    member_ids = {u["id"] for u in members["users"]}
    return _shown(
        request,
        "admin_group.html",
        error,
        group=group["group"],
        members=sorted(members["users"], key=lambda u: u["name"]),
        others=sorted(
            (u for u in users["users"] if u["id"] not in member_ids), key=lambda u: u["name"]
        ),
        form=form or {},
    )


@page(admin=True)
async def group_page(request: Request) -> Response:
    return await _group(request)


@page(admin=True)
async def add_group_user(request: Request) -> Response:
    group_id, form = request.path_params["group_id"], await form_of(request)
    path = url_path("/v3/groups/{}/users/{}", group_id, form.get("user_id", ""))
    call = apis_of(request).identity.put(path)
    return await _submit(request, call, url_path("/admin/groups/{}", group_id), _group)


@page(admin=True)
async def remove_group_user(request: Request) -> Response:
    group_id, user_id = request.path_params["group_id"], request.path_params["user_id"]
    call = apis_of(request).identity.delete(url_path("/v3/groups/{}/users/{}", group_id, user_id))
    return await _submit(request, call, url_path("/admin/groups/{}", group_id), _group)


# -- roles and role assignments ---------------------------------------------------------


async def _project_choice(request: Request, form: Any = None) -> tuple[list[dict], str]:
    """Every project, and the one the page is about (?project=, the form's, or the first)."""
    projects = (await apis_of(request).identity.get(_in_scope(request, "/v3/projects")))["projects"]
    projects.sort(key=lambda p: p["name"])
    wanted = (form or {}).get("project_id") or request.query_params.get("project", "")
    ids = [p["id"] for p in projects]
    return projects, wanted if wanted in ids else (ids[0] if ids else "")


async def _roles(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    identity = apis_of(request).identity
    projects, project_id = await _project_choice(request, form)
    query = f"?scope.project.id={project_id}&include_names=1" if project_id else "?include_names=1"
    assignments, roles, users, groups = await gather(
        identity.get(f"/v3/role_assignments{query}"),
        identity.get("/v3/roles"),
        identity.get(_in_scope(request, "/v3/users")),
        identity.get(_in_scope(request, "/v3/groups")),
    )
    return _shown(
        request,
        "admin_roles.html",
        error,
        projects=projects,
        project_id=project_id,
        assignments=[a for a in assignments["role_assignments"] if "project" in a["scope"]],
        roles=sorted(roles["roles"], key=lambda r: r["name"]),
        users=sorted(users["users"], key=lambda u: u["name"]),
        groups=sorted(groups["groups"], key=lambda g: g["name"]),
        form=form or {},
    )


@page(admin=True)
async def roles_page(request: Request) -> Response:
    return await _roles(request)


def _grant_path(form: dict[str, Any]) -> str:
    """/v3/projects/{project}/users|groups/{actor}/roles/{role}; the actor is "user:ID"
    or "group:ID"."""
    kind, _, actor = str(form.get("actor", "")).partition(":")
    collection = "groups" if kind == "group" else "users"
    return url_path(
        f"/v3/projects/{{}}/{collection}/{{}}/roles/{{}}",
        form.get("project_id", ""),
        actor,
        form.get("role_id", ""),
    )


@page(admin=True)
async def grant_role(request: Request) -> Response:
    form = await form_of(request)
    back = f"/admin/roles?project={form.get('project_id', '')}"
    return await _submit(request, apis_of(request).identity.put(_grant_path(form)), back, _roles)


@page(admin=True)
async def revoke_role(request: Request) -> Response:
    form = await form_of(request)
    back = f"/admin/roles?project={form.get('project_id', '')}"
    call = apis_of(request).identity.delete(_grant_path(form))
    return await _submit(request, call, back, _roles)


# -- quotas per project ------------------------------------------------------------------


async def _quota_rows(request: Request, project_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each service's quotas of the project: name, limit and what is in use."""
    api = apis_of(request)
    compute, volume, network = await gather(
        api.compute.get(
            url_path("/v2.1/os-quota-sets/{}/detail", project_id), headers=ADMIN_COMPUTE
        ),
        api.volume.get(url_path("/v3/os-quota-sets/{}?usage=true", project_id)),
        api.network.get(url_path("/v2.0/quotas/{}/details", project_id)),
    )

    def rows(body: dict[str, Any], used: str) -> list[dict[str, Any]]:
        return [
            {"name": name, "limit": q["limit"], "used": q.get(used, 0)}
            for name, q in sorted(body.items())
            if isinstance(q, dict)
        ]

    return {
        "compute": rows(compute["quota_set"], "in_use"),
        "volume": rows(volume["quota_set"], "in_use"),
        "network": rows(network["quota"], "used"),
    }


async def _quotas(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    projects, project_id = await _project_choice(request, form)
    quotas = await _quota_rows(request, project_id) if project_id else {}
    return _shown(
        request,
        "admin_quotas.html",
        error,
        projects=projects,
        project_id=project_id,
        quotas=quotas,
        form=form or {},
    )


@page(admin=True)
async def quotas_page(request: Request) -> Response:
    return await _quotas(request)


@page(admin=True)
async def update_quotas(request: Request) -> Response:
    """Sends the service only the limits that changed, as typed (the API judges them)."""
    form, api = await form_of(request), apis_of(request)
    project_id, service = request.path_params["project_id"], form.get("service", "")
    form = {**form, "project_id": project_id}
    request.state.form = form
    current = await _quota_rows(request, project_id)
    if service not in current:
        return error_page(request, ApiFailure("dashboard", 404, "No such quota service."))
    changed = {
        row["name"]: _number(form[row["name"]])
        for row in current[service]
        if row["name"] in form and str(form[row["name"]]).strip() != str(row["limit"])
    }
    back = f"/admin/quotas?project={project_id}"
    if not changed:
        return redirect(request, back)
    calls = {
        "compute": lambda: api.compute.put(
            url_path("/v2.1/os-quota-sets/{}", project_id),
            {"quota_set": changed},
            headers=ADMIN_COMPUTE,
        ),
        "volume": lambda: api.volume.put(
            url_path("/v3/os-quota-sets/{}", project_id), {"quota_set": changed}
        ),
        "network": lambda: api.network.put(
            url_path("/v2.0/quotas/{}", project_id), {"quota": changed}
        ),
    }
    return await _submit(request, calls[service](), back, _quotas)


# -- hypervisors and compute services ------------------------------------------------------


def _usage(label: str, used: Any, total: Any, unit: str = "") -> dict[str, Any]:
    used, total = int(used or 0), int(total or 0)
    share = 0.0 if total <= 0 else min(1.0, used / total)
    return {"label": label, "used": used, "limit": total, "share": share, "unit": unit}


@page(admin=True)
async def hypervisors_page(request: Request) -> Response:
    body = await apis_of(request).compute.get("/v2.1/os-hypervisors/detail", headers=ADMIN_COMPUTE)
    hypervisors = sorted(body["hypervisors"], key=lambda h: h["hypervisor_hostname"])
    for h in hypervisors:
        h["charts"] = [
            _usage("vCPUs", h.get("vcpus_used"), h.get("vcpus")),
            _usage("RAM", h.get("memory_mb_used"), h.get("memory_mb"), " MiB"),
            _usage("Disk", h.get("local_gb_used"), h.get("local_gb"), " GiB"),
        ]
    return _shown(request, "admin_hypervisors.html", None, hypervisors=hypervisors)


async def _services(
    request: Request, error: ApiFailure | None = None, form: Any = None
) -> Response:
    body = await apis_of(request).compute.get("/v2.1/os-services", headers=ADMIN_COMPUTE)
    services = sorted(body["services"], key=lambda s: (s["binary"], s["host"]))
    return _shown(request, "admin_services.html", error, services=services, form=form or {})


@page(admin=True)
async def services_page(request: Request) -> Response:
    return await _services(request)


@page(admin=True)
async def update_service(request: Request) -> Response:
    """Enable, or disable with the reason given (PUT /os-services/{id}, 2.53)."""
    form = await form_of(request)
    change: dict[str, Any] = {"status": form.get("status", "")}
    if form.get("status") == "disabled" and form.get("disabled_reason"):
        change["disabled_reason"] = form["disabled_reason"]
    path = url_path("/v2.1/os-services/{}", request.path_params["service_id"])
    call = apis_of(request).compute.put(path, change, headers=ADMIN_COMPUTE)
    return await _submit(request, call, "/admin/services", _services)


# -- aggregates and availability zones -------------------------------------------------------


async def _aggregates(
    request: Request, error: ApiFailure | None = None, form: Any = None
) -> Response:
    compute = apis_of(request).compute
    aggregates, zones, services = await gather(
        compute.get("/v2.1/os-aggregates", headers=ADMIN_COMPUTE),
        compute.get("/v2.1/os-availability-zone/detail", headers=ADMIN_COMPUTE),
        compute.get("/v2.1/os-services?binary=nova-compute", headers=ADMIN_COMPUTE),
    )
    return _shown(
        request,
        "admin_aggregates.html",
        error,
        aggregates=sorted(aggregates["aggregates"], key=lambda a: a["name"]),
        zones=zones["availabilityZoneInfo"],
        hosts=sorted({s["host"] for s in services["services"]}),
        form=form or {},
    )


@page(admin=True)
async def aggregates_page(request: Request) -> Response:
    return await _aggregates(request)


@page(admin=True)
async def create_aggregate(request: Request) -> Response:
    form = await form_of(request)
    aggregate = {"name": form.get("name", ""), "availability_zone": form.get("zone") or None}
    call = apis_of(request).compute.post(
        "/v2.1/os-aggregates", {"aggregate": aggregate}, headers=ADMIN_COMPUTE
    )
    return await _submit(request, call, "/admin/aggregates", _aggregates)


@page(admin=True)
async def aggregate_host(request: Request) -> Response:
    """Add a host to the aggregate, or remove it (`action` add_host / remove_host)."""
    form = await form_of(request)
    action = "remove_host" if form.get("action") == "remove_host" else "add_host"
    path = url_path("/v2.1/os-aggregates/{}/action", request.path_params["aggregate_id"])
    body = {action: {"host": form.get("host", "")}}
    call = apis_of(request).compute.post(path, body, headers=ADMIN_COMPUTE)
    return await _submit(request, call, "/admin/aggregates", _aggregates)


@page(admin=True)
async def delete_aggregate(request: Request) -> Response:
    path = url_path("/v2.1/os-aggregates/{}", request.path_params["aggregate_id"])
    call = apis_of(request).compute.call("DELETE", path, headers=ADMIN_COMPUTE)
    return await _submit(request, call, "/admin/aggregates", _aggregates)


# -- flavors ----------------------------------------------------------------------------------


async def _flavors(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    body = await apis_of(request).compute.get(
        "/v2.1/flavors/detail?is_public=None", headers=ADMIN_COMPUTE
    )
    flavors = sorted(body["flavors"], key=lambda f: (f["vcpus"], f["ram"], f["name"]))
    return _shown(request, "admin_flavors.html", error, flavors=flavors, form=form or {})


@page(admin=True)
async def flavors_page(request: Request) -> Response:
    return await _flavors(request)


@page(admin=True)
async def create_flavor(request: Request) -> Response:
    form = await form_of(request)
    flavor = {
        "name": form.get("name", ""),
        "vcpus": _number(form.get("vcpus", "")),
        "ram": _number(form.get("ram", "")),
        "disk": _number(form.get("disk", "")),
        "os-flavor-access:is_public": form.get("is_public") == "on",
    }
    if form.get("id"):
        flavor["id"] = form["id"]
    call = apis_of(request).compute.post("/v2.1/flavors", {"flavor": flavor}, headers=ADMIN_COMPUTE)
    return await _submit(request, call, "/admin/flavors", _flavors)


@page(admin=True)
async def delete_flavor(request: Request) -> Response:
    path = url_path("/v2.1/flavors/{}", request.path_params["flavor_id"])
    call = apis_of(request).compute.call("DELETE", path, headers=ADMIN_COMPUTE)
    return await _submit(request, call, "/admin/flavors", _flavors)


routes = [
    Route("/admin/groups", groups_page, methods=["GET"]),
    Route("/admin/groups", create_group, methods=["POST"]),
    Route("/admin/groups/{group_id}", group_page, methods=["GET"]),
    Route("/admin/groups/{group_id}/delete", delete_group, methods=["POST"]),
    Route("/admin/groups/{group_id}/users", add_group_user, methods=["POST"]),
    Route("/admin/groups/{group_id}/users/{user_id}/remove", remove_group_user, methods=["POST"]),
    Route("/admin/roles", roles_page, methods=["GET"]),
    Route("/admin/roles/grant", grant_role, methods=["POST"]),
    Route("/admin/roles/revoke", revoke_role, methods=["POST"]),
    Route("/admin/quotas", quotas_page, methods=["GET"]),
    Route("/admin/quotas/{project_id}", update_quotas, methods=["POST"]),
    Route("/admin/hypervisors", hypervisors_page, methods=["GET"]),
    Route("/admin/services", services_page, methods=["GET"]),
    Route("/admin/services/{service_id}", update_service, methods=["POST"]),
    Route("/admin/aggregates", aggregates_page, methods=["GET"]),
    Route("/admin/aggregates", create_aggregate, methods=["POST"]),
    Route("/admin/aggregates/{aggregate_id}/hosts", aggregate_host, methods=["POST"]),
    Route("/admin/aggregates/{aggregate_id}/delete", delete_aggregate, methods=["POST"]),
    Route("/admin/flavors", flavors_page, methods=["GET"]),
    Route("/admin/flavors", create_flavor, methods=["POST"]),
    Route("/admin/flavors/{flavor_id}/delete", delete_flavor, methods=["POST"]),
    Route("/admin/{kind}", admin_list, methods=["GET"]),
]
