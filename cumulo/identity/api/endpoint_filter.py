"""/v3/OS-EP-FILTER: endpoint groups and which endpoints a project's catalog shows
(api-ref: OS-EP-FILTER API).

A project associated with endpoints (one by one, or through endpoint groups whose
filters select them) gets only those in its tokens' catalog; a project without any
association sees the whole catalog (Keystone's return_all_endpoints_if_no_filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import StrictStr
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import BadRequest, NotFound
from cumulo.identity.api.catalog import render_endpoint
from cumulo.identity.api.common import (
    Body,
    ClosedBody,
    Name,
    apply_update,
    authorize,
    delete_row,
    get_or_404,
    identity_of,
    json,
    list_body,
    list_rows,
    new_id,
    no_content,
    section,
    self_link,
    update_body,
)
from cumulo.identity.api.projects import render_project
from cumulo.identity.endpoint_filter import endpoints_of_group, project_endpoint_ids
from cumulo.identity.models import (
    Endpoint,
    EndpointGroup,
    Project,
    ProjectEndpoint,
    ProjectEndpointGroup,
)

_PREFIX = "/v3/OS-EP-FILTER"
_FIELDS = {"id", "name", "description", "filters", "links"}


class Filters(ClosedBody):
    interface: Literal["public", "internal", "admin"] | None = None
    service_id: StrictStr | None = None
    region_id: StrictStr | None = None


class GroupCreate(Body):
    name: StrictStr = Name(255)
    description: StrictStr | None = None
    filters: Filters


class GroupUpdate(Body):
    name: StrictStr | None = Name(255, required=False)
    description: StrictStr | None = None
    filters: Filters | None = None


def _filters(f: Filters) -> dict[str, str]:
    data = f.model_dump(exclude_none=True)
    if not data:
        raise BadRequest("Invalid input for field 'filters': {} does not have enough properties.")
    return data


def render_group(request: Request, g: EndpointGroup) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "filters": dict(g.filters or {}),
        "links": self_link(request, f"OS-EP-FILTER/endpoint_groups/{g.id}"),
    }


# -- endpoint groups --------------------------------------------------------------------


async def create_group(request: Request) -> Response:
    await authorize(request, "identity:create_endpoint_group")
    body = validate(GroupCreate, section(await json_body(request), "endpoint_group"))
    group = EndpointGroup(
        id=new_id(),
        name=body.name,
        description=body.description,
        filters=_filters(body.filters),
    )
    async with identity_of(request).write() as session:
        session.add(group)
    return json({"endpoint_group": render_group(request, group)}, status=201)


async def list_groups(request: Request) -> Response:
    await authorize(request, "identity:list_endpoint_groups")
    filters = {"name": EndpointGroup.name}
    return await list_rows(request, "endpoint_groups", EndpointGroup, filters, render_group)


async def _group(request: Request) -> EndpointGroup:
    async with identity_of(request).read() as session:
        return await get_or_404(session, EndpointGroup, request.path_params["group_id"])


async def show_group(request: Request) -> Response:
    await authorize(request, "identity:get_endpoint_group")
    group = await _group(request)
    if request.method == "HEAD":
        return Response(status_code=200)
    return json({"endpoint_group": render_group(request, group)})


async def update_group(request: Request) -> Response:
    await authorize(request, "identity:update_endpoint_group")
    group_id = request.path_params["group_id"]
    body = await update_body(request, "endpoint_group", GroupUpdate, group_id)
    async with identity_of(request).write() as session:
        group = await get_or_404(session, EndpointGroup, group_id)
        apply_update(group, body, ("name",), _FIELDS)
        if "description" in body.model_fields_set:
            group.description = body.description
        if body.filters is not None:
            group.filters = _filters(body.filters)
    return json({"endpoint_group": render_group(request, group)})


async def delete_group(request: Request) -> Response:
    await authorize(request, "identity:delete_endpoint_group")
    return await delete_row(request, EndpointGroup, request.path_params["group_id"])


async def list_group_endpoints(request: Request) -> Response:
    await authorize(request, "identity:list_endpoints_associated_with_endpoint_group")
    group = await _group(request)
    async with identity_of(request).read() as session:
        rows = await endpoints_of_group(session, group.filters or {})
    return json(list_body(request, "endpoints", [render_endpoint(request, e) for e in rows]))


async def list_group_projects(request: Request) -> Response:
    await authorize(request, "identity:list_projects_associated_with_endpoint_group")
    group = await _group(request)
    async with identity_of(request).read() as session:
        rows = await session.scalars(
            select(Project)
            .join(ProjectEndpointGroup, ProjectEndpointGroup.project_id == Project.id)
            .where(ProjectEndpointGroup.endpoint_group_id == group.id)
        )
        projects = [render_project(request, p) for p in rows]
    return json(list_body(request, "projects", projects))


# -- project associations ---------------------------------------------------------------


@dataclass(frozen=True)
class _Association:
    """A project's link to an endpoint or an endpoint group, as its path names it."""

    model: type[ProjectEndpoint] | type[ProjectEndpointGroup]
    other: type[Endpoint] | type[EndpointGroup]
    column: str  # the association's column for the other side
    path_param: str
    not_found: str

    def key(self, request: Request) -> dict[str, str]:
        p = request.path_params
        return {"project_id": p["project_id"], self.column: p[self.path_param]}

    def missing(self, key: dict[str, str]) -> NotFound:
        return NotFound(f"{self.not_found}: {key[self.column]} - {key['project_id']}.")

    async def check(self, session: AsyncSession, key: dict[str, str]) -> bool:
        """404 for an unknown project or other side; whether they are associated."""
        await get_or_404(session, Project, key["project_id"])
        await get_or_404(session, self.other, key[self.column])
        return await session.get(self.model, key) is not None


