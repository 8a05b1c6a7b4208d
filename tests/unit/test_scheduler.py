"""Scheduler filters and weighers, one behaviour each."""

from __future__ import annotations

import pytest

from cumulo.compute.scheduler.filters import (
    AvailabilityZoneFilter,
    ComputeFilter,
    CoreFilter,
    DiskFilter,
    ImagePropertiesFilter,
    RamFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from cumulo.compute.scheduler.filters.host_affinity import DifferentHostFilter, SameHostFilter
from cumulo.compute.scheduler.host_state import HostState, RequestSpec
from cumulo.compute.scheduler.select import NoValidHost, select_destinations
from cumulo.compute.scheduler.weights import default_weighers


def host(name: str, **kw) -> HostState:
    base = {"vcpus": 4, "memory_mb": 8192, "local_gb": 100}
    return HostState(host=name, node=name, **{**base, **kw})


TINY = RequestSpec(vcpus=1, memory_mb=512, disk_gb=1)


def test_compute_filter_drops_disabled_and_down_hosts():
    f = ComputeFilter()
    assert f.host_passes(host("a"), TINY)
    assert not f.host_passes(host("a", enabled=False), TINY)
    assert not f.host_passes(host("a", up=False), TINY)


def test_ram_filter_counts_ratio_and_reserve():
    f = RamFilter()
    spec = RequestSpec(vcpus=1, memory_mb=4096, disk_gb=0)
    assert f.host_passes(host("a", memory_mb_used=4096), spec)
    assert not f.host_passes(host("a", memory_mb_used=4097), spec)
    assert f.host_passes(host("a", memory_mb_used=8192, ram_allocation_ratio=1.5), spec)
    assert not f.host_passes(host("a", reserved_host_memory_mb=4097), spec)


def test_core_filter_overcommits_by_ratio():
    f = CoreFilter()
    assert f.host_passes(host("a", vcpus_used=15), TINY)  # 4 cores * 4.0
    assert not f.host_passes(host("a", vcpus_used=16), TINY)
    assert not f.host_passes(host("a", vcpus_used=4, cpu_allocation_ratio=1.0), TINY)


def test_disk_filter():
    f = DiskFilter()
    assert f.host_passes(host("a", local_gb_used=99), TINY)
    assert not f.host_passes(host("a", local_gb_used=100), TINY)


def test_availability_zone_filter():
    f = AvailabilityZoneFilter()
    assert f.host_passes(host("a", availability_zone="az1"), TINY)
    zoned = RequestSpec(vcpus=1, memory_mb=1, disk_gb=0, availability_zone="az2")
    assert not f.host_passes(host("a", availability_zone="az1"), zoned)
    assert f.host_passes(host("a", availability_zone="az2"), zoned)


@pytest.mark.parametrize(
    ("props", "hv", "arch", "ok"),
    [
        ({}, "qemu", "x86_64", True),
        ({"hypervisor_type": "qemu"}, "kvm", "x86_64", True),
        ({"hypervisor_type": "fake"}, "qemu", "x86_64", False),
        ({"architecture": "amd64"}, "qemu", "x86_64", True),
        ({"architecture": "aarch64"}, "qemu", "x86_64", False),
    ],
)
def test_image_properties_filter(props, hv, arch, ok):
    spec = RequestSpec(vcpus=1, memory_mb=1, disk_gb=0, image_properties=props)
    assert (
        ImagePropertiesFilter().host_passes(host("a", hypervisor_type=hv, cpu_arch=arch), spec)
        is ok
    )


def test_server_group_filters():
    aff = RequestSpec(vcpus=1, memory_mb=1, disk_gb=0, group_policy="affinity", group_hosts={"a"})
    anti = RequestSpec(
        vcpus=1, memory_mb=1, disk_gb=0, group_policy="anti-affinity", group_hosts={"a"}
    )
    assert ServerGroupAffinityFilter().host_passes(host("a"), aff)
    assert not ServerGroupAffinityFilter().host_passes(host("b"), aff)
    assert not ServerGroupAntiAffinityFilter().host_passes(host("a"), anti)
    assert ServerGroupAntiAffinityFilter().host_passes(host("b"), anti)


def test_same_and_different_host_hints():
    hosts = [host("a"), host("b"), host("c")]
    same = RequestSpec(vcpus=1, memory_mb=1, disk_gb=0, same_hosts={"b"})
    [chosen] = select_destinations(hosts, same, [None])
    assert chosen.host == "b"
    different = RequestSpec(vcpus=1, memory_mb=1, disk_gb=0, different_hosts={"a", "b"})
    [chosen] = select_destinations(hosts, different, [None])
    assert chosen.host == "c"
    nowhere = RequestSpec(vcpus=1, memory_mb=1, disk_gb=0, same_hosts=set())
    assert not SameHostFilter().host_passes(host("a"), nowhere)
    assert DifferentHostFilter().host_passes(host("a"), TINY)
    with pytest.raises(NoValidHost):
        select_destinations(hosts, nowhere, [None])


def test_spread_picks_the_emptiest_host_and_stack_the_fullest():
    hosts = [host("busy", memory_mb_used=6000, vcpus_used=6), host("idle")]
    assert select_destinations(hosts, RequestSpec(1, 512, 1))[0].host == "idle"
    hosts = [host("busy", memory_mb_used=6000, vcpus_used=6), host("idle")]
    stacked = select_destinations(
        hosts, RequestSpec(1, 512, 1), weighers=default_weighers(spread=False)
    )
    assert stacked[0].host == "busy"


def test_multiple_instances_consume_as_they_are_placed():
    hosts = [host("a", memory_mb=1024), host("b", memory_mb=1024)]
    chosen = select_destinations(hosts, RequestSpec(1, 1024, 0, num_instances=2))
    assert sorted(h.host for h in chosen) == ["a", "b"]
    with pytest.raises(NoValidHost):
        select_destinations(hosts, RequestSpec(1, 1024, 0))


def test_anti_affinity_spreads_members_and_runs_out():
    hosts = [host("a"), host("b")]
    spec = RequestSpec(1, 512, 1, num_instances=2, group_policy="anti-affinity")
    assert sorted(h.host for h in select_destinations(hosts, spec)) == ["a", "b"]
    with pytest.raises(NoValidHost):
        select_destinations(
            hosts, RequestSpec(1, 512, 1, group_policy="anti-affinity", group_hosts={"a", "b"})
        )


def test_affinity_keeps_members_together():
    hosts = [host("a"), host("b")]
    spec = RequestSpec(1, 512, 1, num_instances=3, group_policy="affinity")
    assert len({h.host for h in select_destinations(hosts, spec)}) == 1


def test_force_and_ignore_hosts():
    hosts = [host("a"), host("b"), host("c")]
    assert select_destinations(hosts, RequestSpec(1, 1, 0, force_hosts=["c"]))[0].host == "c"
    picked = select_destinations(hosts, RequestSpec(1, 1, 0, ignore_hosts={"a", "b"}))
    assert picked[0].host == "c"
