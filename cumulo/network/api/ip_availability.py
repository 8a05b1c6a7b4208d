"""/v2.0/network-ip-availabilities (api-ref: Network IP availability and usage stats).

Per network and subnet: how many addresses the allocation pools hold (`total_ips`)
and how many ports hold (`used_ips`). Admin only, as Neutron: others list none and
find none (404). `ip_version` narrows the subnets counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.network import ipam
from cumulo.network.api.common import caller, list_response, service_of, show
from cumulo.network.core import NetworkService
from cumulo.network.errors import NetworkNotFound
from cumulo.network.models import IpAllocation, Network, Subnet


async def _availabilities(
    service: NetworkService, request: Request, network_id: str | None = None
) -> list[dict[str, Any]]:
    ctx = await caller(request)
    if not service.is_admin(ctx):
        return []
    versions = {int(v) for v in request.query_params.getlist("ip_version") if v in ("4", "6")}
    async with service.db.read() as session:
        nets = select(Network)
        subnets = select(Subnet).order_by(Subnet.created_at)
        if network_id is not None:
            nets = nets.where(Network.id == network_id)
            subnets = subnets.where(Subnet.network_id == network_id)
        if versions:
            subnets = subnets.where(Subnet.ip_version.in_(versions))
        networks = list(await session.scalars(nets))
        by_network: dict[str, list[Subnet]] = {n.id: [] for n in networks}
        for subnet in await session.scalars(subnets):
            by_network.setdefault(subnet.network_id, []).append(subnet)
        counts = select(IpAllocation.subnet_id, func.count()).group_by(IpAllocation.subnet_id)
        used = Counter(dict((await session.execute(counts)).all()))
    found = []
    for net in networks:
        rows = [
            {
                "subnet_id": s.id,
                "subnet_name": s.name,
                "cidr": s.cidr,
                "ip_version": s.ip_version,
                "total_ips": ipam.pool_size(s.allocation_pools),
                "used_ips": used[s.id],
            }
            for s in by_network[net.id]
        ]
        if versions and not rows:
            continue
        found.append(
            {
                "network_id": net.id,
                "network_name": net.name,
                "project_id": net.project_id,
                "tenant_id": net.project_id,
                "total_ips": sum(r["total_ips"] for r in rows),
                "used_ips": sum(r["used_ips"] for r in rows),
                "subnet_ip_availability": rows,
            }
        )
    return found


async def list_availabilities(request: Request) -> Response:
    items = await _availabilities(service_of(request), request)
    return list_response(request, "network_ip_availabilities", items, id_key="network_id")


async def show_availability(request: Request) -> Response:
    network_id = request.path_params["network_id"]
    items = await _availabilities(service_of(request), request, network_id)
    if not items:
        raise NetworkNotFound(f"Network {network_id} could not be found.")
    return show(request, "network_ip_availability", items[0])


routes = [
    Route("/v2.0/network-ip-availabilities", list_availabilities, methods=["GET"]),
    Route("/v2.0/network-ip-availabilities/{network_id}", show_availability, methods=["GET"]),
]
