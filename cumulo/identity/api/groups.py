"""/v3/groups: CRUD and membership; GET /v3/users/{user_id}/groups.

api-ref: Identity v3 "Groups" and "List groups to which a user belongs". A group's
role assignments reach its members at token validation; removing a member (or a
group that held roles) revokes the affected users' tokens, as Keystone does.
"""

from __future__ import annotations

from typing import Any

from pydantic import StrictStr
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.faults import NotFound
from cumulo.identity.api.common import (
    Body,
    Name,
    authorize,
    context,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    self_link,
)
from cumulo.identity.api.users import (
    duplicate_entry,
    extras_of,
    filter_by_text,
    filter_users,
    insert_in_domain,
    load_user,
    parse_update,
    render_user,
    requested_domain_id,
    user_not_found,
    user_target,
)
from cumulo.identity.models import Assignment, Group, User, UserGroupMembership

_FIELDS = {"id", "name", "domain_id", "description", "links"}
# The group table's name column holds 64 characters (Keystone's does too).
NAME_MAX = 64


class GroupCreate(Body):
    name: StrictStr = Name(NAME_MAX)
    domain_id: StrictStr | None = None
    description: StrictStr | None = None


class GroupUpdate(Body):
    name: StrictStr | None = Name(NAME_MAX, required=False)
    domain_id: StrictStr | None = None
    description: StrictStr | None = None


def render_group(request: Request, g: Group) -> dict[str, Any]:
    return {
        **(g.extra or {}),
        "id": g.id,
        "name": g.name,
        "domain_id": g.domain_id,
        "description": g.description,
        "links": self_link(request, f"groups/{g.id}"),
    }


def _target(g: Group | None) -> dict[str, Any]:
    return {"group": {"id": g.id, "domain_id": g.domain_id}} if g is not None else {}


def _not_found(group_id: str) -> NotFound:
    return NotFound(f"Could not find group: {group_id}.")


async def _load(request: Request, group_id: str) -> Group | None:
    async with identity_of(request).read() as session:
        return await session.get(Group, group_id)


async def _authorized_group(request: Request, rule: str) -> Group:
    """The group named in the path, after the policy check (403 before 404, as Keystone)."""
    group_id = request.path_params["group_id"]
    group = await _load(request, group_id)
    await authorize(request, rule, _target(group))
    if group is None:
        raise _not_found(group_id)
    return group


async def create_group(request: Request) -> Response:
    data = await json_body(request)
    raw = data.get("group") if isinstance(data, dict) else None
    domain_id = await requested_domain_id(request, raw)
    await authorize(request, "identity:create_group", {"group": {"domain_id": domain_id}})
    body = validate(GroupCreate, raw)
    group = Group(
        id=new_id(),
        name=body.name.strip(),
        domain_id=domain_id,
        description=body.description if body.description is not None else "",
        extra=extras_of(body, _FIELDS),
    )
    await insert_in_domain(request, "group", group)
    return json({"group": render_group(request, group)}, status=201)


async def list_groups(request: Request) -> Response:
    ctx = await context(request)
    domain_id = request.query_params.get("domain_id") or ctx.domain_id
    await authorize(request, "identity:list_groups", {"domain_id": domain_id})
    query = select(Group)
    if domain_id:
        query = query.where(Group.domain_id == domain_id)
    query = filter_by_text(request, query, "name", Group.name)
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, Group.id)
    return json(list_body(request, "groups", [render_group(request, g) for g in rows], truncated))


async def show_group(request: Request) -> Response:
    group = await _authorized_group(request, "identity:get_group")
    return json({"group": render_group(request, group)})


async def update_group(request: Request) -> Response:
    group_id = request.path_params["group_id"]
    group = await _authorized_group(request, "identity:update_group")
    body = parse_update(GroupUpdate, await json_body(request), "group", group_id, group.domain_id)
    fields = body.model_fields_set
    try:
        async with identity_of(request).write() as session:
            row = await session.get(Group, group_id)
            if row is None:
                raise _not_found(group_id)
            if "name" in fields:
                row.name = (body.name or "").strip()
            if "description" in fields:
                row.description = body.description
            if new_extras := extras_of(body, _FIELDS):
                row.extra = {**(row.extra or {}), **new_extras}
    except IntegrityError:
        raise duplicate_entry("group", body.name, group.domain_id) from None
    return json({"group": render_group(request, row)})


