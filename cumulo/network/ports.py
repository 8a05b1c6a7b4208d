"""Ports and their fixed IPs, as the ports, routers and floating IP APIs create them.

Addresses come from the subnet's allocation pools: a few random candidates are
checked in one query (cheap while the pool is sparse), and a full scan finds the
last free ones. The unique key on (subnet, address) is the final word: two
transactions that pick the same address cannot both commit, and the loser retries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.db import Database, utcnow
from cumulo.common.faults import Conflict
from cumulo.network import ipam
from cumulo.network.core import new_id
from cumulo.network.errors import (
    InvalidInput,
    InvalidIpForNetwork,
    InvalidIpForSubnet,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
    MacAddressInUse,
    SubnetNotFound,
)
from cumulo.network.models import IpAllocation, Network, Port, Router, Standard, Subnet

T = TypeVar("T")

ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
FLOATING_IP = "network:floatingip"
DHCP = "network:dhcp"
ROUTER_INTERFACE_DISTRIBUTED = "network:router_interface_distributed"
# An HA router's interfaces (Neutron's DEVICE_OWNER_HA_REPLICATED_INT), and its VRRP
# port on the project's HA network, one per L3 agent hosting it.
ROUTER_INTERFACE_HA = "network:ha_router_replicated_interface"
ROUTER_HA_INTERFACE = "network:router_ha_interface"
ROUTER_INTERFACES = (ROUTER_INTERFACE, ROUTER_INTERFACE_DISTRIBUTED, ROUTER_INTERFACE_HA)
ROUTER_OWNERS = (*ROUTER_INTERFACES, ROUTER_GATEWAY, ROUTER_HA_INTERFACE)
AUTO_ADDRESS_MODES = ("slaac", "dhcpv6-stateless")
_CANDIDATES = 16
_ATTEMPTS = 5


async def write_retrying(
    db: Database, work: Callable[[AsyncSession], Awaitable[T]], first: bool = False
) -> T:
    """Run `work` in one write transaction; retry when a unique key lost a race (and,
    as every retrying write does, when the server broke a deadlock). `first`: see
    Database.run_write."""
    for attempt in range(_ATTEMPTS):
        try:
            return await db.write_retrying(work, first=first)
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise Conflict("Concurrent changes conflicted; please retry.") from None
    raise AssertionError("unreachable")


def interface_owner(router: Router) -> str:
    """The device_owner of a router's interfaces, as Neutron's (DVR's own for a
    distributed router, the replicated one for an HA router)."""
    if router.distributed:
        return ROUTER_INTERFACE_DISTRIBUTED
    return ROUTER_INTERFACE_HA if router.ha else ROUTER_INTERFACE


def touch(row: Standard) -> None:
    row.revision_number += 1
    row.updated_at = utcnow()


async def network_subnets(session: AsyncSession, network_id: str) -> list[Subnet]:
    rows = await session.scalars(
        select(Subnet).where(Subnet.network_id == network_id).order_by(Subnet.created_at)
    )
    return list(rows)


async def _is_used(session: AsyncSession, subnet_id: str, ip: str) -> bool:
    query = select(IpAllocation.port_id).where(
        IpAllocation.subnet_id == subnet_id, IpAllocation.ip_address == ip
    )
    return (await session.scalar(query)) is not None


async def _free_address(session: AsyncSession, subnet: Subnet) -> str | None:
    pools = subnet.allocation_pools
    if not pools:
        return None
    candidates = ipam.random_candidates(pools, _CANDIDATES)
    used = set(
        await session.scalars(
            select(IpAllocation.ip_address).where(
                IpAllocation.subnet_id == subnet.id, IpAllocation.ip_address.in_(candidates)
            )
        )
    )
    for ip in candidates:
        if ip not in used and ip != subnet.gateway_ip:
            return ip
    used = set(
        await session.scalars(
            select(IpAllocation.ip_address).where(IpAllocation.subnet_id == subnet.id)
        )
    )
    for ip in ipam.iter_pool_addresses(pools):
        if ip not in used and ip != subnet.gateway_ip:
            return ip
    return None


def is_auto_address(subnet: Subnet) -> bool:
    """An IPv6 subnet whose ports' addresses come from their MACs (SLAAC)."""
    return subnet.ip_version == 6 and subnet.ipv6_address_mode in AUTO_ADDRESS_MODES


