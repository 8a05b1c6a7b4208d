"""nftables rulesets of the linuxbridge data plane, rendered from the desired state.

Host namespace (the bridges and the guests' taps), two tables:

- `bridge cmlo_ports`: anti-spoofing on each guest port, stateless (the port's MAC and
  addresses plus its allowed address pairs; ARP; no DHCP or router advertisements from
  guests). It also marks each frame with the port it came in on (low 16 bits of the
  mark) and the port it leaves by (high 16 bits): the bridge family has no conntrack
  here, and the IP hooks that br_netfilter runs for bridged frames only see the bridge.
- `inet cmlo_sg`: the security groups, stateful. Each network's bridge has its own
  conntrack zone (overlapping tenant addresses never share a connection); a frame from
  a port goes through that port's egress chain, a frame to a port through its ingress
  chain: established/related pass, the group rules allow, everything else drops.
  Remote groups are named sets of the member ports' addresses.

Router namespace: `ip cmlo_nat` — DNAT/SNAT for floating IPs, SNAT of everything
else leaving by the gateway, and the metadata hook (see linuxbridge.MetadataProxy).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

PROTOCOLS = {
    "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132,
    "dccp": 33, "udplite": 136, "gre": 47, "esp": 50, "ah": 51, "igmp": 2, "ospf": 89,
    "vrrp": 112, "pgm": 113, "rsvp": 46, "egp": 8, "encap": 98, "ipip": 4,
    "ipv6-encap": 41, "ipv6-route": 43, "ipv6-frag": 44, "ipv6-nonxt": 59, "ipv6-opts": 60,
}  # fmt: skip
WITH_PORTS = {6, 17, 33, 132, 136}
METADATA_IP = "169.254.169.254"
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def protocol_number(protocol: str | int | None) -> int | None:
    """Neutron's protocol (name, number or None/"any") as an IP protocol number."""
    if protocol in (None, "", "any"):
        return None
    if isinstance(protocol, int) or str(protocol).isdecimal():
        return int(protocol)
    return PROTOCOLS.get(str(protocol).lower(), -1)


def prefix_set(prefixes: Iterable[str]) -> str:
    """An anonymous nft set of addresses/prefixes, overlaps merged (nft refuses them)."""
    nets = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    merged: list[Any] = []
    for version in (4, 6):
        merged += ipaddress.collapse_addresses(n for n in nets if n.version == version)
    items = [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in merged]
    return "{ " + ", ".join(items) + " }"


def remote_set_name(group_id: str, version: int) -> str:
    return f"rg_{group_id.replace('-', '')[:16]}_{version}"


def rule_match(rule: dict[str, Any], ingress: bool) -> str | None:
    """The nft match of one security group rule; None when it can never match here."""
    version = 6 if rule.get("ethertype") == "IPv6" else 4
    family = "ip6" if version == 6 else "ip"
    parts = [f"meta nfproto ipv{version}"]
    key = f"{family} {'saddr' if ingress else 'daddr'}"
    if rule.get("remote_group_id"):
        parts.append(f"{key} @{remote_set_name(rule['remote_group_id'], version)}")
    elif rule.get("remote_prefixes"):
        nets = [ipaddress.ip_network(p, strict=False) for p in rule["remote_prefixes"]]
        nets = [n for n in nets if n.version == version]
        if not nets:
            return None
        if all(n.prefixlen > 0 for n in nets):
            parts.append(f"{key} {prefix_set(str(n) for n in nets)}")
    proto = protocol_number(rule.get("protocol"))
    if proto == -1:
        return None  # a protocol name nftables does not know: match nothing rather than all
    if proto is not None:
        if version == 6 and proto == 1:
            proto = 58  # Neutron accepts "icmp" on IPv6 rules and means ICMPv6
        parts.append(f"meta l4proto {proto}")
        low, high = rule.get("port_range_min"), rule.get("port_range_max")
        if proto in WITH_PORTS and low is not None:
            parts.append(f"th dport {low}-{high if high is not None else low}")
        elif proto in (1, 58) and low is not None:
            icmp = "icmp" if proto == 1 else "icmpv6"
            parts.append(f"{icmp} type {low}")
            if high is not None:
                parts.append(f"{icmp} code {high}")
    return " ".join(parts)


