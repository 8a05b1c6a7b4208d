"""Which roles a user holds where: direct, through groups, inherited, and implied.

Also the query behind GET /v3/role_assignments: the raw grants, or (effective)
what they amount to once groups, inheritance and implied roles are expanded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

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
    ImpliedRole,
    Project,
    Role,
    User,
    UserGroupMembership,
)

PROJECT_TYPES = (USER_PROJECT, GROUP_PROJECT)
DOMAIN_TYPES = (USER_DOMAIN, GROUP_DOMAIN)
SYSTEM_TYPES = (USER_SYSTEM, GROUP_SYSTEM)
GROUP_TYPES = (GROUP_PROJECT, GROUP_DOMAIN, GROUP_SYSTEM)


async def group_ids_of(session: AsyncSession, user_id: str) -> list[str]:
    rows = await session.scalars(
        select(UserGroupMembership.group_id).where(UserGroupMembership.user_id == user_id)
    )
    return list(rows)


async def project_ancestors(session: AsyncSession, project: Project) -> list[str]:
    """Ids of the project's parents, nearest first."""
    ancestors: list[str] = []
    parent_id = project.parent_id
    while parent_id and parent_id not in ancestors:
        ancestors.append(parent_id)
        parent_id = await session.scalar(select(Project.parent_id).where(Project.id == parent_id))
    return ancestors


async def expand_implied(session: AsyncSession, role_ids: set[str]) -> set[str]:
    """Add every role implied by the given ones (admin implies member implies reader)."""
    result = set(role_ids)
    frontier = set(role_ids)
    while frontier:
        rows = await session.scalars(
            select(ImpliedRole.implied_role_id).where(ImpliedRole.prior_role_id.in_(frontier))
        )
        frontier = set(rows) - result
        result |= frontier
    return result


async def _role_ids(session: AsyncSession, actor_ids: list[str], conditions) -> set[str]:
    """The roles the actors hold under the conditions, with the roles those imply.

    Domain-specific roles are left out, as Keystone does: they only stand for the
    global roles they imply. Same number of queries as a plain expansion.
    """
    rows = await session.execute(
        select(Assignment.role_id, Role.domain_id)
        .join(Role, Role.id == Assignment.role_id)
        .where(Assignment.actor_id.in_(actor_ids), or_(*conditions))
    )
    domain_of: dict[str, str] = dict(rows.all())
    frontier = set(domain_of)
    while frontier:
        rows = await session.execute(
            select(ImpliedRole.implied_role_id, Role.domain_id)
            .join(Role, Role.id == ImpliedRole.implied_role_id)
            .where(ImpliedRole.prior_role_id.in_(frontier))
        )
        found = dict(rows.all())
        frontier = set(found) - set(domain_of)
        domain_of.update(found)
    return {role_id for role_id, domain_id in domain_of.items() if domain_id == GLOBAL}


async def roles_on_project(session: AsyncSession, user_id: str, project: Project) -> set[str]:
    actors = [user_id, *await group_ids_of(session, user_id)]
    ancestors = await project_ancestors(session, project)
    conditions = [
        (Assignment.target_id == project.id)
        & Assignment.type.in_([USER_PROJECT, GROUP_PROJECT])
        & ~Assignment.inherited,
        (Assignment.target_id == project.domain_id)
        & Assignment.type.in_([USER_DOMAIN, GROUP_DOMAIN])
        & Assignment.inherited,
    ]
    if ancestors:
        conditions.append(
            Assignment.target_id.in_(ancestors)
            & Assignment.type.in_([USER_PROJECT, GROUP_PROJECT])
            & Assignment.inherited
        )
    return await _role_ids(session, actors, conditions)


async def roles_on_domain(session: AsyncSession, user_id: str, domain_id: str) -> set[str]:
    actors = [user_id, *await group_ids_of(session, user_id)]
    conditions = [
        (Assignment.target_id == domain_id)
        & Assignment.type.in_([USER_DOMAIN, GROUP_DOMAIN])
        & ~Assignment.inherited
    ]
    return await _role_ids(session, actors, conditions)


async def roles_on_system(session: AsyncSession, user_id: str) -> set[str]:
    actors = [user_id, *await group_ids_of(session, user_id)]
    conditions = [
        (Assignment.target_id == SYSTEM_TARGET) & Assignment.type.in_([USER_SYSTEM, GROUP_SYSTEM])
    ]
    return await _role_ids(session, actors, conditions)


