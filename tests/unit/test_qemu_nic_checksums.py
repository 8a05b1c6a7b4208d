"""Guests on Open vSwitch's userspace datapath checksum their own frames.

OVS's userspace datapath (`datapath_type=netdev`, where the host has no OVS kernel
module) drops frames whose checksum was left to the device when it sends them into a
VXLAN tunnel. So the QEMU driver gives such a guest a virtio-net NIC without checksum
offload (`csum=off`), and the agent turns transmit checksumming off on the namespace
end of each DHCP and router leg it makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.compute.network import vifs_from_info, with_bindings
from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import Vif
from cumulo.compute.virt.qemu import _checksum_offload
from cumulo.network.dataplane import commands as cmd
from cumulo.network.dataplane.openvswitch import OpenvSwitchDriver

MAC = "fa:16:3e:00:00:01"


def info(datapath_type: str | None) -> list[dict]:
    return [
        {"port_id": "p1", "mac": MAC, "network_id": "n1", "fixed_ips": [], "mtu": 1450,
         "bridge": "br-int", "netns": "cmlo-x-host", "ovsdb": "unix:/x/db.sock",
         "datapath_type": datapath_type}
    ]  # fmt: skip


def test_the_port_bindings_datapath_reaches_the_guests_nic():
    [vif] = vifs_from_info(info("netdev"))
    assert vif.datapath_type == "netdev" and not _checksum_offload(vif)
    [vif] = vifs_from_info(info("system"))
    assert _checksum_offload(vif)  # the kernel datapath tunnels them itself
    # A Linux bridge (no ovsdb) keeps the offload whatever else the binding says.
    assert _checksum_offload(Vif("p1", MAC, "n1", bridge="cmlo-b1", datapath_type="netdev"))
    # A move rebinds the ports: the destination's datapath is the one that counts.
    moved = with_bindings(
        info("system"),
        {"p1": {"vif_details": {"bridge_name": "br-int", "ovsdb": "unix:/y/db.sock",
                                "netns": "cmlo-y-host", "datapath_type": "netdev"}}},
    )  # fmt: skip
    assert not _checksum_offload(vifs_from_info(moved)[0])


def test_a_nic_without_checksum_offload_is_virtio_net_with_csum_off():
    plain = qp.nic_args(qp.Nic("tapp1", MAC))
    assert "csum" not in plain
    args = qp.nic_args(qp.Nic("tapp1", MAC, checksum_offload=False))
    assert args["csum"] is False and args["driver"] == "virtio-net-pci"
    # guest.json written before the field existed still loads (offload on).
    assert qp.Nic(**{"tap": "tapp1", "mac": MAC, "slot": None}).checksum_offload


@pytest.mark.parametrize(("datapath", "expected"), [("netdev", True), ("system", False)])
async def test_a_new_leg_checksums_in_its_namespace_on_the_userspace_datapath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, datapath: str, expected: bool
):
    ran: list[tuple[str, ...]] = []

    async def run(*argv: str, check: bool = True) -> str:
        ran.append(argv)
        return ""

    monkeypatch.setattr(cmd, "run", run)
    driver = OpenvSwitchDriver(tmp_path)
    driver.datapath = datapath
    await driver._leg_made("cmlo-x-dhcp-n1", "ns-1234")
    wanted = ("ip", "netns", "exec", "cmlo-x-dhcp-n1", "ethtool", "-K", "ns-1234", "tx", "off")
    assert (ran == [wanted]) is expected and (ran == []) is not expected
