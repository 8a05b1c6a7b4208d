"""ML2's port binding rule and the VNI ranges, without a cloud."""

from __future__ import annotations

import pytest

from cumulo.network.binding import (
    BINDING_FAILED,
    HostAgent,
    Segment,
    binds,
    mapped_physnets,
    vif_binding,
)
from cumulo.network.segments import free_ids, parse_vni_ranges

LINUXBRIDGE = HostAgent({"driver": "linuxbridge", "interface_mappings": {"physnet1": "eth1"}}, True)
OPENVSWITCH = HostAgent({"driver": "openvswitch", "bridge_mappings": {"public": "br-ex"}}, True)
NOOP = HostAgent({"driver": "noop"}, True)
FLAT1 = Segment("flat", "physnet1")
VLAN_PUBLIC = Segment("vlan", "public")
VXLAN = Segment("vxlan", None)


def test_an_agent_binds_the_physical_networks_it_maps():
    assert mapped_physnets(LINUXBRIDGE.configurations) == {"physnet1"}
    assert mapped_physnets(OPENVSWITCH.configurations) == {"public"}
    assert binds(LINUXBRIDGE, FLAT1) and not binds(LINUXBRIDGE, VLAN_PUBLIC)
    assert binds(OPENVSWITCH, VLAN_PUBLIC) and not binds(OPENVSWITCH, FLAT1)


def test_tenant_networks_bind_on_any_living_agent_and_a_dead_one_binds_nothing():
    assert binds(LINUXBRIDGE, VXLAN) and binds(OPENVSWITCH, Segment("local", None))
    dead = HostAgent(LINUXBRIDGE.configurations, alive=False)
    assert not binds(dead, VXLAN) and not binds(dead, FLAT1)


def test_an_agent_without_mappings_or_a_host_without_an_agent_binds_as_before():
    assert mapped_physnets(NOOP.configurations) is None
    assert binds(NOOP, FLAT1) and binds(None, FLAT1)


def test_the_vif_type_of_a_port_that_does_not_bind_is_binding_failed():
    agents = {"h1": LINUXBRIDGE}
    assert vif_binding(agents, "n", FLAT1, "") == ("unbound", {})
    assert vif_binding(agents, "n", VLAN_PUBLIC, "h1") == (BINDING_FAILED, {})
    assert vif_binding(agents, "n", FLAT1, "h1")[0] == "bridge"
    assert vif_binding(agents, "n", FLAT1, "fake-host") == ("bridge", {"port_filter": True})


def test_vni_ranges_are_parsed_and_the_lowest_free_ids_offered():
    ranges = parse_vni_ranges(["1001:1003", "5000:5001"])
    assert ranges == [(1001, 1003), (5000, 5001)]
    assert free_ids(ranges, {1001, 1003}, 3) == [1002, 5000, 5001]
    assert free_ids(ranges, {1001, 1002, 1003, 5000, 5001}, 3) == []
    for bad in ("1001", "0:5", "10:9", "1:16777216", "a:b"):
        with pytest.raises(ValueError):
            parse_vni_ranges([bad])