_ENDPOINT = _Association(
    ProjectEndpoint,
    Endpoint,
    "endpoint_id",
    "endpoint_id",
    "Could not find project endpoint association",
)
_GROUP_LINK = _Association(
    ProjectEndpointGroup,
    EndpointGroup,
    "endpoint_group_id",
    "group_id",
    "Could not find endpoint group project association",
)


async def _associate(request: Request, rule: str, link: _Association) -> Response:
    await authorize(request, rule)
    key = link.key(request)
    async with identity_of(request).write() as session:
        if not await link.check(session, key):
            session.add(link.model(**key))
    return no_content()


async def _find(request: Request, rule: str, link: _Association) -> dict[str, str]:
    await authorize(request, rule)
    key = link.key(request)
    async with identity_of(request).read() as session:
        if not await link.check(session, key):
            raise link.missing(key)
    return key


async def _dissociate(request: Request, rule: str, link: _Association) -> Response:
    await authorize(request, rule)
    key = link.key(request)
    async with identity_of(request).write() as session:
        model = link.model
        result = await session.execute(
            delete(model).where(
                model.project_id == key["project_id"],
                getattr(model, link.column) == key[link.column],
            )
        )
        if not result.rowcount:
            raise link.missing(key)
    return no_content()


async def add_group_to_project(request: Request) -> Response:
    return await _associate(request, "identity:add_endpoint_group_to_project", _GROUP_LINK)


async def show_group_in_project(request: Request) -> Response:
    key = await _find(request, "identity:get_endpoint_group_in_project", _GROUP_LINK)
    link = f"OS-EP-FILTER/endpoint_groups/{key['endpoint_group_id']}/projects/{key['project_id']}"
    return json({"project_endpoint_group": {**key, "links": self_link(request, link)}})


async def remove_group_from_project(request: Request) -> Response:
    return await _dissociate(request, "identity:remove_endpoint_group_from_project", _GROUP_LINK)


