"""IPAM rules: CIDR checks, default gateway and pools, pool validation, prefix allocation."""

from __future__ import annotations

import ipaddress

import pytest

from cumulo.network import ipam
from cumulo.network.errors import InvalidInput


def test_cidr_with_host_bits_or_bad_prefix_is_refused():
    assert str(ipam.parse_cidr("10.0.0.0/24")) == "10.0.0.0/24"
    for bad in ("10.0.0.1/24", "10.0.0.0/33", "10.0.0.0", "fd00::1/64", "bogus"):
        with pytest.raises(InvalidInput):
            ipam.parse_cidr(bad)


def test_default_pools_leave_out_gateway_network_and_broadcast():
    net = ipaddress.ip_network("192.168.1.0/24")
    assert ipam.default_gateway(net) == "192.168.1.1"
    assert ipam.default_pools(net, "192.168.1.1") == [
        {"start": "192.168.1.2", "end": "192.168.1.254"}
    ]
    assert ipam.default_pools(net, "192.168.1.100") == [
        {"start": "192.168.1.1", "end": "192.168.1.99"},
        {"start": "192.168.1.101", "end": "192.168.1.254"},
    ]


def test_pools_must_fit_the_subnet_not_overlap_and_not_hold_the_gateway():
    net = ipaddress.ip_network("10.0.0.0/24")
    ipam.check_pools(net, [{"start": "10.0.0.10", "end": "10.0.0.20"}], "10.0.0.1")
    cases = [
        [{"start": "10.0.0.10", "end": "10.0.1.20"}],
        [{"start": "10.0.0.10", "end": "10.0.0.20"}, {"start": "10.0.0.15", "end": "10.0.0.30"}],
        [{"start": "10.0.0.1", "end": "10.0.0.20"}],
        [{"start": "10.0.0.30", "end": "10.0.0.20"}],
    ]
    for pools in cases:
        with pytest.raises(InvalidInput):
            ipam.check_pools(net, pools, "10.0.0.1")


def test_random_candidates_stay_in_the_pools_and_are_distinct():
    pools = [{"start": "10.0.0.2", "end": "10.0.0.5"}, {"start": "10.0.0.9", "end": "10.0.0.9"}]
    allowed = {"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.9"}
    for _ in range(50):
        picks = ipam.random_candidates(pools, 16)
        assert set(picks) <= allowed and len(picks) == len(set(picks))
    assert list(ipam.iter_pool_addresses(pools)) == sorted(allowed)


def test_prefix_allocation_skips_used_prefixes():
    assert ipam.allocate_prefix(["10.10.0.0/16"], [], 24) == "10.10.0.0/24"
    assert ipam.allocate_prefix(["10.10.0.0/16"], ["10.10.0.0/23"], 24) == "10.10.2.0/24"
    assert ipam.allocate_prefix(["10.10.0.0/24"], ["10.10.0.0/24"], 26) is None


def test_macs_are_in_the_openstack_range():
    for _ in range(20):
        mac = ipam.random_mac()
        assert mac.startswith("fa:16:3e:") and ipam.valid_mac(mac)
    assert not ipam.valid_mac("01:00:5e:00:00:01")  # multicast