async def resolve_fixed_ips(
    session: AsyncSession,
    network: Network,
    requested: list[dict[str, Any]] | None,
    *,
    device_owner: str = "",
    mac: str = "",
) -> list[tuple[Subnet, str]]:
    """(subnet, address) pairs for a port: what was asked for, or one per IP version
    from the allocation pools; and, as Neutron does, the port's EUI-64 address on every
    SLAAC subnet of the network (router interfaces excepted)."""
    subnets = await network_subnets(session, network.id)
    by_id = {s.id: s for s in subnets}
    router_interface = device_owner in ROUTER_INTERFACES
    auto = [s for s in subnets if is_auto_address(s)] if mac and not router_interface else []
    chosen: list[tuple[Subnet, str]] = []
    if requested is None:
        for version in (4, 6):
            pooled = [s for s in subnets if s.ip_version == version and not is_auto_address(s)]
            for subnet in pooled:
                ip = await _free_address(session, subnet)
                if ip:
                    chosen.append((subnet, ip))
                    break
            else:
                if pooled:
                    raise IpAddressGenerationFailure(
                        f"No more IP addresses available on network {network.id}."
                    )
        return chosen + [(s, ipam.eui64_address(s.cidr, mac)) for s in auto]
    for spec in requested:
        chosen.append(await _requested_ip(session, network, by_id, chosen, spec, device_owner, mac))
    held = {s.id for s, _ in chosen}
    return chosen + [(s, ipam.eui64_address(s.cidr, mac)) for s in auto if s.id not in held]


async def _requested_ip(
    session: AsyncSession,
    network: Network,
    by_id: dict[str, Subnet],
    chosen: list[tuple[Subnet, str]],
    spec: Any,
    device_owner: str,
    mac: str,
) -> tuple[Subnet, str]:
    """The address one `fixed_ips` entry asks for."""
    if not isinstance(spec, dict) or not set(spec) <= {"subnet_id", "ip_address"}:
        raise InvalidInput(
            "Invalid input for fixed_ips. Reason: each entry has subnet_id and/or ip_address."
        )
    subnet = None
    if spec.get("subnet_id") is not None:
        subnet = by_id.get(spec["subnet_id"])
        if subnet is None:
            if await session.get(Subnet, spec["subnet_id"]) is None:
                raise SubnetNotFound(f"Subnet {spec['subnet_id']} could not be found.")
            raise InvalidInput(
                f"Failed to create port on network {network.id}, because fixed_ips "
                "included invalid subnet " + spec["subnet_id"] + "."
            )
    if spec.get("ip_address") is None:
        if subnet is None:
            raise InvalidInput("Invalid input for fixed_ips. Reason: subnet_id or ip_address.")
        if is_auto_address(subnet) and mac and device_owner not in ROUTER_INTERFACES:
            return subnet, ipam.eui64_address(subnet.cidr, mac)
        free = await _free_address(session, subnet)
        if free is None or any(s.id == subnet.id and a == free for s, a in chosen):
            raise IpAddressGenerationFailure(
                f"No more IP addresses available on network {network.id}."
            )
        return subnet, free
    ip = ipam.parse_ip(spec["ip_address"])
    if subnet is None:
        subnet = next((s for s in by_id.values() if ip in ipaddress.ip_network(s.cidr)), None)
        if subnet is None:
            raise InvalidIpForNetwork(
                f"IP address {ip} is not a valid IP for any of the subnets on the "
                "specified network."
            )
    if (
        is_auto_address(subnet)
        and device_owner not in ROUTER_INTERFACES
        and not (mac and str(ip) == ipam.eui64_address(subnet.cidr, mac))
    ):
        raise InvalidInput(
            f"IPv6 address {ip} cannot be directly assigned to a port on subnet {subnet.id} "
            "as the subnet is configured for automatic addresses"
        )
    net = ipaddress.ip_network(subnet.cidr)
    first, last = ipam.usable_range(net)
    if not first <= ip <= last:
        raise InvalidIpForSubnet(f"IP address {ip} is not a valid IP for the specified subnet.")
    gateway_taken = str(ip) == subnet.gateway_ip and device_owner not in ROUTER_OWNERS
    taken = any(s.id == subnet.id and a == str(ip) for s, a in chosen)
    if gateway_taken or taken or await _is_used(session, subnet.id, str(ip)):
        raise IpAddressAlreadyAllocated(f"IP address {ip} already allocated in subnet {subnet.id}")
    return subnet, str(ip)