async def list_project_groups(request: Request) -> Response:
    await authorize(request, "identity:list_endpoint_groups_for_project")
    project_id = request.path_params["project_id"]
    async with identity_of(request).read() as session:
        await get_or_404(session, Project, project_id)
        rows = await session.scalars(
            select(EndpointGroup)
            .join(ProjectEndpointGroup, ProjectEndpointGroup.endpoint_group_id == EndpointGroup.id)
            .where(ProjectEndpointGroup.project_id == project_id)
        )
        groups = [render_group(request, g) for g in rows]
    return json(list_body(request, "endpoint_groups", groups))


async def add_endpoint_to_project(request: Request) -> Response:
    return await _associate(request, "identity:add_endpoint_to_project", _ENDPOINT)


async def check_endpoint_in_project(request: Request) -> Response:
    await _find(request, "identity:check_endpoint_in_project", _ENDPOINT)
    return no_content()


async def remove_endpoint_from_project(request: Request) -> Response:
    return await _dissociate(request, "identity:remove_endpoint_from_project", _ENDPOINT)


async def list_project_endpoints(request: Request) -> Response:
    """The endpoints a project's catalog shows: its own and its groups'."""
    await authorize(request, "identity:list_endpoints_for_project")
    project_id = request.path_params["project_id"]
    async with identity_of(request).read() as session:
        await get_or_404(session, Project, project_id)
        ids = await project_endpoint_ids(session, project_id)
        rows = (await session.scalars(select(Endpoint).where(Endpoint.id.in_(ids or set())))).all()
    return json(list_body(request, "endpoints", [render_endpoint(request, e) for e in rows]))


async def list_endpoint_projects(request: Request) -> Response:
    await authorize(request, "identity:list_projects_for_endpoint")
    endpoint_id = request.path_params["endpoint_id"]
    async with identity_of(request).read() as session:
        await get_or_404(session, Endpoint, endpoint_id)
        rows = await session.scalars(
            select(Project)
            .join(ProjectEndpoint, ProjectEndpoint.project_id == Project.id)
            .where(ProjectEndpoint.endpoint_id == endpoint_id)
        )
        projects = [render_project(request, p) for p in rows]
    return json(list_body(request, "projects", projects))


_GROUP = _PREFIX + "/endpoint_groups/{group_id}"
_PROJECT = _PREFIX + "/projects/{project_id}"
_PROJECT_ENDPOINT = _PROJECT + "/endpoints/{endpoint_id}"

routes = [
    Route(_PREFIX + "/endpoint_groups", create_group, methods=["POST"]),
    Route(_PREFIX + "/endpoint_groups", list_groups, methods=["GET"]),
    Route(_GROUP, show_group, methods=["GET", "HEAD"]),
    Route(_GROUP, update_group, methods=["PATCH"]),
    Route(_GROUP, delete_group, methods=["DELETE"]),
    Route(_GROUP + "/endpoints", list_group_endpoints, methods=["GET"]),
    Route(_GROUP + "/projects", list_group_projects, methods=["GET"]),
    Route(_GROUP + "/projects/{project_id}", add_group_to_project, methods=["PUT"]),
    Route(_GROUP + "/projects/{project_id}", show_group_in_project, methods=["GET", "HEAD"]),
    Route(_GROUP + "/projects/{project_id}", remove_group_from_project, methods=["DELETE"]),
    Route(_PROJECT + "/endpoint_groups", list_project_groups, methods=["GET"]),
    Route(_PROJECT + "/endpoints", list_project_endpoints, methods=["GET"]),
    Route(_PROJECT_ENDPOINT, add_endpoint_to_project, methods=["PUT"]),
    Route(_PROJECT_ENDPOINT, check_endpoint_in_project, methods=["HEAD", "GET"]),
    Route(_PROJECT_ENDPOINT, remove_endpoint_from_project, methods=["DELETE"]),
    Route(_PREFIX + "/endpoints/{endpoint_id}/projects", list_endpoint_projects, methods=["GET"]),
]
