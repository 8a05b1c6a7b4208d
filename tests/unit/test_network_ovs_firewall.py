"""The openvswitch data plane's flows, rendered from a desired state (no switch needed)."""

from __future__ import annotations

from cumulo.network.dataplane.ovs_firewall import (
    integration_flows,
    port_masks,
    rule_matches,
    tunnel_flows,
)

PORT = {
    "id": "p1",
    "network_id": "n1",
    "mac": "fa:16:3e:00:00:01",
    "addresses": [{"ip": "10.0.0.5", "prefixlen": 24}],
    "allowed_address_pairs": [{"ip_address": "10.0.0.100/32", "mac_address": "fa:16:3e:00:00:99"}],
    "port_security_enabled": True,
    "rules": [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
         "port_range_min": 22, "port_range_max": 23, "remote_prefixes": ["192.0.2.0/24"]},
        {"direction": "egress", "ethertype": "IPv4", "protocol": None, "remote_prefixes": None},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
         "remote_group_id": "g1", "remote_prefixes": []},
    ],
}  # fmt: skip


def test_port_ranges_become_masks_that_cover_exactly_the_range():
    assert port_masks(22, 22) == ["22"]
    assert port_masks(22, 23) == ["0x0016/0xfffe"]
    covered = set()
    for m in port_masks(1000, 1999):
        value, _, mask = m.partition("/")
        value_i, mask_i = int(value, 0), int(mask, 0) if mask else 0xFFFF
        covered |= {p for p in range(65536) if p & mask_i == value_i}
    assert covered == set(range(1000, 2000))


def test_rules_match_their_protocol_ports_and_remotes():
    assert rule_matches(PORT["rules"][0], ingress=True) == [
        "ip,nw_src=192.0.2.0/24,nw_proto=6,tp_dst=0x0016/0xfffe"
    ]
    assert rule_matches(PORT["rules"][1], ingress=False) == ["ip"]
    # A remote group with no member yet matches nothing (not everything).
    assert rule_matches(PORT["rules"][2], ingress=True) == []
    assert rule_matches({"ethertype": "IPv6", "protocol": "icmp"}, ingress=True) == [
        "ipv6,nw_proto=58"
    ]


def test_a_filtered_port_gets_anti_spoofing_conntrack_and_its_rules():
    flows = integration_flows([PORT], {"p1": 7}, {3: 1}, {"n1": 1}, (2, 4)).splitlines()
    assert "cookie=0xc0,table=0,priority=100,in_port=7,actions=set_field:7->reg5," \
        "set_field:1->reg6,goto_table:71" in flows  # fmt: skip
    # Its own address and its allowed address pair may send; ARP for both.
    assert any("table=71" in f and "nw_src=10.0.0.5," in f and "ct(table=72" in f for f in flows)
    assert any("dl_src=fa:16:3e:00:00:99,nw_src=10.0.0.100/32" in f for f in flows)
    assert any("arp,dl_src=fa:16:3e:00:00:01,arp_spa=10.0.0.5" in f for f in flows)
    # Ingress: the SSH rule commits new connections; established ones pass.
    assert any("table=82" in f and "tp_dst=0x0016/0xfffe" in f and "ct(commit" in f
               for f in flows)  # fmt: skip
    assert any("table=82" in f and "+est" in f and "output:7" in f for f in flows)
    # The DHCP leg (ofport 3) and br-ex's patch (2, untagged -> VLAN 4) have their VLANs.
    assert any("in_port=3,actions=set_field:1->reg6" in f for f in flows)
    assert any("in_port=2,vlan_tci=0x0000/0x1fff" in f and "4->reg6" in f for f in flows)


def test_port_security_off_means_no_filtering():
    open_port = {**PORT, "port_security_enabled": False}
    flows = integration_flows([open_port], {"p1": 7}, {}, {"n1": 1}, None)
    assert "table=71" not in flows.replace("table=71,priority=0", "")
    assert "in_port=7,actions=set_field:1->reg6,resubmit(,60)" in flows


