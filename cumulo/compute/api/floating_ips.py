"""Nova's floating IP proxies to the Network service: /os-floating-ips and
/os-floating-ip-pools below 2.36, the addFloatingIp / removeFloatingIp server actions
below 2.44 (api-ref: Floating IPs (os-floating-ips), Servers - run an action)."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest, Conflict, NotFound
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.api.common import json, no_content
from cumulo.compute.api.proxy import (
    as_compute_error,
    call,
    client,
    proxy_context,
    require_below,
)
from cumulo.compute.models import Instance

# addFloatingIp and removeFloatingIp were removed at 2.44.
ACTIONS_REMOVED_AT = (2, 44)
# Nova's [neutron] default_floating_pool.
DEFAULT_POOL = "nova"


async def _external_networks(request: Request, ctx: RequestContext) -> list[dict[str, Any]]:
    found = await call(
        request, ctx, "networks", "GET", "/v2.0/networks", params={"router:external": "True"}
    )
    return found["networks"]


async def _view(
    request: Request, ctx: RequestContext, fip: dict[str, Any], pools: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Neutron floating IP as Nova shows it: the pool is its network's name, the
    instance the device of the port it is associated with."""
    if pools is None:
        pools = {n["id"]: n["name"] for n in await _external_networks(request, ctx)}
    instance_id = None
    if fip.get("port_id"):
        port = await call(
            request, ctx, "networks", "GET", url_path("/v2.0/ports/{}", fip["port_id"])
        )
        instance_id = port["port"].get("device_id") or None
    return {
        "id": fip["id"],
        "ip": fip["floating_ip_address"],
        "pool": pools.get(fip["floating_network_id"], fip["floating_network_id"]),
        "fixed_ip": fip.get("fixed_ip_address"),
        "instance_id": instance_id,
    }


async def _floating_ips(request: Request, ctx: RequestContext, **params: str) -> list[dict]:
    found = await call(request, ctx, "networks", "GET", "/v2.0/floatingips", params=params)
    return found["floatingips"]


async def list_floating_ips(request: Request) -> Response:
    ctx = await proxy_context(request)
    fips = await _floating_ips(request, ctx, project_id=ctx.project_id or "")
    pools = {n["id"]: n["name"] for n in await _external_networks(request, ctx)}
    return json({"floating_ips": [await _view(request, ctx, f, pools) for f in fips]})


async def _floating_ip(request: Request, ctx: RequestContext, fip_id: str) -> dict[str, Any]:
    if not fip_id:
        raise NotFound("Floating IP not found")
    try:
        found = await client(request, "networks").json(
            "GET", url_path("/v2.0/floatingips/{}", fip_id), ctx.auth_token
        )
    except ServiceError as exc:
        if exc.status == 404:
            raise NotFound(f"Floating IP {fip_id} could not be found.") from None
        raise as_compute_error(exc) from None
    return found["floatingip"]


async def show_floating_ip(request: Request) -> Response:
    ctx = await proxy_context(request)
    fip = await _floating_ip(request, ctx, request.path_params["fip_id"])
    return json({"floating_ip": await _view(request, ctx, fip)})


async def _pool_network(request: Request, ctx: RequestContext, pool: Any) -> dict[str, Any]:
    """The external network a pool names (its name or id); without a pool the default
    pool, or the cloud's one external network."""
    networks = await _external_networks(request, ctx)
    wanted = pool if pool is not None else DEFAULT_POOL
    matches = [n for n in networks if wanted in (n["name"], n["id"])]
    if not matches and pool is None and len(networks) == 1:
        matches = networks
    if not matches:
        raise NotFound("Floating IP pool not found.")
    return matches[0]


async def create_floating_ip(request: Request) -> Response:
    ctx = await proxy_context(request)
    raw = await request.body()
    body = (await json_body(request)) if raw.strip() else None
    pool = body.get("pool") if isinstance(body, dict) else None
    if pool is not None and not isinstance(pool, str):
        raise BadRequest("Invalid input for field/attribute pool.")
    network = await _pool_network(request, ctx, pool)
    try:
        created = await client(request, "networks").json(
            "POST",
            "/v2.0/floatingips",
            ctx.auth_token,
            json={"floatingip": {"floating_network_id": network["id"]}},
        )
    except ServiceError as exc:
        if exc.status == 409 and "OverQuota" in exc.body:
            raise as_compute_error(exc, {409: 403}) from None
        if exc.status in (400, 409):
            raise NotFound(f"No more floating IPs in pool {network['name']}.") from None
        raise as_compute_error(exc) from None
    fip = created["floatingip"]
    return json({"floating_ip": await _view(request, ctx, fip, {network["id"]: network["name"]})})


