"""IP address management: CIDR checks, allocation pools, and picking free addresses.

Pure functions over the `ipaddress` module; the database side (one row per
allocated address, unique on subnet and address) lives in cumulo.network.ports.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Iterator

from cumulo.network.errors import InvalidInput

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAC_PREFIX = "fa:16:3e"


def parse_cidr(value: object, field: str = "cidr") -> IpNetwork:
    """A subnet CIDR: valid, with no host bits set (as Neutron insists)."""
    try:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError(value)
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise InvalidInput(
            f"Invalid input for {field}. Reason: '{value}' is not a valid IP subnet."
        ) from None
    net = iface.network
    if iface.ip != net.network_address:
        raise InvalidInput(
            f"Invalid input for {field}. Reason: '{value}' isn't a recommended CIDR, "
            f"'{net}' is recommended."
        )
    return net


def parse_ip(value: object, field: str = "ip_address") -> IpAddress:
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidInput(
            f"Invalid input for {field}. Reason: '{value}' is not a valid IP address."
        ) from None


def default_gateway(net: IpNetwork) -> str | None:
    if net.num_addresses < 4 and net.version == 4:
        return None
    return str(net.network_address + 1)


def usable_range(net: IpNetwork) -> tuple[IpAddress, IpAddress]:
    """First and last address a pool may hold (not network or broadcast for IPv4)."""
    if net.version == 4 and net.prefixlen < 31:
        return net.network_address + 1, net.broadcast_address - 1
    if net.version == 6 and net.prefixlen < 127:
        return net.network_address + 1, net.broadcast_address
    return net.network_address, net.broadcast_address


def default_pools(net: IpNetwork, gateway: str | None) -> list[dict[str, str]]:
    first, last = usable_range(net)
    pools: list[tuple[IpAddress, IpAddress]] = [(first, last)]
    if gateway:
        gw = ipaddress.ip_address(gateway)
        if first <= gw <= last:
            pools = [(a, b) for a, b in ((first, gw - 1), (gw + 1, last)) if a <= b]
    return [{"start": str(a), "end": str(b)} for a, b in pools]


def check_pools(net: IpNetwork, pools: list[dict[str, str]], gateway: str | None) -> None:
    """Pools inside the subnet, not overlapping each other, not holding the gateway."""
    ranges = []
    for pool in pools:
        if not isinstance(pool, dict) or not {"start", "end"} <= set(pool):
            raise InvalidInput(
                "Invalid input for allocation_pools. Reason: each pool needs start and end."
            )
        start, end = parse_ip(pool["start"], "start"), parse_ip(pool["end"], "end")
        if start.version != net.version or end.version != net.version or start > end:
            raise InvalidInput(f"The allocation pool {pool['start']}-{pool['end']} is not valid.")
        if start not in net or end not in net:
            raise InvalidInput(
                f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}."
            )
        ranges.append((start, end))
    ranges.sort()
    for (a1, b1), (a2, b2) in zip(ranges, ranges[1:], strict=False):
        if a2 <= b1:
            raise InvalidInput(f"Found overlapping allocation pools: {a1}-{b1} and {a2}-{b2}.")
    if gateway:
        gw = ipaddress.ip_address(gateway)
        for a, b in ranges:
            if a <= gw <= b:
                raise InvalidInput(f"Gateway ip {gateway} conflicts with allocation pool {a}-{b}")


def in_pools(ip: IpAddress, pools: Iterable[dict[str, str]]) -> bool:
    return any(
        ipaddress.ip_address(p["start"]) <= ip <= ipaddress.ip_address(p["end"]) for p in pools
    )


def pool_size(pools: Iterable[dict[str, str]]) -> int:
    return sum(
        int(ipaddress.ip_address(p["end"])) - int(ipaddress.ip_address(p["start"])) + 1
        for p in pools
    )


def random_candidates(pools: list[dict[str, str]], count: int) -> list[str]:
    """Up to `count` distinct random addresses from the pools (weighted by pool size)."""
    spans = [
        (int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"])), p)
        for p in pools
    ]
    total = sum(b - a + 1 for a, b, _ in spans)
    if total <= 0:
        return []
    picks: set[int] = set()
    for _ in range(min(count, total)):
        n = random.randrange(total)  # noqa: S311 - spreading addresses, not security
        for a, b, _ in spans:
            if n <= b - a:
                picks.add(a + n)
                break
            n -= b - a + 1
    version = ipaddress.ip_address(pools[0]["start"]).version
    return [
        str(ipaddress.ip_address(i) if version == 4 else ipaddress.IPv6Address(i)) for i in picks
    ]


def iter_pool_addresses(pools: list[dict[str, str]]) -> Iterator[str]:
    for p in pools:
        start, end = ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"])
        ip = start
        while ip <= end:
            yield str(ip)
            ip += 1


def overlaps(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return na.version == nb.version and na.overlaps(nb)


def allocate_prefix(pool_prefixes: list[str], used: list[str], prefixlen: int) -> str | None:
    """The first free prefix of this length in the pool's prefixes, or None."""
    taken = [ipaddress.ip_network(u) for u in used]
    for prefix in pool_prefixes:
        net = ipaddress.ip_network(prefix)
        if prefixlen < net.prefixlen:
            continue
        for candidate in net.subnets(new_prefix=prefixlen):
            if not any(candidate.overlaps(t) for t in taken):
                return str(candidate)
    return None


def random_mac() -> str:
    tail = random.getrandbits(24)  # noqa: S311 - MACs need spread, not secrecy
    return f"{MAC_PREFIX}:{tail >> 16:02x}:{(tail >> 8) & 0xFF:02x}:{tail & 0xFF:02x}"


def valid_mac(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split(":")
    return (
        len(parts) == 6
        and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)
        and int(parts[0], 16) & 1 == 0
    )


def eui64_address(cidr: str, mac: str) -> str:
    """The SLAAC address of a MAC on a /64 (RFC 4291 modified EUI-64)."""
    octets = bytes.fromhex(mac.replace(":", ""))
    interface = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    net = ipaddress.IPv6Network(cidr)
    return str(net.network_address + int.from_bytes(interface, "big"))


def address_order(ip: str) -> tuple[int, int]:
    """Sort key of addresses of both versions: IPv4 first, then by value."""
    address = ipaddress.ip_address(ip)
    return address.version, int(address)
