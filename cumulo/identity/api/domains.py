"""/v3/domains: CRUD; a domain must be disabled before it is deleted (with all it holds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, StrictBool, StrictStr
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.identity.api.common import (
    MAX_TAGS,
    Body,
    Name,
    authorize,
    check_tags,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    query_bool,
    self_link,
)
from cumulo.identity.core import DEFAULT_DOMAIN_ID
from cumulo.identity.models import (
    ApplicationCredential,
    Assignment,
    Credential,
    Domain,
    Group,
    Project,
    Role,
    User,
)

_FIELDS = {"id", "name", "description", "enabled", "tags", "options", "links"}


class DomainCreate(Body):
    name: StrictStr = Name(64)
    description: StrictStr | None = None
    enabled: StrictBool = True
    tags: list[StrictStr] = Field(default_factory=list, max_length=MAX_TAGS)
    options: dict[str, Any] = Field(default_factory=dict)
    explicit_domain_id: StrictStr | None = Field(None, min_length=1, max_length=64)


class DomainUpdate(Body):
    name: StrictStr | None = Name(64, required=False)
    description: StrictStr | None = None
    enabled: StrictBool | None = None
    tags: list[StrictStr] | None = Field(None, max_length=MAX_TAGS)
    options: dict[str, Any] | None = None


def render_domain(request: Request, d: Domain) -> dict[str, Any]:
    return {
        **(d.extra or {}),
        "id": d.id,
        "name": d.name,
        "description": d.description or "",
        "enabled": d.enabled,
        "tags": list(d.tags or []),
        "options": dict(d.options or {}),
        "links": self_link(request, f"domains/{d.id}"),
    }


def _conflict(name: str | None) -> Conflict:
    return Conflict(
        "Conflict occurred attempting to store domain - it is not permitted to have two "
        f"domains with the same name: {name}."
    )


async def create_domain(request: Request) -> Response:
    await authorize(request, "identity:create_domain")
    data = await json_body(request)
    body = validate(DomainCreate, data.get("domain") if isinstance(data, dict) else None)
    domain = Domain(
        id=body.explicit_domain_id or new_id(),
        name=body.name,
        description=body.description,
        enabled=body.enabled,
        tags=check_tags(body.tags),
        options=body.options,
        extra={k: v for k, v in (body.model_extra or {}).items() if k not in _FIELDS},
    )
    await insert_domain(request, domain)
    return json({"domain": render_domain(request, domain)}, status=201)


async def insert_domain(request: Request, domain: Domain) -> None:
    """Store a new domain (also what a project created with is_domain=true is)."""
    try:
        async with identity_of(request).write() as session:
            session.add(domain)
    except IntegrityError:
        raise _conflict(domain.name) from None


async def list_domains(request: Request) -> Response:
    await authorize(request, "identity:list_domains")
    rows, truncated = await filtered_domains(request)
    return json(list_body(request, "domains", [render_domain(request, d) for d in rows], truncated))


async def filtered_domains(request: Request) -> tuple[Sequence[Domain], bool]:
    """The domains a list asks for (`name`, `enabled`), paginated."""
    query = select(Domain)
    if name := request.query_params.get("name"):
        query = query.where(Domain.name == name)
    enabled = query_bool(request, "enabled")
    if enabled is not None:
        query = query.where(Domain.enabled == enabled)
    async with identity_of(request).read() as session:
        return await paginate(request, session, query, Domain.id)


async def _load(request: Request, domain_id: str) -> Domain:
    async with identity_of(request).read() as session:
        domain = await session.get(Domain, domain_id)
    if domain is None:
        raise NotFound(f"Could not find domain: {domain_id}.")
    return domain


async def show_domain(request: Request) -> Response:
    domain_id = request.path_params["domain_id"]
    await authorize(request, "identity:get_domain", {"domain": {"id": domain_id}})
    return json({"domain": render_domain(request, await _load(request, domain_id))})


async def update_domain(request: Request) -> Response:
    domain_id = request.path_params["domain_id"]
    await authorize(request, "identity:update_domain", {"domain": {"id": domain_id}})
    data = await json_body(request)
    body = validate(DomainUpdate, data.get("domain") if isinstance(data, dict) else None)
    return json({"domain": render_domain(request, await change_domain(request, domain_id, body))})


async def change_domain(request: Request, domain_id: str, body: DomainUpdate) -> Domain:
    """Apply an update (also what PATCH /v3/projects/{id} of a domain does)."""
    fields = body.model_fields_set
    if "name" in fields and body.name is None:
        raise BadRequest("Invalid input for field 'name': None is not of type 'string'.")
    try:
        async with identity_of(request).write() as session:
            row = await session.get(Domain, domain_id)
            if row is None:
                raise NotFound(f"Could not find domain: {domain_id}.")
            for name in ("name", "description", "enabled", "options"):
                if name in fields and getattr(body, name) is not None:
                    setattr(row, name, getattr(body, name))
            if "tags" in fields:
                row.tags = check_tags(body.tags or [])
            extras = {k: v for k, v in (body.model_extra or {}).items() if k not in _FIELDS}
            if extras:
                row.extra = {**(row.extra or {}), **extras}
    except IntegrityError:
        raise _conflict(body.name) from None
    return row


async def delete_domain(request: Request) -> Response:
    """DELETE /v3/domains/{id}: the domain and its projects, users, groups and roles go."""
    domain_id = request.path_params["domain_id"]
    await authorize(request, "identity:delete_domain", {"domain": {"id": domain_id}})
    await remove_domain(request, domain_id)
    return no_content()


async def remove_domain(request: Request, domain_id: str) -> None:
    """Delete a disabled domain with everything in it (403 while enabled)."""
    if domain_id == DEFAULT_DOMAIN_ID:
        raise Forbidden("The default domain cannot be deleted.")
    async with identity_of(request).write() as session:
        domain = await session.get(Domain, domain_id)
        if domain is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
        if domain.enabled:
            raise Forbidden("Cannot delete a domain that is enabled, please disable it first.")
        project_ids = list(
            await session.scalars(select(Project.id).where(Project.domain_id == domain_id))
        )
        user_ids = list(await session.scalars(select(User.id).where(User.domain_id == domain_id)))
        group_ids = list(
            await session.scalars(select(Group.id).where(Group.domain_id == domain_id))
        )
        targets = [domain_id, *project_ids]
        actors = [*user_ids, *group_ids]
        await session.execute(delete(Assignment).where(Assignment.target_id.in_(targets)))
        if actors:
            await session.execute(delete(Assignment).where(Assignment.actor_id.in_(actors)))
        if user_ids:
            await session.execute(delete(Credential).where(Credential.user_id.in_(user_ids)))
            await session.execute(
                delete(ApplicationCredential).where(ApplicationCredential.user_id.in_(user_ids))
            )
        await session.execute(delete(User).where(User.domain_id == domain_id))
        await session.execute(delete(Group).where(Group.domain_id == domain_id))
        await session.execute(delete(Role).where(Role.domain_id == domain_id))
        # Children before parents: clear the hierarchy links, then the rows.
        await session.execute(
            Project.__table__.update().where(Project.domain_id == domain_id).values(parent_id=None)
        )
        await session.execute(delete(Project).where(Project.domain_id == domain_id))
        await session.execute(delete(Domain).where(Domain.id == domain_id))


routes = [
    Route("/v3/domains", create_domain, methods=["POST"]),
    Route("/v3/domains", list_domains, methods=["GET"]),
    Route("/v3/domains/{domain_id}", show_domain, methods=["GET"]),
    Route("/v3/domains/{domain_id}", update_domain, methods=["PATCH"]),
    Route("/v3/domains/{domain_id}", delete_domain, methods=["DELETE"]),
]
