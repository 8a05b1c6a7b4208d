"""OpenFlow tables of the openvswitch data plane's `br-int`, rendered from the desired state.

Laid out as Neutron's `openvswitch` firewall driver does, with OVS's conntrack (`ct`):
each network's local VLAN is its conntrack zone (reg6), so overlapping tenant
addresses never share a connection; reg5 holds the OpenFlow port being filtered.

- table 0: where a frame comes from. A guest port with port security goes to its
  egress pipeline (71); any other local port (DHCP and router legs, guests with port
  security off) to 60; frames from br-ex (untagged) get the external network's VLAN.
- table 71: anti-spoofing (the port's MACs and addresses, its allowed address pairs;
  DHCP requests and neighbour discovery pass), then conntrack -> 72.
- table 72: egress rules: established/related pass, new connections a rule allows are
  committed, everything else drops -> 60.
- table 60: a frame for a filtered guest's MAC on its VLAN -> its ingress pipeline
  (81); everything else: NORMAL (MAC learning, the ports' VLAN tags).
- tables 81/82: ingress as 71/72 (ARP, DHCP replies and neighbour discovery pass),
  then `output` to the guest's port.

The other bridges' flows are here too: a physical network's bridge (br-ex, br-<physnet>:
physical_flows, with provider_ingress_flows on br-int) and br-tun (tunnel_flows).

Every flow carries the cookie COOKIE, and the whole table set is replaced at once
with `ovs-ofctl replace-flows`, which changes only the flows that differ: an agent
that restarts or re-applies leaves established connections' flows alone.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from cumulo.network.dataplane.firewall import MAC, WITH_PORTS, protocol_number

COOKIE = "0xc0"
ZONE = "NXM_NX_REG6[0..15]"
ESTABLISHED = ("ct_state=-new+est-inv+trk", "ct_state=-new+rel-inv+trk")


def port_masks(low: int, high: int) -> list[str]:
    """A port range as value/mask pairs (OpenFlow matches ports by mask)."""
    out: list[str] = []
    while low <= high:
        size = 1
        while low % (size * 2) == 0 and low + size * 2 - 1 <= high and size < 0x10000:
            size *= 2
        out.append(str(low) if size == 1 else f"{low:#06x}/{0xFFFF & ~(size - 1):#06x}")
        low += size
    return out


def _flow(table: int, priority: int, match: str, actions: str) -> str:
    match = f",{match}" if match else ""
    return f"cookie={COOKIE},table={table},priority={priority}{match},actions={actions}"


def remote_key(rule: dict[str, Any], ingress: bool) -> str:
    version = 6 if rule.get("ethertype") == "IPv6" else 4
    if version == 6:
        return "ipv6_src" if ingress else "ipv6_dst"
    return "nw_src" if ingress else "nw_dst"


def rule_matches(rule: dict[str, Any], ingress: bool, remote: bool = True) -> list[str]:
    """The OpenFlow matches of one security group rule (none: it never matches here);
    with `remote` false, a remote group rule's match without its members' addresses
    (they are the other dimension of a conjunction, see integration_flows)."""
    version = 6 if rule.get("ethertype") == "IPv6" else 4
    l3 = "ipv6" if version == 6 else "ip"
    key = remote_key(rule, ingress)
    addresses: list[str | None] = [None]
    if rule.get("remote_group_id") and not remote:
        pass
    elif rule.get("remote_group_id") or rule.get("remote_prefixes"):
        nets = [ipaddress.ip_network(p, strict=False) for p in rule.get("remote_prefixes") or []]
        nets = list(ipaddress.collapse_addresses(n for n in nets if n.version == version))
        if not nets:
            return []
        addresses = [None] if any(n.prefixlen == 0 for n in nets) else [str(n) for n in nets]
    proto = protocol_number(rule.get("protocol"))
    if proto == -1:
        return []
    l4: list[str] = [""]
    if proto is not None:
        if version == 6 and proto == 1:
            proto = 58
        low, high = rule.get("port_range_min"), rule.get("port_range_max")
        if proto in WITH_PORTS and low is not None:
            l4 = [f",nw_proto={proto},tp_dst={m}" for m in port_masks(low, high or low)]
        elif proto in (1, 58) and low is not None:
            l4 = [f",nw_proto={proto},icmp_type={low}" + (
                f",icmp_code={high}" if high is not None else "")]  # fmt: skip
        else:
            l4 = [f",nw_proto={proto}"]
    return [l3 + (f",{key}={a}" if a else "") + tail for a in addresses for tail in l4]


def _sources(port: dict[str, Any]) -> list[tuple[str, str]]:
    """(MAC, address or prefix) pairs the port may send from."""
    pairs = [(port["mac"], a["ip"]) for a in port["addresses"]]
    for pair in port.get("allowed_address_pairs") or []:
        pairs.append((pair.get("mac_address") or port["mac"], pair["ip_address"]))
    return [(m.lower(), ip) for m, ip in pairs if MAC.match(m.lower())]


def _port_flows(
    port: dict[str, Any],
    ofport: int,
    vlan: int,
    conjunctions: dict[tuple[str, str, str], int],
    conj_flows: dict[tuple[int, str], set[str]],
    members: dict[tuple[str, str, str], dict[str, Any]],
) -> list[str]:
    flows = [_flow(0, 100, f"in_port={ofport}",
                   f"set_field:{ofport}->reg5,set_field:{vlan}->reg6,goto_table:71")]  # fmt: skip
    reg = f"reg5={ofport}"
    sources = _sources(port)
    for mac in sorted({m for m, _ in sources} | {port["mac"].lower()}):
        flows += [
            _flow(71, 95, f"{reg},udp,dl_src={mac},tp_src=68,tp_dst=67", "resubmit(,60)"),
            _flow(71, 95, f"{reg},icmp6,dl_src={mac},icmp_type=133", "resubmit(,60)"),
            _flow(71, 95, f"{reg},icmp6,dl_src={mac},icmp_type=135", "resubmit(,60)"),
            _flow(71, 95, f"{reg},icmp6,dl_src={mac},icmp_type=136", "resubmit(,60)"),
            _flow(
                71, 90, f"{reg},ipv6,dl_src={mac},ipv6_src=fe80::/10", f"ct(table=72,zone={ZONE})"
            ),  # fmt: skip
        ]
    for mac, ip in sources:
        if ipaddress.ip_network(ip, strict=False).version == 4:
            flows.append(_flow(71, 95, f"{reg},arp,dl_src={mac},arp_spa={ip}", "resubmit(,60)"))
            flows.append(_flow(71, 65, f"{reg},ip,dl_src={mac},nw_src={ip}",
                               f"ct(table=72,zone={ZONE})"))  # fmt: skip
        else:
            flows.append(_flow(71, 65, f"{reg},ipv6,dl_src={mac},ipv6_src={ip}",
                               f"ct(table=72,zone={ZONE})"))  # fmt: skip
    flows.append(_flow(71, 10, reg, "drop"))
    # Frames for the port: its MAC (and its pairs' MACs) on its network's VLAN.
    for mac in sorted({m for m, _ in sources} | {port["mac"].lower()}):
        to_port = f"set_field:{ofport}->reg5,goto_table:81"
        flows.append(_flow(60, 91, f"reg6={vlan},dl_dst={mac},vlan_tci=0x1000/0x1000",
                           f"pop_vlan,{to_port}"))  # fmt: skip
        flows.append(_flow(60, 90, f"reg6={vlan},dl_dst={mac}", to_port))
    out = f"output:{ofport}"
    flows += [
        _flow(81, 100, f"{reg},arp", out),
        _flow(81, 95, f"{reg},udp,tp_src=67,tp_dst=68", out),
        _flow(81, 95, f"{reg},icmp6,icmp_type=134", out),
        _flow(81, 95, f"{reg},icmp6,icmp_type=135", out),
        _flow(81, 95, f"{reg},icmp6,icmp_type=136", out),
        _flow(81, 90, f"{reg},ip", f"ct(table=82,zone={ZONE})"),
        _flow(81, 90, f"{reg},ipv6", f"ct(table=82,zone={ZONE})"),
        _flow(81, 10, reg, "drop"),
    ]
    for state in ESTABLISHED:
        flows.append(_flow(72, 80, f"{reg},{state}", "resubmit(,60)"))
        flows.append(_flow(82, 80, f"{reg},{state}", out))
    for rule in port["rules"]:
        ingress = rule["direction"] == "ingress"
        table = 82 if ingress else 72
        accept = f"ct(commit,zone={ZONE}),{out if ingress else 'resubmit(,60)'}"
        if rule.get("remote_group_id"):
            # Conjunction: (this port, protocol, ports) x (any member's address), so a
            # group's members are listed once, not once per port of the group.
            key = _conj_key(rule, ingress)
            # (a key in members has members: parsing them again per port was quadratic)
            if key not in members and not rule_matches(rule, ingress):
                continue  # no member (of this ethertype) yet: nothing it can allow
            conj = conjunctions.setdefault(key, _conj_id(key))
            members[key] = rule
            for match in rule_matches(rule, ingress, remote=False):
                dimension = f"{reg},ct_state=+new-est+trk,{match}"
                conj_flows.setdefault((table, dimension), set()).add(f"conjunction({conj},1/2)")
            l3 = "ipv6" if rule.get("ethertype") == "IPv6" else "ip"
            flows.append(_flow(table, 70, f"conj_id={conj},{reg},ct_state=+new-est+trk,{l3}",
                               accept))  # fmt: skip
            continue
        for match in rule_matches(rule, ingress):
            flows.append(_flow(table, 70, f"{reg},ct_state=+new-est+trk,{match}", accept))
    return flows


def _conj_id(key: tuple[str, str, str]) -> int:
    """A stable id (the same across applies and restarts: no flow churns for it)."""
    return int(hashlib.sha1("/".join(key).encode()).hexdigest()[:7], 16) + 1


def _conj_key(rule: dict[str, Any], ingress: bool) -> tuple[str, str, str]:
    """Conjunctions are per remote group, direction and ethertype."""
    return (rule["remote_group_id"], "ingress" if ingress else "egress",
            rule.get("ethertype") or "IPv4")  # fmt: skip


def integration_flows(
    ports: list[dict[str, Any]],
    ofports: dict[str, int],
    local_ports: dict[int, int],
    vlans: dict[str, int],
    external: tuple[int, int] | None,
) -> str:
    """br-int's whole flow table.

    `ports`: the desired state's ports; `ofports`: OpenFlow port of each port id whose
    device is on br-int; `local_ports`: ofport -> VLAN of every other port (DHCP and
    router legs, and unfiltered guests); `external`: (ofport of the patch to br-ex,
    the external network's VLAN) when there is one.
    """
    flows = [
        _flow(0, 0, "", "drop"),
        _flow(60, 0, "", "NORMAL"),
        _flow(71, 0, "", "drop"),
        _flow(72, 50, "ct_state=+inv+trk", "drop"),
        _flow(72, 0, "", "drop"),
        _flow(81, 0, "", "drop"),
        _flow(82, 50, "ct_state=+inv+trk", "drop"),
        _flow(82, 0, "", "drop"),
    ]
    for ofport, vlan in sorted(local_ports.items()):
        flows.append(_flow(0, 90, f"in_port={ofport}", f"set_field:{vlan}->reg6,resubmit(,60)"))
    if external is not None:
        patch, vlan = external
        flows.append(_flow(0, 90, f"in_port={patch},vlan_tci=0x0000/0x1fff",
                           f"push_vlan:0x8100,set_field:{vlan | 0x1000}->vlan_vid,"
                           f"set_field:{vlan}->reg6,resubmit(,60)"))  # fmt: skip
    conjunctions: dict[tuple[str, str, str], int] = {}
    conj_flows: dict[tuple[int, str], set[str]] = {}
    members: dict[tuple[str, str, str], dict[str, Any]] = {}
    for port in sorted(ports, key=lambda p: p["id"]):
        ofport = ofports.get(port["id"])
        if ofport is None or port["network_id"] not in vlans:
            continue
        if port.get("port_security_enabled", True):
            flows += _port_flows(port, ofport, vlans[port["network_id"]], conjunctions,
                                 conj_flows, members)  # fmt: skip
        else:
            vlan = vlans[port["network_id"]]
            flows.append(_flow(0, 90, f"in_port={ofport}", f"set_field:{vlan}->reg6,resubmit(,60)"))
    # The members' dimension: one flow per address, naming every conjunction it is in.
    for key, rule in sorted(members.items()):
        ingress = key[1] == "ingress"
        table = 82 if ingress else 72
        group = {"ethertype": key[2], "remote_group_id": key[0],
                 "remote_prefixes": rule["remote_prefixes"]}  # fmt: skip
        for match in rule_matches(group, ingress):
            dimension = f"ct_state=+new-est+trk,{match}"
            conj_flows.setdefault((table, dimension), set()).add(
                f"conjunction({conjunctions[key]},2/2)"
            )
    for (table, match), actions in sorted(conj_flows.items()):
        # Above the conj_id flows: a packet matching one dimension only falls through.
        flows.append(_flow(table, 71, match, ",".join(sorted(actions))))
    return "\n".join(flows) + "\n"


DROP_ALL = _flow(0, 0, "", "drop") + "\n"


def physical_flows(patch: int | None, segments: dict[int, int | None]) -> str:
    """A physical network's bridge (br-ex, br-<physnet>), as Neutron's br-phys: frames
    from br-int of a network wired here leave with its provider VLAN (`segments`: local
    VLAN -> provider VLAN id, None for a flat network: untagged); nothing else from
    br-int passes. Frames from the wire: NORMAL (br-int sorts them, see
    provider_ingress_flows)."""
    flows = [_flow(0, 0, "", "NORMAL")]
    if patch is not None:
        flows.append(_flow(0, 2, f"in_port={patch}", "drop"))
        for local, provider in sorted(segments.items()):
            out = "pop_vlan" if provider is None else f"set_field:{provider | 0x1000}->vlan_vid"
            flows.append(_flow(0, 4, f"in_port={patch},dl_vlan={local}", f"{out},NORMAL"))
    return "\n".join(flows) + "\n"


def external_flows(patch: int | None, vlan: int | None) -> str:
    """br-ex: the external network's frames leave br-int tagged with its VLAN and go
    out untagged; nothing else from br-int passes. Frames from outside: NORMAL."""
    return physical_flows(patch, {vlan: None} if vlan is not None else {})


def provider_ingress_flows(patch: int, segments: dict[int, int | None]) -> list[str]:
    """br-int: frames from a physical network's bridge get their network's local VLAN
    (a VLAN network's provider id translated, a flat network's untagged frames tagged);
    frames of a VLAN no network here has drop (table 0's default)."""
    if patch <= 0:
        return []
    flows = []
    for local, provider in sorted(segments.items()):
        tag = f"set_field:{local | 0x1000}->vlan_vid,set_field:{local}->reg6,resubmit(,60)"
        if provider is None:
            flows.append(_flow(0, 90, f"in_port={patch},vlan_tci=0x0000/0x1fff",
                               f"push_vlan:0x8100,{tag}"))  # fmt: skip
        else:
            flows.append(_flow(0, 90, f"in_port={patch},dl_vlan={provider}", tag))
    return flows


def vni(network_id: str) -> int:
    """A network's derived VXLAN id (from its id: every host agrees on it)."""
    return int(hashlib.sha1(network_id.encode()).hexdigest()[:6], 16) or 1


def segment_vni(network_id: str, network_type: str | None, segmentation_id: int | None) -> int:
    """The network's VXLAN id: a vxlan network's `provider:segmentation_id` when it has
    one (as Neutron), else derived from its id."""
    return segmentation_id if network_type == "vxlan" and segmentation_id else vni(network_id)


def tunnel_ingress_flows(patch: int, networks: dict[str, int]) -> list[str]:
    """br-int: frames from br-tun come tagged with their network's local VLAN."""
    if patch <= 0:
        return []
    return [
        _flow(
            0, 90, f"in_port={patch},dl_vlan={vlan}", f"set_field:{vlan}->reg6,resubmit(,60)"
        )  # fmt: skip
        for vlan in sorted(networks.values())
    ]


# br-tun's tables, as Neutron's OVS agent numbers them.
FROM_INT, FROM_TUNNEL, LEARN, UNICAST, ARP_RESPONDER, FLOOD = 2, 4, 10, 20, 21, 22
UNICAST_MACS = "dl_dst=00:00:00:00:00:00/01:00:00:00:00:00"
GROUP_MACS = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"
# What a frame from a tunnel teaches table 20 (Neutron's learned flows): its source
# MAC on its VLAN goes back through the tunnel it came from, with its VNI.
LEARNT = (
    f"learn(table={UNICAST},priority=1,hard_timeout=300,NXM_OF_VLAN_TCI[0..11],"
    "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],"
    "load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:OXM_OF_IN_PORT[])"
)


def arp_reply(mac: str, ip: str) -> str:
    """Actions turning an ARP request for `ip` into `mac`'s answer, sent back where it
    came from (Neutron's ARP responder)."""
    return (
        "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
        f"set_field:{mac}->eth_src,"
        "load:0x2->NXM_OF_ARP_OP[],"
        "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
        "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
        f"set_field:{mac}->arp_sha,"
        f"set_field:{ip}->arp_spa,"
        "IN_PORT"
    )


def tunnel_flows(
    patch: int,
    tunnels: list[int],
    networks: dict[str, tuple[int, int, list[int]]],
    pinned: dict[str, dict[str, int]] | None = None,
    arp: dict[str, dict[str, str]] | None = None,
) -> str:
    """br-tun, as Neutron's OVS agent with L2 population and its ARP responder lays it out.

    `networks` maps each tunnelled network to (its local VLAN, its VNI, the tunnels to
    the hosts that have something on it); `pinned` maps a network to {remote port's
    MAC: the tunnel to its host}; `arp` a network to {remote port's IPv4 address: its
    MAC}. From br-int (table 2): unicast to 20, where each pinned MAC leaves untagged
    with its network's VNI through its own host's tunnel (priority 2, above what
    learning adds at 1), and unknown unicast goes on to 22; ARP requests to 21, which
    answers those for a remote port's address itself (back to br-int) and passes the
    others on to 22; broadcast and multicast to 22, which floods the network's frames
    to its hosts only. From a tunnel (table 4): a VNI this host serves gets its local
    VLAN, the source MAC is learnt (table 10) and the frame goes to br-int; anything
    else drops.
    """
    flows = [_flow(0, 0, "", "drop")]
    if patch <= 0:
        return "\n".join(flows) + "\n"
    flows += [
        _flow(0, 1, f"in_port={patch}", f"goto_table:{FROM_INT}"),
        _flow(FROM_INT, 0, UNICAST_MACS, f"goto_table:{UNICAST}"),
        _flow(FROM_INT, 0, GROUP_MACS, f"goto_table:{FLOOD}"),
        _flow(FROM_INT, 1, "arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1", f"goto_table:{ARP_RESPONDER}"),
        _flow(ARP_RESPONDER, 0, "", f"goto_table:{FLOOD}"),
        _flow(FROM_TUNNEL, 0, "", "drop"),
        _flow(LEARN, 1, "", f"{LEARNT},output:{patch}"),
        _flow(UNICAST, 0, "", f"goto_table:{FLOOD}"),
        _flow(FLOOD, 0, "", "drop"),
    ]
    for ofport in sorted(tunnels):
        flows.append(_flow(0, 1, f"in_port={ofport}", f"goto_table:{FROM_TUNNEL}"))
    for net_id, (vlan, tunnel_id, flood) in sorted(networks.items()):
        to_tunnel = f"pop_vlan,set_field:{tunnel_id}->tun_id"
        flows.append(_flow(FROM_TUNNEL, 1, f"tun_id={tunnel_id}",
                           f"push_vlan:0x8100,set_field:{vlan | 0x1000}->vlan_vid,"
                           f"goto_table:{LEARN}"))  # fmt: skip
        if flood:
            outputs = ",".join(f"output:{p}" for p in sorted(flood))
            flows.append(_flow(FLOOD, 1, f"dl_vlan={vlan}", f"{to_tunnel},{outputs}"))
        for mac, ofport in sorted((pinned or {}).get(net_id, {}).items()):
            flows.append(_flow(UNICAST, 2, f"dl_vlan={vlan},dl_dst={mac.lower()}",
                               f"{to_tunnel},output:{ofport}"))  # fmt: skip
        for ip, mac in sorted((arp or {}).get(net_id, {}).items()):
            flows.append(_flow(ARP_RESPONDER, 1, f"arp,dl_vlan={vlan},arp_tpa={ip}",
                               arp_reply(mac.lower(), ip)))  # fmt: skip
    return "\n".join(flows) + "\n"
