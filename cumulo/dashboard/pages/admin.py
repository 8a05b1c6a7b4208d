"""The admin pages: domains, projects, users, groups and role assignments (Identity);
quotas per project (Compute, Block Storage, Network); hypervisors with their usage, compute
services, aggregates with their metadata and availability zones, flavors and the projects
a private one is given to (Compute); every project's instances and volumes. Admins only:
everyone else gets the 403 page, on every page and form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, gather, optional
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


class Reworded(ApiFailure):
    """An API's refusal said in the dashboard's words, with the API's status and request
    id (the words are the whole answer: no usual fix is added to them)."""

    def __init__(self, exc: ApiFailure, message: str) -> None:
        super().__init__(exc.service, exc.status, message, exc.request_id, exc.headers, exc.body)

    @property
    def explanation(self) -> str:
        return self.message


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


# -- Identity's collections: what domains, projects, users and groups share -----------------


def _enabled(form: dict[str, Any]) -> bool:
    return form.get("enabled") in ("on", "1", "true")


async def _listed(request: Request, kind: str, error: ApiFailure | None, form: Any) -> Response:
    """An Identity collection's admin page (`kind`: domains, projects, groups) with its
    create form: the rows by name, the domains to create in."""
    if kind == "domains":  # every one, or a domain-scoped session's own
        rows = domains = await _domains(request)
    else:
        found, domains = await gather(
            apis_of(request).identity.get(_in_scope(request, f"/v3/{kind}")), _domains(request)
        )
        rows = found[kind]
    # The domains page lists what it creates in: one context name, the rows by name.
    context = {"domains": domains, kind: sorted(rows, key=lambda r: r["name"])}
    return _shown(request, f"admin_{kind}.html", error, **context, form=form or {})


def _described(form: dict[str, Any]) -> dict[str, Any]:
    """What the project and domain forms give: name, description, enabled."""
    return {
        "name": form.get("name", ""),
        "description": form.get("description", ""),
        "enabled": _enabled(form),
    }


def _identity_path(request: Request, kind: str) -> str:
    """/v3/<kind>s/{id}: the one the page is about (`kind`: domain, project, user, group)."""
    return url_path(f"/v3/{kind}s/{{}}", request.path_params[f"{kind}_id"])


async def _identity_create(
    request: Request, kind: str, body: dict[str, Any], show: Shown
) -> Response:
    """POST /v3/<kind>s, in the domain the form chose (if any); then the list."""
    form = await form_of(request)
    if kind != "domain" and form.get("domain_id"):
        body["domain_id"] = form["domain_id"]
    call = apis_of(request).identity.post(f"/v3/{kind}s", {kind: body})
    return await _submit(request, call, f"/admin/{kind}s", show)


async def _identity_one(
    request: Request, kind: str, error: ApiFailure | None, form: Any
) -> Response:
    """A domain's or project's page with its edit form."""
    found = (await apis_of(request).identity.get(_identity_path(request, kind)))[kind]
    return _shown(request, f"admin_{kind}.html", error, **{kind: found}, form=form)


async def _identity_update(
    request: Request, kind: str, change: dict[str, Any], show: Shown, back: str = ""
) -> Response:
    """PATCH the domain or project with `change`; then to `back` (by default its page)."""
    call = apis_of(request).identity.patch(
        _identity_path(request, kind), {kind: change}, "application/json"
    )
    back = back or url_path(f"/admin/{kind}s/{{}}", request.path_params[f"{kind}_id"])
    return await _submit(request, call, back, show)


async def _identity_delete(request: Request, kind: str, show: Shown) -> Response:
    call = apis_of(request).identity.delete(_identity_path(request, kind))
    return await _submit(request, call, f"/admin/{kind}s", show)


def _identity_page(kind: str, build: Callable[..., Awaitable[Response]]) -> Shown:
    """A page of `kind` made by `build` (`_listed` for a collection, `_identity_one` for
    one domain or project), also shown again after a refused form."""

    async def shown(
        request: Request, error: ApiFailure | None = None, form: Any = None
    ) -> Response:
        return await build(request, kind, error, form)

    shown.__name__ = shown.__qualname__ = f"{kind}_page"
    return shown


def _described_forms(kind: str, listed: Shown, one: Shown) -> tuple[Shown, Shown]:
    """The create and edit forms of domains or projects (the same three fields): refused,
    the list or the page again."""

    @page(admin=True)
    async def create(request: Request) -> Response:
        body = _described(await form_of(request))
        return await _identity_create(request, kind, body, listed)

    @page(admin=True)
    async def update(request: Request) -> Response:
        change = _described(await form_of(request))
        return await _identity_update(request, kind, change, one)

    return create, update


# -- domains -----------------------------------------------------------------------------


_domain_list, _domain = _identity_page("domains", _listed), _identity_page("domain", _identity_one)
domains_page, domain_page = page(_domain_list, admin=True), page(_domain, admin=True)
create_domain, update_domain = _described_forms("domain", _domain_list, _domain)


@page(admin=True)
async def switch_domain(request: Request) -> Response:
    """Enable or disable the domain from the list (Keystone deletes only disabled ones)."""
    change = {"enabled": _enabled(await form_of(request))}
    return await _identity_update(request, "domain", change, _domain_list, "/admin/domains")


@page(admin=True)
async def delete_domain(request: Request) -> Response:
    """Keystone deletes a disabled domain with all it holds, and refuses an enabled one
    (403, its message shown on the list)."""
    return await _identity_delete(request, "domain", _domain_list)


# -- projects ----------------------------------------------------------------------------


_projects, _project = _identity_page("projects", _listed), _identity_page("project", _identity_one)
projects_page, project_page = page(_projects, admin=True), page(_project, admin=True)
create_project, update_project = _described_forms("project", _projects, _project)


@page(admin=True)
async def delete_project(request: Request) -> Response:
    return await _identity_delete(request, "project", _projects)


async def _change_tag(request: Request, form: dict[str, Any]) -> None:
    """Keystone's project tags: add one (PUT, 400 for a tag it refuses: a `/` or `,`,
    over 255 characters, or 80 tags already) or remove one (DELETE, 404 when absent)."""
    path = url_path(
        "/v3/projects/{}/tags/{}", request.path_params["project_id"], str(form.get("tag", ""))
    )
    method = "DELETE" if form.get("action") == "remove" else "PUT"
    await apis_of(request).identity.call(method, path)


@page(admin=True)
async def project_tags(request: Request) -> Response:
    form = await form_of(request)
    back = url_path("/admin/projects/{}", request.path_params["project_id"])
    return await _submit(request, _change_tag(request, form), back, _project)


# -- users -------------------------------------------------------------------------------


async def _users(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    identity = apis_of(request).identity
    users, projects, domains = await gather(
        identity.get(_in_scope(request, "/v3/users")),
        identity.get(_in_scope(request, "/v3/projects")),
        _domains(request),
    )
    return _shown(
        request,
        "admin_users.html",
        error,
        users=sorted(users["users"], key=lambda u: u["name"]),
        projects=sorted(projects["projects"], key=lambda p: p["name"]),
        domains=domains,
        form=form or {},
    )


@page(admin=True)
async def users_page(request: Request) -> Response:
    return await _users(request)


def _user_fields(form: dict[str, Any]) -> dict[str, Any]:
    """Name, email, enabled, default project (none when left empty) and, only when typed,
    a password (a reset on edit)."""
    user: dict[str, Any] = {
        "name": form.get("name", ""),
        "email": form.get("email", ""),
        "enabled": _enabled(form),
        "default_project_id": form.get("default_project_id") or None,
    }
    if form.get("password"):
        user["password"] = form["password"]
    return user


@page(admin=True)
async def create_user(request: Request) -> Response:
    user = _user_fields(await form_of(request))
    if user["default_project_id"] is None:
        del user["default_project_id"]
    return await _identity_create(request, "user", user, _users)


async def _user(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    identity = apis_of(request).identity
    user, projects = await gather(
        identity.get(url_path("/v3/users/{}", request.path_params["user_id"])),
        identity.get(_in_scope(request, "/v3/projects")),
    )
    if form is not None:
        form = {k: v for k, v in form.items() if k != "password"}  # never echoed back
    return _shown(
        request,
        "admin_user.html",
        error,
        user=user["user"],
        projects=sorted(projects["projects"], key=lambda p: p["name"]),
        form=form,
    )


@page(admin=True)
async def user_page(request: Request) -> Response:
    return await _user(request)


@page(admin=True)
async def update_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    call = apis_of(request).identity.patch(
        url_path("/v3/users/{}", user_id),
        {"user": _user_fields(await form_of(request))},
        "application/json",
    )
    return await _submit(request, call, url_path("/admin/users/{}", user_id), _user)


@page(admin=True)
async def delete_user(request: Request) -> Response:
    return await _identity_delete(request, "user", _users)


# -- groups ----------------------------------------------------------------------------


_groups = _identity_page("groups", _listed)
groups_page = page(_groups, admin=True)


@page(admin=True)
async def create_group(request: Request) -> Response:
    form = await form_of(request)
    group = {"name": form.get("name", ""), "description": form.get("description", "")}
    return await _identity_create(request, "group", group, _groups)


@page(admin=True)
async def delete_group(request: Request) -> Response:
    return await _identity_delete(request, "group", _groups)


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


async def _aggregate_action(request: Request, body: dict[str, Any]) -> Response:
    """POST /os-aggregates/{id}/action; refused, the list again with the API's message
    (and what was typed, next to that aggregate's forms)."""
    aggregate_id = request.path_params["aggregate_id"]
    request.state.form = {**await form_of(request), "aggregate_id": aggregate_id}
    path = url_path("/v2.1/os-aggregates/{}/action", aggregate_id)
    call = apis_of(request).compute.post(path, body, headers=ADMIN_COMPUTE)
    return await _submit(request, call, "/admin/aggregates", _aggregates)


@page(admin=True)
async def aggregate_host(request: Request) -> Response:
    """Add a host to the aggregate, or remove it (`action` add_host / remove_host)."""
    form = await form_of(request)
    action = "remove_host" if form.get("action") == "remove_host" else "add_host"
    return await _aggregate_action(request, {action: {"host": form.get("host", "")}})


@page(admin=True)
async def aggregate_metadata(request: Request) -> Response:
    """Set a metadata key to the value typed, or unset it (`action` unset: Nova's null);
    `availability_zone` moves the aggregate's hosts to that zone (or out of it)."""
    form = await form_of(request)
    key = str(form.get("key", "")).strip()
    value = None if form.get("action") == "unset" else form.get("value", "")
    return await _aggregate_action(request, {"set_metadata": {"metadata": {key: value}}})


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


async def _flavor(request: Request, error: ApiFailure | None = None, form: Any = None) -> Response:
    """A flavor's page: a private one with the projects that may use it (by name), and
    the others it can be given to."""
    compute, flavor_id = apis_of(request).compute, request.path_params["flavor_id"]
    flavor, projects = await gather(
        compute.get(url_path("/v2.1/flavors/{}", flavor_id), headers=ADMIN_COMPUTE),
        apis_of(request).identity.get(_in_scope(request, "/v3/projects")),
    )
    flavor, by_id = flavor["flavor"], {p["id"]: p for p in projects["projects"]}
    access: list[dict[str, Any]] = []
    if not flavor["os-flavor-access:is_public"]:  # Nova has no list for a public one (404)
        path = url_path("/v2.1/flavors/{}/os-flavor-access", flavor_id)
        listed = await compute.get(path, headers=ADMIN_COMPUTE)
        access = [
            {"id": a["tenant_id"], "name": by_id.get(a["tenant_id"], {}).get("name", "")}
            for a in listed["flavor_access"]
        ]
    given = {a["id"] for a in access}
    return _shown(
        request,
        "admin_flavor.html",
        error,
        flavor=flavor,
        extra_specs=sorted((flavor.get("extra_specs") or {}).items()),
        access=sorted(access, key=lambda a: (a["name"], a["id"])),
        others=sorted((p for p in by_id.values() if p["id"] not in given), key=lambda p: p["name"]),
        form=form or {},
    )


@page(admin=True)
async def flavor_page(request: Request) -> Response:
    return await _flavor(request)


# Nova's refusals of an access change (its FlavorAccessExists / FlavorAccessNotFound),
# said with the project's name.
ACCESS_REFUSALS = {
    "flavor access already exists": "The project {} already has access to this flavor.",
    "flavor access not found": "The project {} has no access to this flavor: nothing to remove.",
}


def _access_refusal(message: str) -> str | None:
    """The page's words for Nova's refusal of an access change (with a `{}` for the
    project's name), when it is one."""
    lowered = message.lower()
    return next((w for m, w in ACCESS_REFUSALS.items() if lowered.startswith(m)), None)


async def _change_access(request: Request, action: str, project_id: str) -> None:
    path = url_path("/v2.1/flavors/{}/action", request.path_params["flavor_id"])
    try:
        await apis_of(request).compute.post(
            path, {action: {"tenant": project_id}}, headers=ADMIN_COMPUTE
        )
    except ApiFailure as exc:
        words = _access_refusal(exc.message)
        if words is None:
            raise
        project = await optional(
            apis_of(request).identity.get(url_path("/v3/projects/{}", project_id)), None
        )
        name = project["project"]["name"] if project else project_id
        raise Reworded(exc, words.format(name)) from exc


@page(admin=True)
async def flavor_access(request: Request) -> Response:
    """Give a project the private flavor, or take it back (Nova's addTenantAccess /
    removeTenantAccess: `action` add / remove)."""
    form, flavor_id = await form_of(request), request.path_params["flavor_id"]
    action = "removeTenantAccess" if form.get("action") == "remove" else "addTenantAccess"
    call = _change_access(request, action, str(form.get("project_id", "")))
    return await _submit(request, call, url_path("/admin/flavors/{}", flavor_id), _flavor)


async def _change_extra_spec(request: Request, form: dict[str, Any]) -> None:
    """Set one extra spec (Nova validates its key and value: 400 in the page), or unset
    it (404 when it is not there)."""
    compute, flavor_id = apis_of(request).compute, request.path_params["flavor_id"]
    key = str(form.get("key", "")).strip()
    if form.get("action") == "unset":
        path = url_path("/v2.1/flavors/{}/os-extra_specs/{}", flavor_id, key)
        await compute.call("DELETE", path, headers=ADMIN_COMPUTE)
        return
    path = url_path("/v2.1/flavors/{}/os-extra_specs", flavor_id)
    body = {"extra_specs": {key: str(form.get("value", ""))}}
    await compute.post(path, body, headers=ADMIN_COMPUTE)


@page(admin=True)
async def flavor_extra_specs(request: Request) -> Response:
    """A flavor's extra specs (the scheduler's and the hypervisor's hints: `hw:…`,
    `aggregate_instance_extra_specs:…`, `quota:…`): `action` set / unset one `key`."""
    form, flavor_id = await form_of(request), request.path_params["flavor_id"]
    call = _change_extra_spec(request, form)
    return await _submit(request, call, url_path("/admin/flavors/{}", flavor_id), _flavor)


routes = [
    Route("/admin/domains", domains_page, methods=["GET"]),
    Route("/admin/domains", create_domain, methods=["POST"]),
    Route("/admin/domains/{domain_id}", domain_page, methods=["GET"]),
    Route("/admin/domains/{domain_id}", update_domain, methods=["POST"]),
    Route("/admin/domains/{domain_id}/enabled", switch_domain, methods=["POST"]),
    Route("/admin/domains/{domain_id}/delete", delete_domain, methods=["POST"]),
    Route("/admin/projects", projects_page, methods=["GET"]),
    Route("/admin/projects", create_project, methods=["POST"]),
    Route("/admin/projects/{project_id}", project_page, methods=["GET"]),
    Route("/admin/projects/{project_id}", update_project, methods=["POST"]),
    Route("/admin/projects/{project_id}/delete", delete_project, methods=["POST"]),
    Route("/admin/projects/{project_id}/tags", project_tags, methods=["POST"]),
    Route("/admin/users", users_page, methods=["GET"]),
    Route("/admin/users", create_user, methods=["POST"]),
    Route("/admin/users/{user_id}", user_page, methods=["GET"]),
    Route("/admin/users/{user_id}", update_user, methods=["POST"]),
    Route("/admin/users/{user_id}/delete", delete_user, methods=["POST"]),
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
    Route("/admin/aggregates/{aggregate_id}/metadata", aggregate_metadata, methods=["POST"]),
    Route("/admin/aggregates/{aggregate_id}/delete", delete_aggregate, methods=["POST"]),
    Route("/admin/flavors", flavors_page, methods=["GET"]),
    Route("/admin/flavors", create_flavor, methods=["POST"]),
    Route("/admin/flavors/{flavor_id}", flavor_page, methods=["GET"]),
    Route("/admin/flavors/{flavor_id}/access", flavor_access, methods=["POST"]),
    Route("/admin/flavors/{flavor_id}/extra-specs", flavor_extra_specs, methods=["POST"]),
    Route("/admin/flavors/{flavor_id}/delete", delete_flavor, methods=["POST"]),
    Route("/admin/{kind}", admin_list, methods=["GET"]),
]
