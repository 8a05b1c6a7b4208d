"""Role grants (api-ref: Project/Domain/System role assignments, OS-INHERIT) and
GET /v3/role_assignments.

A grant is one row: (type, actor, target, role, inherited). Writes go through
Identity.write(), which drops the token caches, so a token re-rendered after a
grant or a revoke carries the new roles at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import BadRequest, Forbidden, NotFound
from cumulo.identity import assignments
from cumulo.identity.api.common import (
    authorize,
    base_url,
    context,
    identity_of,
    json,
    list_body,
    no_content,
    query_bool,
)
from cumulo.identity.api.roles import render_role
from cumulo.identity.models import (
    GLOBAL,
    GROUP_DOMAIN,
    GROUP_PROJECT,
    GROUP_SYSTEM,
    SYSTEM_TARGET,
    USER_DOMAIN,
    USER_PROJECT,
    USER_SYSTEM,
    Assignment,
    Domain,
    Group,
    Project,
    Role,
    User,
)

_TYPES = {
    ("project", "user"): USER_PROJECT,
    ("project", "group"): GROUP_PROJECT,
    ("domain", "user"): USER_DOMAIN,
    ("domain", "group"): GROUP_DOMAIN,
    ("system", "user"): USER_SYSTEM,
    ("system", "group"): GROUP_SYSTEM,
}


@dataclass(frozen=True, slots=True)
class GrantKind:
    """Which grant API a route serves: target kind, actor kind, inherited to projects."""

    target: str
    actor: str
    inherited: bool = False

    @property
    def type(self) -> str:
        return _TYPES[(self.target, self.actor)]

    @property
    def rules(self) -> dict[str, str]:
        if self.target == "system":
            return {
                "check": "identity:list_system_grants",
                "list": "identity:list_system_grants",
                "create": "identity:create_system_grant",
                "revoke": "identity:revoke_system_grant",
            }
        return {
            "check": "identity:check_grant",
            "list": "identity:list_grants",
            "create": "identity:create_grant",
            "revoke": "identity:revoke_grant",
        }


@dataclass(slots=True)
class GrantParties:
    target_id: str
    actor_id: str
    project: Project | None = None
    domain: Domain | None = None
    actor: User | Group | None = None
    role: Role | None = None


async def _parties(request: Request, kind: GrantKind, action: str) -> GrantParties:
    """Load the grant's parties, authorize, then answer 404 for whichever is missing.

    Policy comes first so a caller without rights learns nothing (403, not 404).
    """
    params = request.path_params
    parties = GrantParties(
        target_id=params.get("target_id", SYSTEM_TARGET), actor_id=params["actor_id"]
    )
    role_id = params.get("role_id")
    with_role = action != "list"
    async with identity_of(request).read() as session:
        if kind.target == "project":
            parties.project = await session.get(Project, parties.target_id)
        elif kind.target == "domain":
            parties.domain = await session.get(Domain, parties.target_id)
        parties.actor = await session.get(User if kind.actor == "user" else Group, parties.actor_id)
        if with_role:
            parties.role = await session.get(Role, role_id)
    target: dict[str, Any] = {}
    if parties.project is not None:
        target["project"] = {"id": parties.project.id, "domain_id": parties.project.domain_id}
    if parties.domain is not None:
        target["domain"] = {"id": parties.domain.id}
    if parties.actor is not None:
        target[kind.actor] = {"id": parties.actor.id, "domain_id": parties.actor.domain_id}
    if parties.role is not None:
        target["role"] = {"id": parties.role.id, "domain_id": parties.role.domain_id or None}
    await authorize(request, kind.rules[action], target)
    if with_role and parties.role is None:
        raise NotFound(f"Could not find role: {role_id}.")
    if parties.actor is None:
        raise NotFound(f"Could not find {kind.actor}: {parties.actor_id}.")
    if kind.target != "system" and parties.project is None and parties.domain is None:
        raise NotFound(f"Could not find {kind.target}: {parties.target_id}.")
    return parties


def _key(kind: GrantKind, parties: GrantParties, role_id: str) -> dict[str, Any]:
    return {
        "type": kind.type,
        "actor_id": parties.actor_id,
        "target_id": parties.target_id,
        "role_id": role_id,
        "inherited": kind.inherited,
    }


def _not_found(parties: GrantParties, role_id: str) -> NotFound:
    return NotFound(
        f"Could not find role assignment with role: {role_id}, user or group: "
        f"{parties.actor_id}, project, domain, or system: {parties.target_id}."
    )


def _check_role_domain(kind: GrantKind, parties: GrantParties, role: Role) -> None:
    """A domain-specific role is granted only within its own domain."""
    if role.domain_id == GLOBAL:
        return
    if kind.target == "system":
        raise BadRequest(
            f"Role {role.id} is a domain-specific role. "
            "Unable to grant a domain-specific role on the system."
        )
    if parties.project is not None and parties.project.domain_id != role.domain_id:
        raise Forbidden(
            f"Project {parties.project.id} must be in the same domain as the role "
            f"{role.id} being assigned."
        )
    if parties.domain is not None and parties.domain.id != role.domain_id:
        raise Forbidden(
            f"Domain {parties.domain.id} must be the domain of the role {role.id} being assigned."
        )


def grant_handlers(kind: GrantKind):
    async def create_grant(request: Request) -> Response:
        parties = await _parties(request, kind, "create")
        assert parties.role is not None
        _check_role_domain(kind, parties, parties.role)
        key = _key(kind, parties, parties.role.id)
        async with identity_of(request).write() as session:
            if await session.get(Assignment, key) is None:
                session.add(Assignment(**key))
        return no_content()

    async def check_grant(request: Request) -> Response:
        parties = await _parties(request, kind, "check")
        assert parties.role is not None
        async with identity_of(request).read() as session:
            found = await session.get(Assignment, _key(kind, parties, parties.role.id))
        if found is None:
            raise _not_found(parties, parties.role.id)
        return no_content()

    async def revoke_grant(request: Request) -> Response:
        parties = await _parties(request, kind, "revoke")
        assert parties.role is not None
        key = _key(kind, parties, parties.role.id)
        async with identity_of(request).write() as session:
            result = await session.execute(
                delete(Assignment).where(*(getattr(Assignment, k) == v for k, v in key.items()))
            )
            if not result.rowcount:
                raise _not_found(parties, parties.role.id)
        return no_content()

    async def list_grants(request: Request) -> Response:
        parties = await _parties(request, kind, "list")
        async with identity_of(request).read() as session:
            roles = (
                await session.scalars(
                    select(Role)
                    .join(Assignment, Assignment.role_id == Role.id)
                    .where(
                        Assignment.type == kind.type,
                        Assignment.actor_id == parties.actor_id,
                        Assignment.target_id == parties.target_id,
                        Assignment.inherited == kind.inherited,
                    )
                    .order_by(Role.name)
                )
            ).all()
        return json(list_body(request, "roles", [render_role(request, r) for r in roles]))

    return create_grant, check_grant, revoke_grant, list_grants


def _grant_routes(collection: str, kind: GrantKind) -> list[Route]:
    """Routes of one grant API; `collection` is the path up to `/roles`."""
    create, check, revoke, listing = grant_handlers(kind)
    suffix = "/inherited_to_projects" if kind.inherited else ""
    prefix = "/v3/OS-INHERIT" if kind.inherited else "/v3"
    one = f"{prefix}{collection}/roles/{{role_id}}{suffix}"
    routes = [
        Route(one, create, methods=["PUT"]),
        Route(one, check, methods=["GET", "HEAD"]),
        Route(one, revoke, methods=["DELETE"]),
    ]
    # Keystone lists inherited grants only on domains.
    if not kind.inherited or kind.target == "domain":
        routes.append(Route(f"{prefix}{collection}/roles{suffix}", listing, methods=["GET"]))
    return routes


def _all_grant_routes() -> list[Route]:
    routes: list[Route] = []
    for actor in ("user", "group"):
        for target in ("project", "domain"):
            collection = f"/{target}s/{{target_id}}/{actor}s/{{actor_id}}"
            routes += _grant_routes(collection, GrantKind(target, actor))
            routes += _grant_routes(collection, GrantKind(target, actor, inherited=True))
        routes += _grant_routes(f"/system/{actor}s/{{actor_id}}", GrantKind("system", actor))
    return routes


# -- GET /v3/role_assignments ----------------------------------------------------------


def _assignment_query(request: Request) -> tuple[assignments.AssignmentQuery, bool]:
    """The filters, refused where Keystone refuses them; and include_names."""
    q = request.query_params
    effective = bool(query_bool(request, "effective"))
    include_subtree = bool(query_bool(request, "include_subtree"))
    if q.get("scope.domain.id") and q.get("scope.project.id"):
        raise BadRequest("Specify a domain or project, not both")
    if q.get("scope.domain.id") and q.get("scope.system"):
        raise BadRequest("Specify system or domain, not both")
    if q.get("scope.project.id") and q.get("scope.system"):
        raise BadRequest("Specify system or project, not both")
    if q.get("user.id") and q.get("group.id"):
        raise BadRequest("Specify a user or group, not both")
    inherited = None
    if "scope.OS-INHERIT:inherited_to" in q:
        inherited = q["scope.OS-INHERIT:inherited_to"] == "projects"
    if effective and q.get("group.id"):
        raise BadRequest(
            "Combining effective and group filter will always result in an empty list."
        )
    if effective and inherited and q.get("scope.domain.id"):
        raise BadRequest(
            "Combining effective, domain and inherited filters will always result in an empty list."
        )
    if include_subtree and not q.get("scope.project.id"):
        raise BadRequest("scope.project.id must be specified if include_subtree is also specified")
    project_id = q.get("scope.project.id")
    query = assignments.AssignmentQuery(
        role_id=q.get("role.id") or None,
        user_id=q.get("user.id") or None,
        group_id=q.get("group.id") or None,
        project_ids=frozenset([project_id]) if project_id else None,
        domain_id=q.get("scope.domain.id") or None,
        system=bool(q.get("scope.system")),
        inherited=inherited,
        effective=effective,
    )
    return query, include_subtree


async def list_role_assignments(request: Request) -> Response:
    ctx = await context(request)
    # A domain-scoped caller may list, and then sees its domain only (as Keystone).
    await authorize(request, "identity:list_role_assignments", {"domain_id": ctx.domain_id})
    query, include_subtree = _assignment_query(request)
    include_names = bool(query_bool(request, "include_names"))
    async with identity_of(request).read() as session:
        if include_subtree and query.project_ids:
            (project_id,) = query.project_ids
            if await session.get(Project, project_id) is None:
                raise NotFound(f"Could not find project: {project_id}.")
            subtree = await assignments.subtree_ids(session, project_id)
            query = replace(query, project_ids=frozenset(subtree))
        refs = await assignments.list_role_assignments(session, query)
        if ctx.domain_id and not ctx.system_scope:
            refs = await _within_domain(session, refs, ctx.domain_id)
        names = await assignments.names_of(session, refs) if include_names else None
    base = f"{base_url(request)}/v3"
    return json(
        {
            "role_assignments": [render_assignment(base, ref, names) for ref in refs],
            "links": {"self": str(request.url), "previous": None, "next": None},
        }
    )


async def _within_domain(
    session: AsyncSession, refs: list[assignments.RoleAssignmentRef], domain_id: str
) -> list[assignments.RoleAssignmentRef]:
    """A domain-scoped caller sees the assignments on its domain and its projects only."""
    in_domain = set(await session.scalars(select(Project.id).where(Project.domain_id == domain_id)))
    return [r for r in refs if r.domain_id == domain_id or r.project_id in in_domain]


def _named(
    entity_id: str, table: dict[str, tuple[str, str]] | None, domains: dict[str, str]
) -> dict[str, Any]:
    if table is None or entity_id not in table:
        return {"id": entity_id}
    name, domain_id = table[entity_id]
    return {
        "id": entity_id,
        "name": name,
        "domain": {"id": domain_id, "name": domains.get(domain_id)},
    }


def render_assignment(
    base: str, ref: assignments.RoleAssignmentRef, names: assignments.Names | None
) -> dict[str, Any]:
    """One entry, as Keystone formats it: the link names the grant that gave rise to it."""
    domains = names.domains if names else {}
    entry: dict[str, Any] = {"links": {}}
    if ref.project_id:
        entry["scope"] = {
            "project": _named(ref.project_id, names.projects if names else None, domains)
        }
        if ref.from_domain_id:
            link = f"/domains/{ref.from_domain_id}"
        elif ref.from_project_id:
            link = f"/projects/{ref.from_project_id}"
        else:
            link = f"/projects/{ref.project_id}"
    elif ref.domain_id:
        domain: dict[str, Any] = {"id": ref.domain_id}
        if names and ref.domain_id in domains:
            domain["name"] = domains[ref.domain_id]
        entry["scope"] = {"domain": domain}
        link = f"/domains/{ref.domain_id}"
    else:
        entry["scope"] = {"system": {"all": True}}
        link = "/system"
    if ref.user_id:
        entry["user"] = _named(ref.user_id, names.users if names else None, domains)
        if ref.from_group_id:
            entry["links"]["membership"] = f"{base}/groups/{ref.from_group_id}/users/{ref.user_id}"
            link += f"/groups/{ref.from_group_id}"
        else:
            link += f"/users/{ref.user_id}"
    else:
        assert ref.group_id is not None
        entry["group"] = _named(ref.group_id, names.groups if names else None, domains)
        link += f"/groups/{ref.group_id}"
    entry["role"] = {"id": ref.role_id}
    if names and ref.role_id in names.roles:
        role_name, role_domain = names.roles[ref.role_id]
        entry["role"]["name"] = role_name
        if role_domain:
            entry["role"]["domain"] = {"id": role_domain, "name": domains.get(role_domain)}
    link += f"/roles/{ref.granted_role_id or ref.role_id}"
    if ref.inherited:
        entry["scope"]["OS-INHERIT:inherited_to"] = "projects"
        link = f"/OS-INHERIT{link}/inherited_to_projects"
    entry["links"]["assignment"] = f"{base}{link}"
    if ref.prior_role_id:
        entry["links"]["prior_role"] = f"{base}/roles/{ref.prior_role_id}/implies/{ref.role_id}"
    return entry


routes = [
    *_all_grant_routes(),
    Route("/v3/role_assignments", list_role_assignments, methods=["GET"]),
]