async def role_refs(session: AsyncSession, role_ids: set[str]) -> list[dict[str, str]]:
    if not role_ids:
        return []
    rows = await session.execute(
        select(Role.id, Role.name).where(Role.id.in_(role_ids)).order_by(Role.name)
    )
    return [{"id": rid, "name": name} for rid, name in rows]


async def _descendants(session: AsyncSession, roots: set[str]) -> set[str]:
    found: set[str] = set()
    frontier = set(roots)
    while frontier:
        rows = await session.scalars(select(Project.id).where(Project.parent_id.in_(frontier)))
        frontier = set(rows) - found
        found |= frontier
    return found


async def project_ids_with_roles(session: AsyncSession, user_id: str) -> set[str]:
    """Every project on which the user holds a role, directly, by group, or inherited."""
    actors = [user_id, *await group_ids_of(session, user_id)]
    rows = (
        await session.execute(
            select(Assignment.type, Assignment.target_id, Assignment.inherited).where(
                Assignment.actor_id.in_(actors),
                Assignment.type.in_([USER_PROJECT, GROUP_PROJECT, USER_DOMAIN, GROUP_DOMAIN]),
            )
        )
    ).all()
    direct = {t for kind, t, inh in rows if kind in (USER_PROJECT, GROUP_PROJECT) and not inh}
    inherited_roots = {t for kind, t, inh in rows if kind in (USER_PROJECT, GROUP_PROJECT) and inh}
    inherited_domains = {t for kind, t, inh in rows if kind in (USER_DOMAIN, GROUP_DOMAIN) and inh}
    result = direct | await _descendants(session, inherited_roots)
    if inherited_domains:
        rows2 = await session.scalars(
            select(Project.id).where(Project.domain_id.in_(inherited_domains))
        )
        result |= set(rows2)
    return result


async def domain_ids_with_roles(session: AsyncSession, user_id: str) -> set[str]:
    actors = [user_id, *await group_ids_of(session, user_id)]
    rows = await session.scalars(
        select(Assignment.target_id).where(
            Assignment.actor_id.in_(actors),
            Assignment.type.in_([USER_DOMAIN, GROUP_DOMAIN]),
            ~Assignment.inherited,
        )
    )
    return set(rows)


# -- GET /v3/role_assignments -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleAssignmentRef:
    """One entry of a role assignment list, and (when effective) where it comes from."""

    role_id: str
    user_id: str | None = None
    group_id: str | None = None
    project_id: str | None = None
    domain_id: str | None = None
    system: bool = False
    # Inherited to projects: a raw inherited grant, or an entry expanded from one.
    inherited: bool = False
    from_group_id: str | None = None
    from_domain_id: str | None = None
    from_project_id: str | None = None
    # An implied role: the role that implies it, and the role actually granted.
    prior_role_id: str | None = None
    granted_role_id: str | None = None


@dataclass(frozen=True, slots=True)
class AssignmentQuery:
    """The filters of GET /v3/role_assignments, already checked for sense."""

    role_id: str | None = None
    user_id: str | None = None
    group_id: str | None = None
    # scope.project.id, with its subtree when include_subtree was asked.
    project_ids: frozenset[str] | None = None
    domain_id: str | None = None
    system: bool = False
    inherited: bool | None = None
    effective: bool = False


def _as_ref(row: Assignment) -> RoleAssignmentRef:
    actor = "group_id" if row.type in GROUP_TYPES else "user_id"
    if row.type in PROJECT_TYPES:
        target: dict[str, object] = {"project_id": row.target_id}
    elif row.type in DOMAIN_TYPES:
        target = {"domain_id": row.target_id}
    else:
        target = {"system": True}
    return RoleAssignmentRef(
        role_id=row.role_id, inherited=row.inherited, **{actor: row.actor_id}, **target
    )


async def subtree_ids(session: AsyncSession, project_id: str) -> set[str]:
    """The project and every project below it."""
    return {project_id} | await _descendants(session, {project_id})


