"""RBAC policies (api-ref: RBAC Policies): which other projects may use a network, a
subnet pool or a security group, and how.

A policy grants `target_project` (a project id, or `*` for every project) one action on
one object: `access_as_shared` (see it and use it: ports on a network, subnets from a
pool, a group on one's ports) or, for networks, `access_as_external` (see it and use it
as a router gateway and floating IP source). Networks and pools keep a `shared` flag that
means "a `*` access_as_shared policy exists", networks an `external` flag that means "an
access_as_external policy exists" (Neutron's externalnetworks row); both are kept in step
here, in the transaction that changes the policies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.context import RequestContext
from cumulo.network.core import (
    ACCESS_EXTERNAL,
    ACCESS_SHARED,
    EVERY_PROJECT,
    NetworkService,
    granted,
    new_id,
)
from cumulo.network.errors import (
    DuplicateRbacPolicy,
    InvalidInput,
    NetworkNotFound,
    RbacPolicyInUse,
    SecurityGroupNotFound,
    SubnetPoolNotFound,
)
from cumulo.network.models import (
    FloatingIp,
    Network,
    Port,
    PortSecurityGroup,
    RbacPolicy,
    Router,
    SecurityGroup,
    Subnet,
    SubnetPool,
)
from cumulo.network.ports import DHCP, FLOATING_IP, ROUTER_GATEWAY, touch

# What each object type accepts (Neutron: the valid actions of its RBAC class).
ACTIONS: dict[str, tuple[str, ...]] = {
    "network": (ACCESS_EXTERNAL, ACCESS_SHARED),
    "subnetpool": (ACCESS_SHARED,),
    "security_group": (ACCESS_SHARED,),
}
MODELS: dict[str, Any] = {
    "network": Network,
    "subnetpool": SubnetPool,
    "security_group": SecurityGroup,
}


def visible(service: NetworkService, ctx: RequestContext, object_type: str) -> Any:
    """SQL condition: objects of the type the caller sees (own or granted; admin all)."""
    if object_type == "network":
        return service.networks_visible(ctx)
    if service.is_admin(ctx):
        return True
    model = MODELS[object_type]
    shared = granted(object_type, ctx.project_id, (ACCESS_SHARED,))
    return or_(model.project_id == ctx.project_id, model.id.in_(shared))


def _not_found(object_type: str, object_id: str) -> Exception:
    if object_type == "network":
        return NetworkNotFound(f"Network {object_id} could not be found.")
    if object_type == "subnetpool":
        return SubnetPoolNotFound(f"Subnet pool {object_id} could not be found.")
    return SecurityGroupNotFound(f"Security group {object_id} does not exist")


async def object_to_share(
    session: AsyncSession,
    service: NetworkService,
    ctx: RequestContext,
    object_type: str,
    object_id: str,
) -> Any:
    """The object a policy is written on: 404 unless the caller sees it, and only its
    owner (or an admin) may write policies on it (Neutron: 400 InvalidInput)."""
    model = MODELS[object_type]
    obj = await session.scalar(
        select(model).where(model.id == object_id, visible(service, ctx, object_type))
    )
    if obj is None:
        raise _not_found(object_type, object_id)
    if obj.project_id != ctx.project_id and not service.is_admin(ctx):
        what = "networks" if object_type == "network" else "objects"
        raise InvalidInput(f"Only admins can manipulate policies on {what} they do not own.")
    return obj


async def shared_with(
    session: AsyncSession, object_type: str, ids: Iterable[str], project_id: str | None
) -> set[str]:
    """Which of `ids` are shared with the project (or every project): the `shared` views show."""
    ids = list(ids)
    found: set[str] = set()
    for chunk in range(0, len(ids), 500):
        found.update(
            await session.scalars(
                granted(object_type, project_id, (ACCESS_SHARED,)).where(
                    RbacPolicy.object_id.in_(ids[chunk : chunk + 500])
                )
            )
        )
    return found


async def has_access(
    session: AsyncSession, object_type: str, object_id: str, project_id: str, action: str
) -> bool:
    query = granted(object_type, project_id, (action,)).where(RbacPolicy.object_id == object_id)
    return await session.scalar(query.limit(1)) is not None


async def grant(
    session: AsyncSession, obj: Any, object_type: str, action: str, target: str, project_id: str
) -> RbacPolicy:
    """Add a policy on `obj` (409 DuplicateRbacPolicy when the same one exists)."""
    same = await session.scalar(
        select(RbacPolicy.id).where(
            RbacPolicy.object_type == object_type,
            RbacPolicy.object_id == obj.id,
            RbacPolicy.action == action,
            RbacPolicy.target_project == target,
        )
    )
    if same is not None:
        raise DuplicateRbacPolicy("An RBAC policy already exists with those values.")
    policy = RbacPolicy(
        id=new_id(),
        project_id=project_id,
        object_type=object_type,
        object_id=obj.id,
        action=action,
        target_project=target,
    )
    session.add(policy)
    await session.flush()
    await sync_flags(session, obj, object_type)
    return policy


async def revoke(session: AsyncSession, obj: Any, policy: RbacPolicy) -> None:
    """Remove a policy, refused (409 RbacPolicyInUse) while its target still uses it."""
    await check_unused(session, obj, policy)
    await session.delete(policy)
    await session.flush()
    await sync_flags(session, obj, policy.object_type)


async def retarget(session: AsyncSession, obj: Any, policy: RbacPolicy, target: str) -> None:
    """Give a policy another target: the old one must not be using it any more."""
    if target == policy.target_project:
        return
    await check_unused(session, obj, policy, keeping=target)
    clash = await session.scalar(
        select(RbacPolicy.id).where(
            RbacPolicy.object_type == policy.object_type,
            RbacPolicy.object_id == policy.object_id,
            RbacPolicy.action == policy.action,
            RbacPolicy.target_project == target,
        )
    )
    if clash is not None:
        raise DuplicateRbacPolicy("An RBAC policy already exists with those values.")
    policy.target_project = target
    await session.flush()
    await sync_flags(session, obj, policy.object_type)


async def set_wildcard(
    session: AsyncSession, obj: Any, object_type: str, action: str, on: bool
) -> None:
    """What `shared` / `router:external` on the resource itself mean: a `*` policy of the
    owner's, made or removed (removing it keeps any policy aimed at one project)."""
    policy = await session.scalar(
        select(RbacPolicy).where(
            RbacPolicy.object_type == object_type,
            RbacPolicy.object_id == obj.id,
            RbacPolicy.action == action,
            RbacPolicy.target_project == EVERY_PROJECT,
        )
    )
    if on and policy is None:
        await grant(session, obj, object_type, action, EVERY_PROJECT, obj.project_id)
    elif not on and policy is not None:
        await revoke(session, obj, policy)


