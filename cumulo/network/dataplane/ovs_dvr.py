"""The openvswitch data plane's flows for distributed routers, as Neutron's OVS agent
with `enable_distributed_routing` lays them out (ovs_dvr_neutron_agent), on cumulo's
tables (see ovs_firewall).

Every host with a guest on a distributed router's networks runs the router's
interfaces itself, with the same gateway addresses and MACs: a guest's frames to its
gateway are routed on its own host. What keeps one MAC on many hosts from flapping:

- br-tun, from br-int (table 0, before table 2): ARP for a gateway's address never
  enters a tunnel (each host answers its own guests); a router's own ARP requests go
  to the ARP responder only (answered there for the ports L2 population knows, never
  flooded: Neutron's routers have those addresses in static ARP tables instead); any
  other frame leaving with a gateway's MAC as source leaves with this host's DVR MAC.
- br-int, from br-tun (table 0, above the tunnel's VLAN flows): an IPv4 frame from
  another host's DVR MAC for one of a router's subnets gets that subnet's gateway MAC
  back as its source, and goes on to the guests' ingress pipelines (table 60), so the
  guest sees its gateway and the switch never learns the gateway from the tunnel.
- br-int, table 60, on a host that is not the router's own (north-south is central,
  as Neutron's `dvr_no_external` hosts): a guest's IPv4 frame to the gateway's MAC
  for one of the router's subnets goes to the local interface (NORMAL); any other
  (the outside world, floating IPs, the metadata address) goes to br-tun with its
  VLAN, where the gateway's MAC is pinned to the tunnel to the router's host (L2
  population), whose router does SNAT and floating IPs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cumulo.network.dataplane.ovs_firewall import ARP_RESPONDER, FLOOD, FROM_INT, _flow


def _ipv4(leg: dict[str, Any]) -> list[tuple[str, str]]:
    """An interface's IPv4 addresses, each with its subnet."""
    return [
        (a["ip"], str(ipaddress.ip_interface(f"{a['ip']}/{a['prefixlen']}").network))
        for a in leg["addresses"]
        if ":" not in a["ip"]
    ]


def gateway_legs(routers: list[dict[str, Any]], vlans: dict[str, int]) -> list[dict[str, Any]]:
    """The IPv4 interfaces of the distributed routers this host runs: each with its
    router, its network's local VLAN, MAC, address and subnet."""
    legs = []
    for router in routers:
        if not router.get("distributed"):
            continue
        for leg in router["interfaces"]:
            vlan = vlans.get(leg["network_id"])
            if vlan is None:
                continue
            for ip, cidr in _ipv4(leg):
                legs.append({"router": router, "vlan": vlan, "mac": leg["mac"].lower(),
                             "ip": ip, "cidr": cidr})  # fmt: skip
    return legs


def tunnel_dvr_flows(patch: int, legs: list[dict[str, Any]], host_mac: str) -> list[str]:
    """br-tun, for frames from br-int (`patch`): the gateways' ARP kept on this host,
    the routers' ARP requests to the responder alone (its answer goes back to br-int,
    to the gateway's MAC: rewritten it would be lost), the gateways' MACs replaced by
    this host's DVR MAC on everything else."""
    if patch <= 0:
        return []
    flows = []
    for leg in legs:
        where = f"in_port={patch},dl_vlan={leg['vlan']}"
        flows.append(_flow(0, 4, f"{where},arp,arp_tpa={leg['ip']}", "drop"))
        flows.append(_flow(0, 3, f"{where},arp,arp_op=1,dl_src={leg['mac']}",
                           f"goto_table:{ARP_RESPONDER}"))  # fmt: skip
        flows.append(_flow(0, 2, f"{where},dl_src={leg['mac']}",
                           f"set_field:{host_mac}->eth_src,goto_table:{FROM_INT}"))  # fmt: skip
        # Unanswered, a router's ARP request is not flooded with the gateway's MAC.
        flows.append(_flow(FLOOD, 3, f"dl_vlan={leg['vlan']},dl_src={leg['mac']}", "drop"))
    return sorted(set(flows))


def integration_dvr_flows(
    patch: int, legs: list[dict[str, Any]], peer_macs: list[str]
) -> list[str]:
    """br-int: frames other hosts' routers sent (their DVR MACs) get the gateway's MAC
    back (table 0), and guests' traffic for what is not one of the router's subnets
    goes to the router's own host (table 60, on the other hosts)."""
    if patch <= 0:
        return []
    flows = []
    for leg in legs:
        vlan = leg["vlan"]
        for peer in peer_macs:
            flows.append(_flow(0, 95, f"in_port={patch},dl_vlan={vlan},dl_src={peer.lower()},"
                                      f"ip,nw_dst={leg['cidr']}",
                               f"set_field:{leg['mac']}->eth_src,set_field:{vlan}->reg6,"
                               "resubmit(,60)"))  # fmt: skip
        router = leg["router"]
        if router.get("central"):
            continue
        to_gateway = f"reg6={vlan},vlan_tci=0x0000/0x1000,ip,dl_dst={leg['mac']}"
        for _, cidr in (pair for i in router["interfaces"] for pair in _ipv4(i)):
            flows.append(_flow(60, 6, f"{to_gateway},nw_dst={cidr}", "NORMAL"))
        flows.append(_flow(60, 5, to_gateway,
                           f"push_vlan:0x8100,set_field:{vlan | 0x1000}->vlan_vid,"
                           f"output:{patch}"))  # fmt: skip
    return sorted(set(flows))