async def list_role_assignments(
    session: AsyncSession, q: AssignmentQuery
) -> list[RoleAssignmentRef]:
    if q.effective:
        return await _effective_assignments(session, q)
    query = select(Assignment)
    if q.role_id:
        query = query.where(Assignment.role_id == q.role_id)
    if q.user_id:
        query = query.where(Assignment.actor_id == q.user_id, ~Assignment.type.in_(GROUP_TYPES))
    if q.group_id:
        query = query.where(Assignment.actor_id == q.group_id, Assignment.type.in_(GROUP_TYPES))
    if q.project_ids is not None:
        query = query.where(
            Assignment.type.in_(PROJECT_TYPES), Assignment.target_id.in_(q.project_ids)
        )
    if q.domain_id:
        query = query.where(Assignment.type.in_(DOMAIN_TYPES), Assignment.target_id == q.domain_id)
    if q.system:
        query = query.where(Assignment.type.in_(SYSTEM_TYPES))
    if q.inherited is not None:
        query = query.where(Assignment.inherited == q.inherited)
    query = query.order_by(
        Assignment.type, Assignment.target_id, Assignment.actor_id, Assignment.role_id
    )
    return [_as_ref(row) for row in await session.scalars(query)]


async def _effective_assignments(
    session: AsyncSession, q: AssignmentQuery
) -> list[RoleAssignmentRef]:
    """Keystone's effective mode: each entry is a user holding a role on a target.

    Group grants become one entry per member, grants inherited to projects one entry
    per project below their target, and every role adds the roles it implies.
    Domain-specific roles only count through the global roles they imply.
    """
    tree = _ProjectTree(session)
    query = select(Assignment)
    if q.user_id:
        query = query.where(
            Assignment.actor_id.in_([q.user_id, *await group_ids_of(session, q.user_id)])
        )
    if q.project_ids is not None:
        ancestors = set()
        domains = set()
        for project_id in q.project_ids:
            ancestors |= set(await tree.ancestors(project_id))
            domains.add(await tree.domain_of(project_id))
        query = query.where(
            or_(
                Assignment.type.in_(PROJECT_TYPES)
                & ~Assignment.inherited
                & Assignment.target_id.in_(q.project_ids),
                Assignment.type.in_(PROJECT_TYPES)
                & Assignment.inherited
                & Assignment.target_id.in_(ancestors),
                Assignment.type.in_(DOMAIN_TYPES)
                & Assignment.inherited
                & Assignment.target_id.in_(domains),
            )
        )
    elif q.domain_id:
        query = query.where(
            Assignment.type.in_(DOMAIN_TYPES),
            ~Assignment.inherited,
            Assignment.target_id == q.domain_id,
        )
    elif q.system:
        query = query.where(Assignment.type.in_(SYSTEM_TYPES))
    query = query.order_by(
        Assignment.type, Assignment.target_id, Assignment.actor_id, Assignment.role_id
    )
    rows = (await session.scalars(query)).all()
    members = await _members(session, {r.actor_id for r in rows if r.type in GROUP_TYPES})
    refs: list[RoleAssignmentRef] = []
    for row in rows:
        ref = _as_ref(row)
        if row.type in GROUP_TYPES:
            held = [
                replace(ref, group_id=None, user_id=user_id, from_group_id=row.actor_id)
                for user_id in members.get(row.actor_id, ())
                if not q.user_id or user_id == q.user_id
            ]
        else:
            held = [ref]
        if not row.inherited:
            refs += held
            continue
        if row.type in DOMAIN_TYPES:
            projects = await tree.in_domain(row.target_id)
            origin = {"from_domain_id": row.target_id}
        else:
            projects = await tree.below(row.target_id)
            origin = {"from_project_id": row.target_id}
        for project_id in sorted(projects):
            if q.project_ids is None or project_id in q.project_ids:
                refs += [replace(h, project_id=project_id, domain_id=None, **origin) for h in held]
    refs = await _with_implied(session, refs)
    domain_roles = set(
        await session.scalars(
            select(Role.id).where(Role.id.in_({r.role_id for r in refs}), Role.domain_id != GLOBAL)
        )
    )
    return [
        r
        for r in refs
        if r.role_id not in domain_roles
        and (not q.role_id or r.role_id == q.role_id)
        and (q.inherited is None or r.inherited == q.inherited)
    ]


