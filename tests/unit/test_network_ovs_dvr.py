"""The openvswitch data plane's distributed-router flows (ovs_dvr), from a desired
state's routers: what stays on the host, what is rewritten, what goes to the router's
own host."""

from __future__ import annotations

from cumulo.network.dataplane.ovs_dvr import (
    gateway_legs,
    integration_dvr_flows,
    tunnel_dvr_flows,
)
from cumulo.network.dvr import random_mac

HOST_MAC, PEER_MAC = "fa:16:3f:00:00:0a", "fa:16:3f:00:00:0b"
GW1, GW2 = "fa:16:3e:00:01:01", "fa:16:3e:00:02:01"
VLANS = {"net1": 3, "net2": 4}
PATCH = 7  # patch-int on br-tun, patch-tun on br-int


def _router(central: bool, distributed: bool = True) -> dict:
    return {
        "id": "r1",
        "distributed": distributed,
        "central": central,
        "interfaces": [
            {"port_id": "p1", "network_id": "net1", "mac": GW1.upper(),
             "addresses": [{"ip": "10.1.0.1", "prefixlen": 24, "subnet_id": "s1"},
                           {"ip": "2001:db8::1", "prefixlen": 64, "subnet_id": "s6"}]},
            {"port_id": "p2", "network_id": "net2", "mac": GW2,
             "addresses": [{"ip": "10.2.0.1", "prefixlen": 24, "subnet_id": "s2"}]},
        ],
    }  # fmt: skip


def _with(flows: list[str], *parts: str) -> list[str]:
    return [f for f in flows if all(p in f for p in parts)]


def test_only_distributed_routers_ipv4_legs_on_networks_wired_here_count():
    legs = gateway_legs([_router(central=False)], VLANS)
    assert [(leg["vlan"], leg["mac"], leg["ip"], leg["cidr"]) for leg in legs] == [
        (3, GW1, "10.1.0.1", "10.1.0.0/24"),
        (4, GW2, "10.2.0.1", "10.2.0.0/24"),
    ]
    assert gateway_legs([_router(central=True, distributed=False)], VLANS) == []
    assert [leg["vlan"] for leg in gateway_legs([_router(central=False)], {"net2": 4})] == [4]


def test_the_gateways_arp_stays_here_and_their_mac_leaves_as_the_hosts_dvr_mac():
    flows = tunnel_dvr_flows(PATCH, gateway_legs([_router(central=False)], VLANS), HOST_MAC)
    assert _with(flows, "table=0,priority=4,in_port=7,dl_vlan=3,arp,arp_tpa=10.1.0.1") == [
        "cookie=0xc0,table=0,priority=4,in_port=7,dl_vlan=3,arp,arp_tpa=10.1.0.1,actions=drop"
    ]
    # The router's own ARP requests: the responder answers (back to the gateway's MAC),
    # and what it cannot answer is not flooded with the gateway's MAC.
    assert _with(flows, "priority=3", f"dl_src={GW1}") == [
        f"cookie=0xc0,table=0,priority=3,in_port=7,dl_vlan=3,arp,arp_op=1,dl_src={GW1},"
        "actions=goto_table:21",
        f"cookie=0xc0,table=22,priority=3,dl_vlan=3,dl_src={GW1},actions=drop",
    ]
    rewrite = _with(flows, "priority=2", f"dl_src={GW2}")
    assert rewrite == [
        f"cookie=0xc0,table=0,priority=2,in_port=7,dl_vlan=4,dl_src={GW2},"
        f"actions=set_field:{HOST_MAC}->eth_src,goto_table:2"
    ]
    assert len(flows) == 8  # four per IPv4 leg: the IPv6 address adds nothing
    assert tunnel_dvr_flows(-1, gateway_legs([_router(central=False)], VLANS), HOST_MAC) == []


def test_frames_from_other_hosts_routers_get_the_gateway_mac_back():
    legs = gateway_legs([_router(central=True)], VLANS)
    flows = integration_dvr_flows(PATCH, legs, [PEER_MAC])
    assert _with(flows, "table=0,") == [
        f"cookie=0xc0,table=0,priority=95,in_port=7,dl_vlan=3,dl_src={PEER_MAC},ip,"
        f"nw_dst=10.1.0.0/24,actions=set_field:{GW1}->eth_src,set_field:3->reg6,resubmit(,60)",
        f"cookie=0xc0,table=0,priority=95,in_port=7,dl_vlan=4,dl_src={PEER_MAC},ip,"
        f"nw_dst=10.2.0.0/24,actions=set_field:{GW2}->eth_src,set_field:4->reg6,resubmit(,60)",
    ]
    # The router's own host routes north-south itself: nothing sent away.
    assert _with(flows, "table=60") == []


def test_on_other_hosts_east_west_stays_local_and_the_rest_goes_to_the_routers_host():
    flows = integration_dvr_flows(PATCH, gateway_legs([_router(central=False)], VLANS), [])
    assert _with(flows, "table=0,") == []  # no peers: nothing to rewrite
    local = _with(flows, "table=60,priority=6", f"dl_dst={GW1}")
    assert sorted(f.split("nw_dst=")[1] for f in local) == [
        "10.1.0.0/24,actions=NORMAL",
        "10.2.0.0/24,actions=NORMAL",
    ]
    away = _with(flows, "table=60,priority=5")
    assert away == [
        f"cookie=0xc0,table=60,priority=5,reg6=3,vlan_tci=0x0000/0x1000,ip,dl_dst={GW1},"
        "actions=push_vlan:0x8100,set_field:4099->vlan_vid,output:7",
        f"cookie=0xc0,table=60,priority=5,reg6=4,vlan_tci=0x0000/0x1000,ip,dl_dst={GW2},"
        "actions=push_vlan:0x8100,set_field:4100->vlan_vid,output:7",
    ]
    assert integration_dvr_flows(0, gateway_legs([_router(central=False)], VLANS), []) == []


def test_dvr_macs_keep_the_base_mac_s_fixed_octets():
    for _ in range(20):
        assert random_mac("fa:16:3f:00:00:00").startswith("fa:16:3f:")
        assert random_mac("fa:16:3f:4b:00:00").startswith("fa:16:3f:4b:")
    assert len({random_mac("fa:16:3f:00:00:00") for _ in range(50)}) > 40