async def drop_policies(session: AsyncSession, object_type: str, object_id: str) -> None:
    """An object is being deleted: its policies go with it."""
    for policy in await session.scalars(
        select(RbacPolicy).where(
            RbacPolicy.object_type == object_type, RbacPolicy.object_id == object_id
        )
    ):
        await session.delete(policy)


async def sync_flags(session: AsyncSession, obj: Any, object_type: str) -> None:
    """Keep `shared` (a `*` access_as_shared exists) and a network's `external` (any
    access_as_external exists) true to the policies; each change bumps the revision."""

    def any_policy(action: str, *where: ColumnElement[bool]) -> Any:
        return exists().where(
            RbacPolicy.object_type == object_type,
            RbacPolicy.object_id == obj.id,
            RbacPolicy.action == action,
            *where,
        )

    if object_type in ("network", "subnetpool"):
        obj.shared = bool(
            await session.scalar(
                select(any_policy(ACCESS_SHARED, RbacPolicy.target_project == EVERY_PROJECT))
            )
        )
    if object_type == "network":
        obj.external = bool(await session.scalar(select(any_policy(ACCESS_EXTERNAL))))
    touch(obj)


async def check_unused(
    session: AsyncSession, obj: Any, policy: RbacPolicy, keeping: str | None = None
) -> None:
    """Refuse to take access away from a project that still uses the object through this
    policy (Neutron's RbacPolicyInUse). `keeping`: the target the policy moves to."""
    target = policy.target_project
    if target == obj.project_id:
        return
    others = set(
        await session.scalars(
            select(RbacPolicy.target_project).where(
                RbacPolicy.object_type == policy.object_type,
                RbacPolicy.object_id == policy.object_id,
                RbacPolicy.action == policy.action,
                RbacPolicy.id != policy.id,
            )
        )
    )
    if keeping is not None:
        others.add(keeping)
    if EVERY_PROJECT in others:
        return
    users = await projects_using(session, policy.object_type, obj.id, policy.action)
    if target == EVERY_PROJECT:
        stranded = users - others - {obj.project_id}
    else:
        stranded = users & {target}
    if stranded:
        raise RbacPolicyInUse(
            f"RBAC policy on object {obj.id} cannot be removed because other objects depend "
            f"on it.\nDetails: project_id={','.join(sorted(stranded))}"
        )


async def projects_using(
    session: AsyncSession, object_type: str, object_id: str, action: str
) -> set[str]:
    """Projects whose resources depend on the object through an action."""
    if object_type == "network" and action == ACCESS_SHARED:
        query = select(Port.project_id).where(
            Port.network_id == object_id,
            Port.device_owner.notin_((DHCP, ROUTER_GATEWAY, FLOATING_IP)),
        )
    elif object_type == "network":
        gateways = (
            select(Router.project_id)
            .join(Port, Port.id == Router.gw_port_id)
            .where(Port.network_id == object_id)
        )
        floating = select(FloatingIp.project_id).where(FloatingIp.floating_network_id == object_id)
        query = gateways.union(floating)  # type: ignore[assignment]
    elif object_type == "subnetpool":
        query = select(Subnet.project_id).where(Subnet.subnetpool_id == object_id)
    else:
        query = (
            select(Port.project_id)
            .join(PortSecurityGroup, PortSecurityGroup.port_id == Port.id)
            .where(PortSecurityGroup.security_group_id == object_id)
        )
    return set(await session.scalars(query))


async def usable_network(
    session: AsyncSession,
    service: NetworkService,
    ctx: RequestContext,
    network_id: str,
    project_id: str,
) -> Network:
    """A network the project may attach a router gateway or floating IP to: its own or
    one a policy grants it (admins: any); else 404, as for a network it cannot see."""
    net = await session.get(Network, network_id)
    usable = net is not None and (
        service.is_admin(ctx)
        or net.project_id == project_id
        or await has_access(session, "network", network_id, project_id, ACCESS_EXTERNAL)
        or await has_access(session, "network", network_id, project_id, ACCESS_SHARED)
    )
    if not usable:
        raise NetworkNotFound(f"Network {network_id} could not be found.")
    assert net is not None
    return net