def _port_addresses(port: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(MACs, IPv4 prefixes, IPv6 prefixes) the port may send from."""
    macs = [port["mac"]]
    ips = [a["ip"] for a in port["addresses"]]
    for pair in port.get("allowed_address_pairs") or []:
        ips.append(pair["ip_address"])
        if pair.get("mac_address"):
            macs.append(pair["mac_address"])
    v4 = [p for p in ips if ipaddress.ip_network(p, strict=False).version == 4]
    v6 = [p for p in ips if ipaddress.ip_network(p, strict=False).version == 6]
    # Only well-formed MACs reach the ruleset text (nothing else can be parsed as nft).
    return sorted({m.lower() for m in macs if MAC.match(m.lower())}), v4, v6


def _spoof_chain(index: int, port: dict[str, Any]) -> list[str]:
    macs, v4, v6 = _port_addresses(port)
    mac_set = "{ " + ", ".join(macs) + " }"
    lines = [
        f"ether saddr != {mac_set} drop",
        f"ether type arp arp saddr ether != {mac_set} drop",
        f"ether type arp arp saddr ip != {prefix_set(['0.0.0.0', *v4])} drop",
        "ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return",
        f"ether type ip ip saddr != {prefix_set(v4)} drop" if v4 else "ether type ip drop",
        "ether type ip udp sport 67 udp dport 68 drop",
        f"ether type ip6 ip6 saddr != {prefix_set(['::', 'fe80::/10', *v6])} drop",
        "ether type ip6 icmpv6 type { nd-router-advert, nd-redirect } drop",
        "ether type ip6 udp sport 547 udp dport 546 drop",
    ]
    return _chain(f"spoof_{index}", lines)


def _chain(name: str, lines: list[str], hook: str | None = None) -> list[str]:
    out = [f"  chain {name} {{"]
    if hook:
        out.append(f"    {hook}")
    out += [f"    {line}" for line in lines]
    out.append("  }")
    return out


def _vmap(selector: str, entries: list[tuple[str, str]]) -> list[str]:
    if not entries:
        return []
    return [f"{selector} vmap {{ " + ", ".join(f"{k} : {v}" for k, v in entries) + " }"]


def host_ruleset(
    networks: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    bridge_name: Callable[[str], str],
    port_device: Callable[[str], str],
) -> str:
    """The host namespace's ruleset: anti-spoofing, marks, zones and security groups."""
    guarded = sorted(
        (p for p in ports if p.get("port_security_enabled", True)), key=lambda p: p["id"]
    )[:0xFFFF]
    index = {p["id"]: i for i, p in enumerate(guarded, start=1)}

    bridge_base = [
        f'iifname "{port_device(p["id"])}" meta mark set {i} jump spoof_{i}'
        for p in guarded
        for i in [index[p["id"]]]
    ]
    mark_out = [
        f'oifname "{port_device(p["id"])}" meta mark set meta mark or {index[p["id"]] << 16:#010x}'
        for p in guarded
    ]
    out = ["table bridge cmlo_ports {"]
    out += _chain(
        "ports_in", bridge_base, "type filter hook prerouting priority -200; policy accept;"
    )
    out += _chain("ports_out", mark_out, "type filter hook forward priority -200; policy accept;")
    for p in guarded:
        out += _spoof_chain(index[p["id"]], p)
    out.append("}")

    zones = [
        f'iifname "{bridge_name(n["id"])}" ct zone set {z}'
        for z, n in enumerate(sorted(networks, key=lambda n: n["id"]), start=1)
        if z <= 0xFFFF
    ]
    out.append("table inet cmlo_sg {")
    sets: dict[str, list[str]] = {}
    for p in guarded:
        for r in p["rules"]:
            if r.get("remote_group_id"):
                version = 6 if r.get("ethertype") == "IPv6" else 4
                sets[remote_set_name(r["remote_group_id"], version)] = r["remote_prefixes"] or []
    for name, members in sorted(sets.items()):
        kind = "ipv6_addr" if name.endswith("_6") else "ipv4_addr"
        out.append(f"  set {name} {{")
        out.append(f"    type {kind}; flags interval;")
        if members:
            out.append(f"    elements = {prefix_set(members)}")
        out.append("  }")
    out += _chain("sg_zones", zones, "type filter hook prerouting priority -300; policy accept;")
    forward = _vmap(
        "meta mark & 0x0000ffff", [(str(i), f"jump egress_{i}") for i in index.values()]
    )
    forward += _vmap(
        "meta mark & 0xffff0000",
        [(f"{i << 16:#010x}", f"jump ingress_{i}") for i in index.values()],
    )
    out += _chain("sg_forward", forward, "type filter hook forward priority 0; policy accept;")
    for p in guarded:
        i = index[p["id"]]
        egress = [
            "ct state established,related return",
            "ct state invalid drop",
            "meta nfproto ipv4 udp sport 68 udp dport 67 return",
            "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, "
            "mld-listener-report, mld2-listener-report } return",
        ]
        ingress = [
            "ct state established,related accept",
            "ct state invalid drop",
            "meta nfproto ipv4 udp sport 67 udp dport 68 accept",
            "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, "
            "mld-listener-query } accept",
        ]
        for r in p["rules"]:
            is_ingress = r["direction"] == "ingress"
            match = rule_match(r, is_ingress)
            if match is not None:
                (ingress if is_ingress else egress).append(
                    f"{match} {'accept' if is_ingress else 'return'}"
                )
        out += _chain(f"egress_{i}", [*egress, "drop"])
        out += _chain(f"ingress_{i}", [*ingress, "drop"])
    out.append("}")
    return "\n".join(out) + "\n"


def router_ruleset(
    router: dict[str, Any], gateway_device: str | None, metadata_port: int | None
) -> str:
    """The router namespace's NAT: floating IPs, gateway SNAT, the metadata redirect."""
    pre: list[str] = []
    post: list[str] = []
    local: list[str] = []
    if metadata_port:
        pre.append(
            f'iifname "qr-*" ip daddr {METADATA_IP} tcp dport 80 redirect to :{metadata_port}'
        )
    if gateway_device:
        for fip in router.get("floating_ips") or []:
            pre.append(f"ip daddr {fip['floating_ip']} dnat to {fip['fixed_ip']}")
            local.append(f"ip daddr {fip['floating_ip']} dnat to {fip['fixed_ip']}")
            out_by_gateway = f'oifname "{gateway_device}"'
            post.append(f"ip saddr {fip['fixed_ip']} {out_by_gateway} snat to {fip['floating_ip']}")
        gw_ips = [
            a["ip"] for a in (router["gateway"] or {}).get("addresses", []) if ":" not in a["ip"]
        ]
        if router.get("enable_snat", True) and gw_ips:
            post.append(f'oifname "{gateway_device}" snat to {gw_ips[0]}')
    out = ["table ip cmlo_nat {"]
    out += _chain("nat_pre", pre, "type nat hook prerouting priority -100; policy accept;")
    out += _chain("nat_local", local, "type nat hook output priority -100; policy accept;")
    out += _chain("nat_post", post, "type nat hook postrouting priority 100; policy accept;")
    out.append("}")
    return "\n".join(out) + "\n"
