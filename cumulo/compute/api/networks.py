"""/os-networks and /os-tenant-networks: Nova's read-only proxy to the Network
service's networks below 2.36; the nova-network operations are gone (410), as in
Nova since nova-network was removed (api-ref: Networks (os-networks), Project
Networks (os-tenant-networks))."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import ApiError
from cumulo.common.service_client import url_path
from cumulo.compute.api.common import compute_of, json
from cumulo.compute.api.proxy import call, proxy_context

_NOVA_NETWORK_FIELDS = (
    "created_at", "updated_at", "deleted_at", "deleted", "injected", "bridge", "vlan",
    "vpn_public_address", "vpn_public_port", "vpn_private_address", "dhcp_start", "host",
    "bridge_interface", "multi_host", "priority", "rxtx_base", "dhcp_server", "share_address",
)  # fmt: skip


class Gone(ApiError):
    status, title = 410, "Gone"
    default_message = "Network server does not exist; nova-network was removed."


async def _subnets(request: Request, ctx: RequestContext, network_id: str) -> list[dict]:
    found = await call(
        request, ctx, "networks", "GET", "/v2.0/subnets", params={"network_id": network_id}
    )
    return found["subnets"]


async def _os_network(request: Request, ctx: RequestContext, net: dict[str, Any]) -> dict:
    """A Neutron network in the os-networks shape: addresses from its first IPv4 and
    IPv6 subnets, the nova-network-only fields null (those are for admins only)."""
    subnets = await _subnets(request, ctx, net["id"])
    v4 = next((s for s in subnets if s.get("ip_version") == 4), None)
    v6 = next((s for s in subnets if s.get("ip_version") == 6), None)
    body: dict[str, Any] = {"id": net["id"], "label": net["name"]}
    for prefix, subnet in (("", v4), ("_v6", v6)):
        cidr = ipaddress.ip_network(subnet["cidr"]) if subnet else None
        body[f"cidr{prefix}"] = str(cidr) if cidr else None
        body[f"netmask{prefix}"] = str(cidr.netmask) if cidr else None
        body[f"gateway{prefix}"] = subnet.get("gateway_ip") if subnet else None
    v4_net = ipaddress.ip_network(v4["cidr"]) if v4 else None
    body["broadcast"] = str(v4_net.broadcast_address) if v4_net else None
    dns = list(v4.get("dns_nameservers") or []) if v4 else []
    body["dns1"] = dns[0] if dns else None
    body["dns2"] = dns[1] if len(dns) > 1 else None
    if compute_of(request).policy.check("cloud_admin", ctx):
        body.update(dict.fromkeys(_NOVA_NETWORK_FIELDS))
        body["project_id"] = net.get("project_id")
        body["mtu"] = net.get("mtu")
        body["enable_dhcp"] = bool(v4 and v4.get("enable_dhcp"))
    return body


async def _tenant_network(request: Request, ctx: RequestContext, net: dict[str, Any]) -> dict:
    subnets = await _subnets(request, ctx, net["id"])
    return {"id": net["id"], "cidr": subnets[0]["cidr"] if subnets else None, "label": net["name"]}


async def _networks(request: Request, ctx: RequestContext) -> list[dict[str, Any]]:
    return (await call(request, ctx, "networks", "GET", "/v2.0/networks"))["networks"]


async def _network(request: Request, ctx: RequestContext) -> dict[str, Any]:
    network_id = request.path_params["network_id"]
    found = await call(request, ctx, "networks", "GET", url_path("/v2.0/networks/{}", network_id))
    return found["network"]


def _lister(view: Callable[..., Awaitable[dict]]):
    async def list_networks(request: Request) -> Response:
        ctx = await proxy_context(request)
        nets = await _networks(request, ctx)
        return json({"networks": [await view(request, ctx, n) for n in nets]})

    return list_networks


def _shower(view: Callable[..., Awaitable[dict]]):
    async def show_network(request: Request) -> Response:
        ctx = await proxy_context(request)
        return json({"network": await view(request, ctx, await _network(request, ctx))})

    return show_network


async def nova_network_gone(request: Request) -> Response:
    await proxy_context(request)
    raise Gone()


routes = [
    Route("/v2.1/os-networks", _lister(_os_network), methods=["GET"]),
    Route("/v2.1/os-networks", nova_network_gone, methods=["POST"]),
    Route("/v2.1/os-networks/add", nova_network_gone, methods=["POST"]),
    Route("/v2.1/os-networks/{network_id}", _shower(_os_network), methods=["GET"]),
    Route("/v2.1/os-networks/{network_id}", nova_network_gone, methods=["DELETE"]),
    Route("/v2.1/os-networks/{network_id}/action", nova_network_gone, methods=["POST"]),
    Route("/v2.1/os-tenant-networks", _lister(_tenant_network), methods=["GET"]),
    Route("/v2.1/os-tenant-networks", nova_network_gone, methods=["POST"]),
    Route("/v2.1/os-tenant-networks/{network_id}", _shower(_tenant_network), methods=["GET"]),
    Route("/v2.1/os-tenant-networks/{network_id}", nova_network_gone, methods=["DELETE"]),
]