async def _members(session: AsyncSession, group_ids: set[str]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    if group_ids:
        rows = await session.execute(
            select(UserGroupMembership.group_id, UserGroupMembership.user_id)
            .where(UserGroupMembership.group_id.in_(group_ids))
            .order_by(UserGroupMembership.user_id)
        )
        for group_id, user_id in rows:
            members.setdefault(group_id, []).append(user_id)
    return members


async def _with_implied(
    session: AsyncSession, refs: Iterable[RoleAssignmentRef]
) -> list[RoleAssignmentRef]:
    """Each entry, followed by one entry for every role its role implies (transitively)."""
    implies: dict[str, list[str]] = {}
    rows = await session.execute(
        select(ImpliedRole.prior_role_id, ImpliedRole.implied_role_id).order_by(
            ImpliedRole.implied_role_id
        )
    )
    for prior, implied in rows:
        implies.setdefault(prior, []).append(implied)
    out: list[RoleAssignmentRef] = []
    for ref in refs:
        out.append(ref)
        seen = {ref.role_id}
        frontier = [ref.role_id]
        while frontier:
            prior = frontier.pop(0)
            for implied in implies.get(prior, ()):
                if implied not in seen:
                    seen.add(implied)
                    frontier.append(implied)
                    out.append(
                        replace(
                            ref, role_id=implied, prior_role_id=prior, granted_role_id=ref.role_id
                        )
                    )
    return out


class _ProjectTree:
    """The project hierarchy, read once on first use (a cloud holds thousands, not millions)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._rows: dict[str, tuple[str | None, str]] | None = None

    async def _load(self) -> dict[str, tuple[str | None, str]]:
        if self._rows is None:
            rows = await self._session.execute(
                select(Project.id, Project.parent_id, Project.domain_id)
            )
            self._rows = {pid: (parent, domain) for pid, parent, domain in rows}
        return self._rows

    async def domain_of(self, project_id: str) -> str | None:
        row = (await self._load()).get(project_id)
        return row[1] if row else None

    async def ancestors(self, project_id: str) -> list[str]:
        rows = await self._load()
        found: list[str] = []
        parent = rows.get(project_id, (None, ""))[0]
        while parent and parent not in found:
            found.append(parent)
            parent = rows.get(parent, (None, ""))[0]
        return found

    async def below(self, project_id: str) -> set[str]:
        rows = await self._load()
        children: dict[str, list[str]] = {}
        for pid, (parent, _domain) in rows.items():
            if parent:
                children.setdefault(parent, []).append(pid)
        found: set[str] = set()
        frontier = [project_id]
        while frontier:
            nxt = [c for p in frontier for c in children.get(p, ()) if c not in found]
            found.update(nxt)
            frontier = nxt
        return found

    async def in_domain(self, domain_id: str) -> set[str]:
        rows = await self._load()
        return {pid for pid, (_parent, domain) in rows.items() if domain == domain_id}


@dataclass(frozen=True, slots=True)
class Names:
    """Names for include_names: (name, domain id) of each entity, and domain names."""

    roles: dict[str, tuple[str, str]]
    users: dict[str, tuple[str, str]]
    groups: dict[str, tuple[str, str]]
    projects: dict[str, tuple[str, str]]
    domains: dict[str, str]


async def names_of(session: AsyncSession, refs: list[RoleAssignmentRef]) -> Names:
    async def named(model, ids: set[str | None]) -> dict[str, tuple[str, str]]:
        wanted = {i for i in ids if i}
        if not wanted:
            return {}
        rows = await session.execute(
            select(model.id, model.name, model.domain_id).where(model.id.in_(wanted))
        )
        return {i: (name, domain) for i, name, domain in rows}

    roles = await named(Role, {r.role_id for r in refs})
    users = await named(User, {r.user_id for r in refs})
    groups = await named(Group, {r.group_id for r in refs})
    projects = await named(Project, {r.project_id for r in refs})
    domain_ids = {r.domain_id for r in refs if r.domain_id}
    for table in (roles, users, groups, projects):
        domain_ids |= {domain for _name, domain in table.values() if domain}
    rows = await session.execute(select(Domain.id, Domain.name).where(Domain.id.in_(domain_ids)))
    domains = {domain_id: name for domain_id, name in rows}
    return Names(roles, users, groups, projects, domains)