async def set_fixed_ips(
    session: AsyncSession, port: Port, ips: list[tuple[Subnet, str]], *, new: bool = False
) -> None:
    if not new:
        await session.execute(delete(IpAllocation).where(IpAllocation.port_id == port.id))
        await session.flush()
    for subnet, ip in ips:
        session.add(
            IpAllocation(
                port_id=port.id, ip_address=ip, subnet_id=subnet.id, network_id=port.network_id
            )
        )
    await session.flush()


async def new_port(
    session: AsyncSession,
    network: Network,
    *,
    project_id: str,
    fixed_ips: list[dict[str, Any]] | None = None,
    mac_address: str | None = None,
    **attrs: Any,
) -> Port:
    """A port with a MAC in fa:16:3e and its fixed IPs, flushed (not committed)."""
    if mac_address is not None:
        clash = await session.scalar(
            select(Port.id).where(Port.network_id == network.id, Port.mac_address == mac_address)
        )
        if clash:
            raise MacAddressInUse(
                f"Unable to complete operation for network {network.id}. The mac address "
                f"{mac_address} is in use."
            )
    mac_address = mac_address or ipam.random_mac()
    ips = await resolve_fixed_ips(
        session, network, fixed_ips, device_owner=attrs.get("device_owner", ""), mac=mac_address
    )
    port = Port(
        id=new_id(),
        network_id=network.id,
        project_id=project_id,
        mac_address=mac_address,
        port_security_enabled=attrs.pop("port_security_enabled", network.port_security_enabled),
        **attrs,
    )
    session.add(port)
    await session.flush()
    await set_fixed_ips(session, port, ips, new=True)
    return port


async def fixed_ips_of(session: AsyncSession, port_ids: list[str]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {p: [] for p in port_ids}
    for chunk in range(0, len(port_ids), 500):
        rows = await session.scalars(
            select(IpAllocation).where(IpAllocation.port_id.in_(port_ids[chunk : chunk + 500]))
        )
        for a in rows:
            found[a.port_id].append({"subnet_id": a.subnet_id, "ip_address": a.ip_address})
    for ips in found.values():
        ips.sort(key=lambda f: ipam.address_order(f["ip_address"]))
    return found


async def delete_port_row(session: AsyncSession, port: Port) -> None:
    await session.execute(delete(IpAllocation).where(IpAllocation.port_id == port.id))
    await session.delete(port)
    await session.flush()


async def sync_dhcp_port(session: AsyncSession, network: Network) -> None:
    """The network's DHCP port holds one address on each DHCP-enabled IPv4 subnet."""
    wanted = [s for s in await network_subnets(session, network.id) if s.enable_dhcp]
    wanted = [s for s in wanted if s.ip_version == 4]
    port = await session.scalar(
        select(Port).where(Port.network_id == network.id, Port.device_owner == DHCP)
    )
    if not wanted:
        if port is not None:
            await delete_port_row(session, port)
        return
    if port is None:
        await new_port(
            session,
            network,
            project_id=network.project_id,
            fixed_ips=[{"subnet_id": s.id} for s in wanted],
            device_owner=DHCP,
            device_id=f"dhcp-{network.id}",
            status="ACTIVE",
            port_security_enabled=False,
        )
        return
    held = {
        a.subnet_id: a.ip_address
        for a in await session.scalars(select(IpAllocation).where(IpAllocation.port_id == port.id))
    }
    if set(held) == {s.id for s in wanted}:
        return
    requested = [
        {"subnet_id": s.id, "ip_address": held[s.id]} if s.id in held else {"subnet_id": s.id}
        for s in wanted
    ]
    await session.execute(delete(IpAllocation).where(IpAllocation.port_id == port.id))
    await session.flush()
    await set_fixed_ips(session, port, await resolve_fixed_ips(session, network, requested))
    touch(port)
