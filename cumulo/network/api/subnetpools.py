"""/v2.0/subnetpools (api-ref: Subnet pools)."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network import ipam, rbac
from cumulo.network.api.common import (
    apply_standard,
    caller,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    standard,
    tags_of,
    to_bool,
    to_int,
    to_list,
)
from cumulo.network.core import ACCESS_SHARED, NetworkService, new_id
from cumulo.network.errors import InvalidInput, SubnetPoolInUse, SubnetPoolNotFound
from cumulo.network.models import Subnet, SubnetPool, Tag
from cumulo.network.ports import touch, write_retrying

UPDATABLE = (
    "name", "description", "prefixes", "default_prefixlen", "min_prefixlen", "max_prefixlen",
    "default_quota", "is_default",
)  # fmt: skip
CREATE_ATTRS = (*UPDATABLE, "shared", "address_scope_id", "ip_version")


def render_pool(p: SubnetPool, tags: list[str], shared: bool) -> dict[str, Any]:
    return {
        **standard(p, tags),
        "ip_version": p.ip_version,
        "prefixes": p.prefixes,
        "default_prefixlen": p.default_prefixlen,
        "min_prefixlen": p.min_prefixlen,
        "max_prefixlen": p.max_prefixlen,
        "default_quota": p.default_quota,
        "address_scope_id": None,
        "shared": shared,
        "is_default": p.is_default,
    }


async def _render(
    service: NetworkService, ctx: RequestContext, pools: list[SubnetPool]
) -> list[dict[str, Any]]:
    ids = [p.id for p in pools]
    async with service.db.read() as session:
        tags = await tags_of(session, ids)
        shared = await rbac.shared_with(session, "subnetpool", ids, ctx.project_id)
    return [render_pool(p, tags[p.id], p.id in shared) for p in pools]


def _visible(service: NetworkService, ctx: RequestContext):
    return rbac.visible(service, ctx, "subnetpool")


async def visible_pool(service: NetworkService, ctx: RequestContext, pool_id: str) -> SubnetPool:
    async with service.db.read() as session:
        pool = await session.scalar(
            select(SubnetPool).where(SubnetPool.id == pool_id, _visible(service, ctx))
        )
    if pool is None:
        raise SubnetPoolNotFound(f"Subnet pool {pool_id} could not be found.")
    return pool


def _apply(service: NetworkService, ctx: RequestContext, p: SubnetPool, a: dict[str, Any]) -> None:
    apply_standard(p, a)
    if "prefixes" in a:
        nets = [ipam.parse_cidr(c, "prefixes") for c in to_list("prefixes", a["prefixes"])]
        if not nets or len({n.version for n in nets}) != 1:
            raise InvalidInput("Invalid input for prefixes: one IP version, at least one prefix.")
        if p.prefixes and any(
            not any(ipaddress.ip_network(old).subnet_of(n) for n in nets) for old in p.prefixes
        ):
            raise BadRequest("Existing prefixes must be a subset of the new prefixes")
        p.prefixes = [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[arg-type]
        p.ip_version = nets[0].version
    top = 32 if p.ip_version == 4 else 128
    shortest = min(ipaddress.ip_network(c).prefixlen for c in p.prefixes)
    if "min_prefixlen" in a or p.min_prefixlen is None:
        p.min_prefixlen = to_int("min_prefixlen", a.get("min_prefixlen", shortest), 0, top)
    if "max_prefixlen" in a or p.max_prefixlen is None:
        p.max_prefixlen = to_int("max_prefixlen", a.get("max_prefixlen", top), 0, top)
    if "default_prefixlen" in a or p.default_prefixlen is None:
        p.default_prefixlen = to_int(
            "default_prefixlen", a.get("default_prefixlen", p.min_prefixlen), 0, top
        )
    if not p.min_prefixlen <= p.default_prefixlen <= p.max_prefixlen:
        raise InvalidInput("Illegal prefix bounds: min <= default <= max is required.")
    if "default_quota" in a:
        q = a["default_quota"]
        p.default_quota = None if q is None else to_int("default_quota", q, 0)
    if "is_default" in a:
        service.enforce(ctx, "network:admin_only")
        p.is_default = to_bool("is_default", a["is_default"])


async def list_pools(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    async with service.db.read() as session:
        pools = list(await session.scalars(select(SubnetPool).where(_visible(service, ctx))))
    return list_response(request, "subnetpools", await _render(service, ctx, pools))


@describes(body=wrapped("subnetpool", CREATE_ATTRS), resource="subnetpool")
async def create_pool(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "subnetpool", CREATE_ATTRS)
    if not a.get("prefixes"):
        raise BadRequest("Failed to parse request. Required attribute 'prefixes' not specified")
    project_id = owner_of(service, ctx, a)
    service.enforce(ctx, "network:owner", project_id)
    pool = SubnetPool(id=new_id(), project_id=project_id, prefixes=[], shared=False)
    shared = to_bool("shared", a.get("shared", False))
    if shared:
        service.enforce(ctx, "network:set_shared")
    _apply(service, ctx, pool, a)

    async def work(session):
        await service.check_quota(session, project_id, "subnetpool")
        session.add(pool)
        await session.flush()
        if shared:
            # `shared` is a `*` access_as_shared policy, as in Neutron.
            await rbac.set_wildcard(session, pool, "subnetpool", ACCESS_SHARED, True)
            pool.revision_number = 0

    await write_retrying(service.db, work)
    return show(request, "subnetpool", (await _render(service, ctx, [pool]))[0], 201)


async def show_pool(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    pool = await visible_pool(service, ctx, request.path_params["pool_id"])
    return show(request, "subnetpool", (await _render(service, ctx, [pool]))[0])


@describes(body=wrapped("subnetpool", UPDATABLE), resource="subnetpool")
async def update_pool(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    pool_id = request.path_params["pool_id"]
    a = await resource_body(request, "subnetpool", UPDATABLE)
    a.pop("project_id", None)
    pool = await visible_pool(service, ctx, pool_id)
    service.enforce(ctx, "network:owner", pool.project_id)

    async def work(session):
        row = await session.get(SubnetPool, pool_id)
        _apply(service, ctx, row, a)
        touch(row)
        return row

    pool = await write_retrying(service.db, work)
    return show(request, "subnetpool", (await _render(service, ctx, [pool]))[0])


async def delete_pool(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    pool_id = request.path_params["pool_id"]
    pool = await visible_pool(service, ctx, pool_id)
    service.enforce(ctx, "network:owner", pool.project_id)

    async def work(session):
        if await session.scalar(select(Subnet.id).where(Subnet.subnetpool_id == pool_id).limit(1)):
            raise SubnetPoolInUse(
                f"Unable to complete operation on subnet pool {pool_id}. "
                "Subnets are still allocated from it."
            )
        await session.execute(delete(Tag).where(Tag.resource_id == pool_id))
        await session.execute(delete(SubnetPool).where(SubnetPool.id == pool_id))
        await rbac.drop_policies(session, "subnetpool", pool_id)

    await write_retrying(service.db, work)
    return no_content()


routes = [
    Route("/v2.0/subnetpools", list_pools, methods=["GET"]),
    Route("/v2.0/subnetpools", create_pool, methods=["POST"]),
    Route("/v2.0/subnetpools/{pool_id}", show_pool, methods=["GET"]),
    Route("/v2.0/subnetpools/{pool_id}", update_pool, methods=["PUT"]),
    Route("/v2.0/subnetpools/{pool_id}", delete_pool, methods=["DELETE"]),
]
