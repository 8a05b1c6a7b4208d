"""Nova's multinic server actions below 2.44 (api-ref: Servers - run an action,
addFixedIp / removeFixedIp): a server's port on a network gets one more fixed IP from the
network's subnets, or loses one, through the Network service with the caller's token,
as Nova's add_fixed_ip_to_instance / remove_fixed_ip_from_instance; the server's
addresses are refreshed before the 202."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.api.common import compute_of
from cumulo.compute.api.proxy import as_compute_error, call, client, require_below
from cumulo.compute.models import Instance
from cumulo.compute.network_cache import refresh_network_info

# addFixedIp and removeFixedIp were removed at 2.44, with the other network proxies.
ACTIONS_REMOVED_AT = (2, 44)
COMPUTE_OWNER_PREFIX = "compute:"


def _argument(action: str, args: Any, field: str) -> Any:
    """The action's one required field, refused as Nova's schema refuses it."""
    if not isinstance(args, dict) or field not in args:
        raise BadRequest(
            f"Invalid input for field/attribute {action}. Value: {args}. "
            f"'{field}' is a required property"
        )
    extra = sorted(set(args) - {field})
    if extra:
        raise BadRequest(
            f"Invalid input for field/attribute {action}. Value: {args}. Additional properties "
            f"are not allowed ({', '.join(repr(k) for k in extra)} was unexpected)"
        )
    return args[field]


async def _server_ports(
    request: Request, ctx: RequestContext, inst: Instance, **filters: Any
) -> list[dict[str, Any]]:
    found = await call(
        request, ctx, "networks", "GET", "/v2.0/ports", params={"device_id": inst.uuid, **filters}
    )
    return [p for p in found["ports"] if p["device_owner"].startswith(COMPUTE_OWNER_PREFIX)]


async def _set_fixed_ips(
    request: Request, ctx: RequestContext, port: dict[str, Any], fixed_ips: list[dict[str, Any]]
) -> None:
    """The port's fixed IPs set (the Network service's refusal raised as its ServiceError)."""
    path = url_path("/v2.0/ports/{}", port["id"])
    body = {"port": {"fixed_ips": fixed_ips}}
    await client(request, "networks").json("PUT", path, ctx.auth_token, json=body)


async def _refresh(request: Request, ctx: RequestContext, inst: Instance) -> None:
    service = compute_of(request)
    await refresh_network_info(service.db, service.networks, ctx.auth_token, inst.uuid)


async def add_fixed_ip(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> None:
    """addFixedIp {networkId}: the server's first port on the network that a subnet of it
    can give one more address to gets it (400 when the server has no port there)."""
    require_below(request, ACTIONS_REMOVED_AT)
    network_id = _argument("addFixedIp", args, "networkId")
    if not isinstance(network_id, (str, int)) or isinstance(network_id, bool):
        raise BadRequest(
            f"Invalid input for field/attribute networkId. Value: {network_id}. "
            f"{network_id!r} is not of type 'string', 'integer'"
        )
    network_id = str(network_id)
    if not 1 <= len(network_id) <= 36:
        raise BadRequest(f"Invalid input for field/attribute networkId. Value: {network_id}.")
    compute_of(request)._check_lock(ctx, inst)
    not_found = BadRequest(f"Network could not be found for instance {inst.uuid}.")
    subnets = (
        await call(
            request, ctx, "networks", "GET", "/v2.0/subnets", params={"network_id": network_id}
        )
    )["subnets"]
    if not subnets:
        raise not_found
    for port in await _server_ports(request, ctx, inst, network_id=network_id):
        for subnet in subnets:
            wanted = [*port["fixed_ips"], {"subnet_id": subnet["id"]}]
            try:
                await _set_fixed_ips(request, ctx, port, wanted)
            except ServiceError:
                continue  # as Nova: this subnet cannot, try the next one
            await _refresh(request, ctx, inst)
            return
    raise not_found


async def remove_fixed_ip(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> None:
    """removeFixedIp {address}: the address leaves the server's port holding it (400 when
    none of the server's ports holds it)."""
    require_below(request, ACTIONS_REMOVED_AT)
    value = _argument("removeFixedIp", args, "address")
    try:
        address = str(ipaddress.ip_address(value))
    except ValueError:
        raise BadRequest(
            f"Invalid input for field/attribute address. Value: {value}. "
            f"{value!r} is not a 'ip-address'"
        ) from None
    compute_of(request)._check_lock(ctx, inst)
    for port in await _server_ports(request, ctx, inst, fixed_ips=f"ip_address={address}"):
        kept = [ip for ip in port["fixed_ips"] if ip["ip_address"] != address]
        if len(kept) == len(port["fixed_ips"]):
            continue
        try:
            await _set_fixed_ips(request, ctx, port, kept)
        except ServiceError as exc:
            raise as_compute_error(exc) from None
        await _refresh(request, ctx, inst)
        return
    raise BadRequest(f"Instance {inst.uuid} doesn't have fixed IP '{address}'.")
