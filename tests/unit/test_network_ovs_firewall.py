"""The openvswitch data plane's flows, rendered from a desired state (no switch needed)."""

from __future__ import annotations

from cumulo.network.dataplane.ovs_firewall import integration_flows, port_masks, rule_matches

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