async def delete_group(request: Request) -> Response:
    group_id = request.path_params["group_id"]
    await _authorized_group(request, "identity:delete_group")
    identity = identity_of(request)
    async with identity.write() as session:
        if await session.get(Group, group_id) is None:
            raise _not_found(group_id)
        members = list(
            await session.scalars(
                select(UserGroupMembership.user_id).where(UserGroupMembership.group_id == group_id)
            )
        )
        deleted = await session.execute(delete(Assignment).where(Assignment.actor_id == group_id))
        # Keystone: members lose the group's roles, so their tokens are revoked.
        if deleted.rowcount:
            for user_id in members:
                await identity.revoke_user_tokens(session, user_id)
        await session.execute(
            delete(UserGroupMembership).where(UserGroupMembership.group_id == group_id)
        )
        await session.execute(delete(Group).where(Group.id == group_id))
    return no_content()


# -- membership -----------------------------------------------------------------------------


async def list_users_in_group(request: Request) -> Response:
    group = await _authorized_group(request, "identity:list_users_in_group")
    query = filter_users(
        request,
        select(User)
        .join(UserGroupMembership, UserGroupMembership.user_id == User.id)
        .where(UserGroupMembership.group_id == group.id),
    )
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, User.id)
    return json(list_body(request, "users", [render_user(request, u) for u in rows], truncated))


async def _membership(request: Request, rule: str) -> tuple[Group, User]:
    """The group and user of a membership URL, after the policy check; 404 if either is unknown."""
    group_id = request.path_params["group_id"]
    user_id = request.path_params["user_id"]
    group = await _load(request, group_id)
    user = await load_user(request, user_id)
    await authorize(request, rule, {**_target(group), **user_target(user)})
    if group is None:
        raise _not_found(group_id)
    if user is None:
        raise user_not_found(user_id)
    return group, user


def _not_member(user_id: str, group_id: str) -> NotFound:
    return NotFound(f"User '{user_id}' not found in group '{group_id}'")


async def check_user_in_group(request: Request) -> Response:
    group, user = await _membership(request, "identity:check_user_in_group")
    async with identity_of(request).read() as session:
        member = await session.get(UserGroupMembership, (user.id, group.id))
    if member is None:
        raise _not_member(user.id, group.id)
    return no_content()


async def add_user_to_group(request: Request) -> Response:
    group, user = await _membership(request, "identity:add_user_to_group")
    async with identity_of(request).write() as session:
        # Adding an existing member is a no-op, as in Keystone.
        if await session.get(UserGroupMembership, (user.id, group.id)) is None:
            session.add(UserGroupMembership(user_id=user.id, group_id=group.id))
    return no_content()


async def remove_user_from_group(request: Request) -> Response:
    group, user = await _membership(request, "identity:remove_user_from_group")
    identity = identity_of(request)
    async with identity.write() as session:
        member = await session.get(UserGroupMembership, (user.id, group.id))
        if member is None:
            raise _not_member(user.id, group.id)
        await session.delete(member)
        await identity.revoke_user_tokens(session, user.id)
    return no_content()


async def list_groups_for_user(request: Request) -> Response:
    """GET /v3/users/{user_id}/groups."""
    user_id = request.path_params["user_id"]
    user = await load_user(request, user_id)
    ctx = await authorize(request, "identity:list_groups_for_user", user_target(user))
    if user is None:
        raise user_not_found(user_id)
    query = (
        select(Group)
        .join(UserGroupMembership, UserGroupMembership.group_id == Group.id)
        .where(UserGroupMembership.user_id == user_id)
    )
    query = filter_by_text(request, query, "name", Group.name)
    if ctx.domain_id:
        # A domain-scoped token sees only its domain's groups.
        query = query.where(Group.domain_id == ctx.domain_id)
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, Group.id)
    groups = [{**render_group(request, g), "membership_expires_at": None} for g in rows]
    return json(list_body(request, "groups", groups, truncated))


routes = [
    Route("/v3/groups", create_group, methods=["POST"]),
    Route("/v3/groups", list_groups, methods=["GET"]),
    Route("/v3/groups/{group_id}", show_group, methods=["GET"]),
    Route("/v3/groups/{group_id}", update_group, methods=["PATCH"]),
    Route("/v3/groups/{group_id}", delete_group, methods=["DELETE"]),
    Route("/v3/groups/{group_id}/users", list_users_in_group, methods=["GET"]),
    Route("/v3/groups/{group_id}/users/{user_id}", check_user_in_group, methods=["GET", "HEAD"]),
    Route("/v3/groups/{group_id}/users/{user_id}", add_user_to_group, methods=["PUT"]),
    Route("/v3/groups/{group_id}/users/{user_id}", remove_user_from_group, methods=["DELETE"]),
    Route("/v3/users/{user_id}/groups", list_groups_for_user, methods=["GET"]),
]