def test_remote_group_members_are_listed_once_for_all_ports_of_the_group():
    """Conjunctions: (port, protocol) x (member address), so N ports of a group that
    admits itself cost O(N) flows, not O(N^2)."""
    members = [f"10.0.0.{i}" for i in range(2, 52)]
    rule = {"direction": "ingress", "ethertype": "IPv4", "protocol": None,
            "remote_group_id": "g1", "remote_prefixes": members}  # fmt: skip
    ports = [
        {
            **PORT,
            "id": f"p{i}",
            "mac": f"fa:16:3e:00:01:{i:02x}",
            "addresses": [{"ip": members[i], "prefixlen": 24}],
            "allowed_address_pairs": [],
            "rules": [rule],
        }  # fmt: skip
        for i in range(50)
    ]
    flows = integration_flows(ports, {f"p{i}": i + 10 for i in range(50)}, {}, {"n1": 1}, None)
    member_flows = [f for f in flows.splitlines() if "conjunction(" in f and ",2/2)" in f]
    assert 0 < len(member_flows) <= 50  # adjacent addresses collapsed into prefixes
    conj = member_flows[0].split("conjunction(")[1].split(",")[0]
    assert sum(f"conj_id={conj}," in f for f in flows.splitlines()) == 50  # one per port
    assert len(flows.splitlines()) < 50 * 40


def test_br_tun_pins_remote_macs_to_their_tunnel_and_floods_only_to_the_networks_hosts():
    # patch-int is ofport 1; tunnels to host B (2) and host C (3). n1 (VLAN 5, VNI 100)
    # has ports on B and C, n2 (VLAN 6, VNI 200) on C only.
    networks = {"n1": (5, 100, [2, 3]), "n2": (6, 200, [3])}
    pinned = {
        "n1": {"FA:16:3E:00:00:0B": 2, "fa:16:3e:00:00:0c": 3},
        "n2": {"fa:16:3e:00:00:2c": 3},
    }
    arp = {"n1": {"10.0.0.11": "fa:16:3e:00:00:0b"}}
    flows = tunnel_flows(1, [2, 3], networks, pinned, arp).splitlines()

    def actions(table: int, match: str) -> list[str]:
        head = f"table={table},"
        return [f.split(",actions=", 1)[1] for f in flows
                if head in f and f.split(",actions=")[0].endswith(match)]  # fmt: skip

    # From br-int: unicast to table 20, broadcast/multicast to 22.
    assert actions(0, "in_port=1") == ["goto_table:2"]
    assert actions(2, "dl_dst=00:00:00:00:00:00/01:00:00:00:00:00") == ["goto_table:20"]
    assert actions(2, "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00") == ["goto_table:22"]
    # L2 population: each remote MAC straight to its own host's tunnel, with its VNI.
    assert actions(20, "priority=2,dl_vlan=5,dl_dst=fa:16:3e:00:00:0b") == [
        "pop_vlan,set_field:100->tun_id,output:2"
    ]
    assert actions(20, "priority=2,dl_vlan=5,dl_dst=fa:16:3e:00:00:0c") == [
        "pop_vlan,set_field:100->tun_id,output:3"
    ]
    assert actions(20, "priority=2,dl_vlan=6,dl_dst=fa:16:3e:00:00:2c") == [
        "pop_vlan,set_field:200->tun_id,output:3"
    ]
    assert actions(20, "priority=0") == ["goto_table:22"]  # unknown unicast: flooded
    # Floods go only to the hosts with something on the network.
    assert actions(22, "dl_vlan=5") == ["pop_vlan,set_field:100->tun_id,output:2,output:3"]
    assert actions(22, "dl_vlan=6") == ["pop_vlan,set_field:200->tun_id,output:3"]
    assert actions(22, "priority=0") == ["drop"]
    # ARP requests: a remote port's address is answered here, the others flooded.
    assert actions(2, "arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1") == ["goto_table:21"]
    [reply] = actions(21, "arp,dl_vlan=5,arp_tpa=10.0.0.11")
    assert "load:0x2->NXM_OF_ARP_OP[]" in reply and reply.endswith("IN_PORT")
    assert "set_field:fa:16:3e:00:00:0b->arp_sha" in reply
    assert "set_field:10.0.0.11->arp_spa" in reply
    assert actions(21, "priority=0") == ["goto_table:22"]
    # From a tunnel: a VNI served here gets its local VLAN, is learnt, goes to br-int.
    assert actions(0, "in_port=2") == actions(0, "in_port=3") == ["goto_table:4"]
    assert actions(4, "tun_id=100") == ["push_vlan:0x8100,set_field:4101->vlan_vid,goto_table:10"]
    assert actions(4, "priority=0") == ["drop"]
    [learn] = actions(10, "priority=1")
    assert learn.startswith("learn(table=20,priority=1,") and learn.endswith(",output:1")


def test_br_tun_drops_everything_until_its_patch_to_br_int_exists():
    assert tunnel_flows(-1, [2], {"n1": (5, 100, [2])}, {"n1": {"fa:16:3e:00:00:0b": 2}}) == (
        "cookie=0xc0,table=0,priority=0,actions=drop\n"
    )
