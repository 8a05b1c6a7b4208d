"""Real guests on the openvswitch data plane: two QEMU guests on one tenant network, their
taps on br-int through OVSDB (userspace datapath here), reach each other only once
their security group lets ICMP in (Open vSwitch's conntrack firewall flows), as they do
on linuxbridge (test_qemu_cloud_guests.py, whose cloud and checks this reuses)."""

from __future__ import annotations

import shutil

import pytest

from cumulo.network.dataplane import openvswitch
from tests.conftest import skip_or_fail
from tests.e2e.test_qemu_cloud_guests import guest_pair, icmp_only_once_allowed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def guests(tmp_path_factory):
    missing = [t for t in openvswitch.TOOLS if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the openvswitch data plane needs: {', '.join(missing)}")
    with guest_pair(tmp_path_factory, "e2e-ovs-guests", "openvswitch") as g:
        yield g


def test_guests_on_openvswitch_ping_each_other_only_once_their_group_allows_icmp(guests):
    icmp_only_once_allowed(guests)