async def delete_floating_ip(request: Request) -> Response:
    ctx = await proxy_context(request)
    fip = await _floating_ip(request, ctx, request.path_params["fip_id"])
    await call(request, ctx, "networks", "DELETE", url_path("/v2.0/floatingips/{}", fip["id"]))
    return no_content(202)


async def list_pools(request: Request) -> Response:
    ctx = await proxy_context(request)
    networks = await _external_networks(request, ctx)
    return json({"floating_ip_pools": [{"name": n["name"]} for n in networks]})


# -- server actions --------------------------------------------------------------------


def _address(args: Any, field: str = "address") -> str:
    value = args.get(field) if isinstance(args, dict) else None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadRequest(
            f"Invalid input for field/attribute {field}. Value: {value}. "
            f"{value!r} is not a 'ip-address'"
        ) from None


async def _by_address(request: Request, ctx: RequestContext, address: str) -> dict[str, Any]:
    found = await _floating_ips(request, ctx, floating_ip_address=address)
    if not found:
        raise NotFound("floating IP not found")
    return found[0]


async def add_floating_ip(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> None:
    """addFloatingIp: associate the address with the server's port holding the fixed
    address (given, or the first IPv4 one)."""
    require_below(request, ACTIONS_REMOVED_AT)
    address = _address(args)
    fixed = None
    if isinstance(args, dict) and "fixed_address" in args:
        fixed = _address(args, "fixed_address")
    candidates = [
        (entry["port_id"], ip["ip_address"])
        for entry in inst.network_info or []
        for ip in entry.get("fixed_ips", [])
        if ":" not in ip["ip_address"]
    ]
    if not candidates:
        raise BadRequest("No nw_info cache associated with instance")
    if fixed is not None:
        candidates = [c for c in candidates if c[1] == fixed]
        if not candidates:
            raise BadRequest("Specified fixed address not assigned to instance")
    fip = await _by_address(request, ctx, address)
    port_id, fixed_ip = candidates[0]
    try:
        await client(request, "networks").json(
            "PUT",
            url_path("/v2.0/floatingips/{}", fip["id"]),
            ctx.auth_token,
            json={"floatingip": {"port_id": port_id, "fixed_ip_address": fixed_ip}},
        )
    except ServiceError as exc:
        if exc.status == 404:
            raise NotFound("floating IP not found") from None
        raise BadRequest(
            f"Unable to associate floating IP {address} to fixed IP {fixed_ip} for instance "
            f"{inst.uuid}. Error: {exc.body[:200]}"
        ) from None


async def remove_floating_ip(
    request: Request, ctx: RequestContext, inst: Instance, args: Any
) -> None:
    """removeFloatingIp: disassociate the address when it is on one of the server's ports."""
    require_below(request, ACTIONS_REMOVED_AT)
    address = _address(args)
    fip = await _by_address(request, ctx, address)
    ports = {entry["port_id"] for entry in inst.network_info or []}
    if not fip.get("port_id") or fip["port_id"] not in ports:
        raise Conflict(f"Floating IP {address} is not associated with instance {inst.uuid}.")
    await call(
        request,
        ctx,
        "networks",
        "PUT",
        url_path("/v2.0/floatingips/{}", fip["id"]),
        json={"floatingip": {"port_id": None}},
    )


routes = [
    Route("/v2.1/os-floating-ips", list_floating_ips, methods=["GET"]),
    Route("/v2.1/os-floating-ips", create_floating_ip, methods=["POST"]),
    Route("/v2.1/os-floating-ips/{fip_id}", show_floating_ip, methods=["GET"]),
    Route("/v2.1/os-floating-ips/{fip_id}", delete_floating_ip, methods=["DELETE"]),
    Route("/v2.1/os-floating-ip-pools", list_pools, methods=["GET"]),
]
