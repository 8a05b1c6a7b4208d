"""/v3/projects: CRUD, hierarchy (parent_id), enabled flag, tags."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictStr
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, parse_body, validate
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.identity.api.common import (
    MAX_TAGS,
    Body,
    Name,
    authorize,
    check_tags,
    context,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    query_bool,
    self_link,
)
from cumulo.identity.api.domains import (
    DomainUpdate,
    change_domain,
    filtered_domains,
    insert_domain,
    remove_domain,
)
from cumulo.identity.models import Assignment, Domain, Project

_FIELDS = {
    "id",
    "name",
    "domain_id",
    "parent_id",
    "description",
    "enabled",
    "is_domain",
    "tags",
    "options",
    "links",
}


class ProjectCreate(Body):
    name: StrictStr = Name(64)
    domain_id: StrictStr | None = None
    parent_id: StrictStr | None = None
    description: StrictStr | None = None
    enabled: StrictBool = True
    is_domain: StrictBool = False
    tags: list[StrictStr] = Field(default_factory=list, max_length=MAX_TAGS)
    options: dict[str, Any] = Field(default_factory=dict)


class ProjectUpdate(Body):
    name: StrictStr | None = Name(64, required=False)
    description: StrictStr | None = None
    enabled: StrictBool | None = None
    tags: list[StrictStr] | None = Field(None, max_length=MAX_TAGS)
    options: dict[str, Any] | None = None
    domain_id: StrictStr | None = None
    is_domain: StrictBool | None = None
    parent_id: StrictStr | None = None


def render_project(request: Request, p: Project) -> dict[str, Any]:
    return {
        **(p.extra or {}),
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "parent_id": p.parent_id or p.domain_id,
        "description": p.description or "",
        "enabled": p.enabled,
        "is_domain": False,
        "tags": list(p.tags or []),
        "options": dict(p.options or {}),
        "links": self_link(request, f"projects/{p.id}"),
    }


def _extras(body: Body) -> dict[str, Any]:
    return {k: v for k, v in (body.model_extra or {}).items() if k not in _FIELDS}


async def _load(request: Request, project_id: str) -> Project:
    async with identity_of(request).read() as session:
        project = await session.get(Project, project_id)
    if project is None:
        raise NotFound(f"Could not find project: {project_id}.")
    return project


def _target(p: Project) -> dict[str, Any]:
    return {"project": {"id": p.id, "domain_id": p.domain_id}}


# -- projects acting as domains (is_domain=true): Keystone's domains seen as projects ----------


def render_domain_project(request: Request, d: Domain) -> dict[str, Any]:
    return {
        **(d.extra or {}),
        "id": d.id,
        "name": d.name,
        "domain_id": None,
        "parent_id": None,
        "description": d.description or "",
        "enabled": d.enabled,
        "is_domain": True,
        "tags": list(d.tags or []),
        "options": dict(d.options or {}),
        "links": self_link(request, f"projects/{d.id}"),
    }


async def _domain_project(request: Request, rule: str) -> Domain | None:
    """The domain the path's project id names, after the domain's policy; else None."""
    project_id = request.path_params["project_id"]
    async with identity_of(request).read() as session:
        domain = await session.get(Domain, project_id)
    if domain is not None:
        await authorize(request, rule, {"domain": {"id": domain.id}})
    return domain


async def _create_domain_project(request: Request, body: ProjectCreate) -> Response:
    # Making a domain is a cloud admin's act, whichever API is used for it.
    await authorize(request, "identity:create_domain")
    if body.parent_id or body.domain_id:
        raise BadRequest("A project acting as a domain has neither a parent nor a domain.")
    domain = Domain(
        id=new_id(),
        name=body.name,
        description=body.description,
        enabled=body.enabled,
        tags=check_tags(body.tags),
        options=body.options,
        extra=_extras(body),
    )
    await insert_domain(request, domain)
    return json({"project": render_domain_project(request, domain)}, status=201)


async def _list_domain_projects(request: Request) -> Response:
    await authorize(request, "identity:list_domains")
    rows, truncated = await filtered_domains(request)
    items = [render_domain_project(request, d) for d in rows]
    return json(list_body(request, "projects", items, truncated))


async def _update_domain_project(request: Request, domain_id: str, body: ProjectUpdate) -> Response:
    fields = body.model_fields_set
    if body.is_domain is False or body.parent_id or body.domain_id:
        raise BadRequest("Cannot change is_domain, parent_id or domain_id of a project.")
    changes = {name: getattr(body, name) for name in DomainUpdate.model_fields if name in fields}
    update = DomainUpdate.model_validate({**changes, **_extras(body)})
    domain = await change_domain(request, domain_id, update)
    return json({"project": render_domain_project(request, domain)})


async def create_project(request: Request) -> Response:
    data = await json_body(request)
    body = validate(ProjectCreate, data.get("project") if isinstance(data, dict) else None)
    if body.is_domain:
        return await _create_domain_project(request, body)
    identity = identity_of(request)
    async with identity.read() as session:
        parent = await session.get(Project, body.parent_id) if body.parent_id else None
    domain_id = body.domain_id or (parent.domain_id if parent else None)
    if domain_id is None:
        # No domain given: the caller's (Keystone uses the token's domain).
        ctx = await context(request)
        domain_id = ctx.domain_id or ctx.project_domain_id or ctx.user_domain_id
    if body.parent_id and parent is None and body.parent_id != domain_id:
        raise NotFound(f"Could not find project: {body.parent_id}.")
    if parent is not None and parent.domain_id != domain_id:
        raise BadRequest("A project must be in the same domain as its parent.")
    project = Project(
        id=new_id(),
        name=body.name,
        domain_id=domain_id,
        parent_id=parent.id if parent else None,
        description=body.description,
        enabled=body.enabled,
        tags=check_tags(body.tags),
        options=body.options,
        extra=_extras(body),
    )
    await authorize(request, "identity:create_project", _target(project))
    try:
        async with identity.write() as session:
            domain = await session.get(Domain, domain_id)
            if domain is None:
                raise NotFound(f"Could not find domain: {domain_id}.")
            session.add(project)
    except IntegrityError:
        raise Conflict(
            "Conflict occurred attempting to store project - it is not permitted to have "
            f"two projects with the same name in the same domain : {body.name}."
        ) from None
    return json({"project": render_project(request, project)}, status=201)


async def list_projects(request: Request) -> Response:
    q = request.query_params
    await authorize(request, "identity:list_projects", {"domain_id": q.get("domain_id")})
    query = select(Project)
    if q.get("domain_id"):
        query = query.where(Project.domain_id == q["domain_id"])
    if q.get("name"):
        query = query.where(Project.name == q["name"])
    if q.get("parent_id"):
        parent = q["parent_id"]
        query = query.where(
            (Project.parent_id == parent)
            | ((Project.parent_id.is_(None)) & (Project.domain_id == parent))
        )
    enabled = query_bool(request, "enabled")
    if enabled is not None:
        query = query.where(Project.enabled == enabled)
    if query_bool(request, "is_domain"):
        return await _list_domain_projects(request)
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, Project.id)
    rows = [p for p in rows if _tags_match(request, p.tags or [])]
    return json(
        list_body(request, "projects", [render_project(request, p) for p in rows], truncated)
    )


def _tags_match(request: Request, tags: list[str]) -> bool:
    """tags (all), tags-any, not-tags, not-tags-any: comma-separated, as the api-ref says."""
    have = set(tags)

    def wanted(name: str) -> set[str] | None:
        raw = request.query_params.get(name)
        return set(raw.split(",")) if raw else None

    if (all_ := wanted("tags")) is not None and not all_ <= have:
        return False
    if (any_ := wanted("tags-any")) is not None and not any_ & have:
        return False
    if (not_all := wanted("not-tags")) is not None and not_all <= have:
        return False
    if (not_any := wanted("not-tags-any")) is not None and not_any & have:
        return False
    return True


async def show_project(request: Request) -> Response:
    if domain := await _domain_project(request, "identity:get_domain"):
        return json({"project": render_domain_project(request, domain)})
    project = await _load(request, request.path_params["project_id"])
    await authorize(request, "identity:get_project", _target(project))
    body = render_project(request, project)
    if query_bool(request, "parents_as_ids") or query_bool(request, "parents_as_list"):
        body["parents"] = await _parents(request, project)
    if query_bool(request, "subtree_as_ids") or query_bool(request, "subtree_as_list"):
        body["subtree"] = await _subtree(request, project)
    return json({"project": body})


async def _parents(request: Request, project: Project) -> list[dict[str, Any]]:
    out = []
    async with identity_of(request).read() as session:
        parent_id = project.parent_id
        while parent_id:
            parent = await session.get(Project, parent_id)
            if parent is None:
                break
            out.append({"project": render_project(request, parent)})
            parent_id = parent.parent_id
    return out


async def _subtree(request: Request, project: Project) -> list[dict[str, Any]]:
    out = []
    async with identity_of(request).read() as session:
        frontier = [project.id]
        while frontier:
            children = (
                await session.scalars(select(Project).where(Project.parent_id.in_(frontier)))
            ).all()
            out += [{"project": render_project(request, c)} for c in children]
            frontier = [c.id for c in children]
    return out


async def update_project(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    data = await json_body(request)
    body = validate(ProjectUpdate, data.get("project") if isinstance(data, dict) else None)
    if await _domain_project(request, "identity:update_domain"):
        return await _update_domain_project(request, project_id, body)
    project = await _load(request, project_id)
    await authorize(request, "identity:update_project", _target(project))
    fields = body.model_fields_set
    if "domain_id" in fields and body.domain_id != project.domain_id:
        raise BadRequest("Cannot change the domain_id of a project.")
    if "parent_id" in fields and body.parent_id not in (project.parent_id, project.domain_id):
        raise BadRequest("Cannot change the parent_id of a project.")
    if body.is_domain:
        raise BadRequest("Cannot change is_domain of a project.")
    if "name" in fields and body.name is None:
        raise BadRequest("Invalid input for field 'name': None is not of type 'string'.")
    try:
        async with identity_of(request).write() as session:
            row = await session.get(Project, project_id)
            if row is None:
                raise NotFound(f"Could not find project: {project_id}.")
            for name in ("name", "description", "enabled", "options"):
                if name in fields and getattr(body, name) is not None:
                    setattr(row, name, getattr(body, name))
            if "tags" in fields:
                row.tags = check_tags(body.tags or [])
            if extras := _extras(body):
                row.extra = {**(row.extra or {}), **extras}
    except IntegrityError:
        raise Conflict(
            "Conflict occurred attempting to store project - it is not permitted to have "
            f"two projects with the same name in the same domain : {body.name}."
        ) from None
    return json({"project": render_project(request, row)})


async def delete_project(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    if await _domain_project(request, "identity:delete_domain"):
        await remove_domain(request, project_id)
        return no_content()
    project = await _load(request, project_id)
    await authorize(request, "identity:delete_project", _target(project))
    async with identity_of(request).write() as session:
        child = await session.scalar(
            select(Project.id).where(Project.parent_id == project_id).limit(1)
        )
        if child is not None:
            raise Forbidden(
                f"Cannot delete the project {project_id} since it is not a leaf in the hierarchy."
            )
        await session.execute(delete(Assignment).where(Assignment.target_id == project_id))
        await session.execute(delete(Project).where(Project.id == project_id))
    return no_content()


# -- tags (api-ref: Project tags) ------------------------------------------------


async def list_tags(request: Request) -> Response:
    project = await _load(request, request.path_params["project_id"])
    await authorize(request, "identity:get_project", _target(project))
    return json({"tags": list(project.tags or [])})


async def _set_tags(request: Request, change) -> list[str]:
    project_id = request.path_params["project_id"]
    project = await _load(request, project_id)
    await authorize(request, "identity:update_project", _target(project))
    async with identity_of(request).write() as session:
        row = await session.get(Project, project_id)
        if row is None:
            raise NotFound(f"Could not find project: {project_id}.")
        tags = check_tags(change(list(row.tags or [])))
        if len(tags) > MAX_TAGS:
            raise BadRequest(f"A project may have at most {MAX_TAGS} tags.")
        row.tags = tags
    return tags


class TagsBody(Body):
    tags: list[StrictStr] = Field(max_length=MAX_TAGS)


async def replace_tags(request: Request) -> Response:
    body = await parse_body(request, TagsBody)
    tags = await _set_tags(request, lambda _old: body.tags)
    return json({"tags": tags})


async def clear_tags(request: Request) -> Response:
    await _set_tags(request, lambda _old: [])
    return no_content()


async def check_tag(request: Request) -> Response:
    project = await _load(request, request.path_params["project_id"])
    await authorize(request, "identity:get_project", _target(project))
    if request.path_params["tag"] not in (project.tags or []):
        raise NotFound(f"Tag {request.path_params['tag']} not found.")
    return no_content()


async def add_tag(request: Request) -> Response:
    tag = request.path_params["tag"]
    await _set_tags(request, lambda old: [*old, tag])
    return Response(status_code=201, headers={"Location": str(request.url)})


async def remove_tag(request: Request) -> Response:
    tag = request.path_params["tag"]

    def without(old: list[str]) -> list[str]:
        if tag not in old:
            raise NotFound(f"Tag {tag} not found.")
        return [t for t in old if t != tag]

    await _set_tags(request, without)
    return no_content()


routes = [
    Route("/v3/projects", create_project, methods=["POST"]),
    Route("/v3/projects", list_projects, methods=["GET"]),
    Route("/v3/projects/{project_id}", show_project, methods=["GET"]),
    Route("/v3/projects/{project_id}", update_project, methods=["PATCH"]),
    Route("/v3/projects/{project_id}", delete_project, methods=["DELETE"]),
    Route("/v3/projects/{project_id}/tags", list_tags, methods=["GET"]),
    Route("/v3/projects/{project_id}/tags", replace_tags, methods=["PUT"]),
    Route("/v3/projects/{project_id}/tags", clear_tags, methods=["DELETE"]),
    Route("/v3/projects/{project_id}/tags/{tag}", check_tag, methods=["GET", "HEAD"]),
    Route("/v3/projects/{project_id}/tags/{tag}", add_tag, methods=["PUT"]),
    Route("/v3/projects/{project_id}/tags/{tag}", remove_tag, methods=["DELETE"]),
]
