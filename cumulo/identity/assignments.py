"""Which roles a user holds where: direct, through groups, inherited, and implied."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.identity.models import (
    GROUP_DOMAIN,
    GROUP_PROJECT,
    GROUP_SYSTEM,
    SYSTEM_TARGET,
    USER_DOMAIN,
    USER_PROJECT,
    USER_SYSTEM,
    Assignment,
    ImpliedRole,
    Project,
    Role,
    UserGroupMembership,
)


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
    rows = await session.scalars(
        select(Assignment.role_id).where(Assignment.actor_id.in_(actor_ids), or_(*conditions))
    )
    return set(rows)


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
    return await expand_implied(session, await _role_ids(session, actors, conditions))


async def roles_on_domain(session: AsyncSession, user_id: str, domain_id: str) -> set[str]:
    actors = [user_id, *await group_ids_of(session, user_id)]
    conditions = [
        (Assignment.target_id == domain_id)
        & Assignment.type.in_([USER_DOMAIN, GROUP_DOMAIN])
        & ~Assignment.inherited
    ]
    return await expand_implied(session, await _role_ids(session, actors, conditions))


async def roles_on_system(session: AsyncSession, user_id: str) -> set[str]:
    actors = [user_id, *await group_ids_of(session, user_id)]
    conditions = [
        (Assignment.target_id == SYSTEM_TARGET) & Assignment.type.in_([USER_SYSTEM, GROUP_SYSTEM])
    ]
    return await expand_implied(session, await _role_ids(session, actors, conditions))


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
