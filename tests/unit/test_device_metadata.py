"""Device role tagging: the tags a user gives NICs and volumes, joined to where the
hypervisor puts them, shown in meta_data.json's `devices` as Nova's metadata API shows
them (only tagged devices; `vlan` from 2017-02-22, `vf_trusted` from 2018-08-27)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.compute.device_metadata import build_device_metadata
from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import (
    BlockDevice,
    DeviceAddress,
    DriverError,
    FlavorSpec,
    GuestSpec,
    Vif,
    pci_address,
)
from cumulo.compute.virt.fake import FakeDriver
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.metadata import InstanceMetadata, meta_data, openstack_files
from cumulo.metadata.content import devices

NIC_MAC, OTHER_MAC = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"
VOLUME, OTHER_VOLUME = (
    "5d1e0f8a-0000-4000-8000-00000000000a",
    "5d1e0f8a-0000-4000-8000-00000000000b",
)
NETWORK_INFO = [
    {"port_id": "p1", "mac": NIC_MAC, "network_id": "n1", "fixed_ips": [], "tag": "uplink"},
    {"port_id": "p2", "mac": OTHER_MAC, "network_id": "n1", "fixed_ips": [], "tag": None},
]
ADDRESSES = (
    DeviceAddress("disk", VOLUME, "pci", "0000:00:0b.0"),
    DeviceAddress("disk", OTHER_VOLUME, "pci", "0000:00:0c.0"),
    DeviceAddress("nic", NIC_MAC, "pci", "0000:00:0d.0"),
    DeviceAddress("nic", OTHER_MAC, "pci", "0000:00:0e.0"),
)
FLAVOR = FlavorSpec("m1.tiny", vcpus=1, memory_mb=512, root_gb=1)


def guest(uuid: str = "u1", volumes: tuple[str, ...] = (VOLUME,)) -> GuestSpec:
    return GuestSpec(
        uuid=uuid,
        name="vm",
        hostname="vm",
        flavor=FLAVOR,
        image=None,
        vifs=(Vif("p1", NIC_MAC, "n1"), Vif("p2", OTHER_MAC, "n1")),
        block_devices=tuple(
            BlockDevice(v, f"/dev/vd{'bc'[i]}", {"driver_volume_type": "file", "data": {}})
            for i, v in enumerate(volumes)
        ),
    )


def instance(device_metadata: list[dict]) -> InstanceMetadata:
    return InstanceMetadata(
        uuid="i1", name="vm", hostname="vm", project_id="p", devices=tuple(device_metadata)
    )


def test_only_tagged_devices_are_recorded_with_where_the_guest_finds_them():
    recorded = build_device_metadata(ADDRESSES, NETWORK_INFO, {VOLUME: "database"})
    assert recorded == [
        {
            "type": "disk",
            "bus": "pci",
            "address": "0000:00:0b.0",
            "serial": VOLUME,
            "tags": ["database"],
        },
        {
            "type": "nic",
            "bus": "pci",
            "address": "0000:00:0d.0",
            "mac": NIC_MAC,
            "tags": ["uplink"],
            "vf_trusted": False,
        },
    ]


def test_meta_data_json_lists_the_tagged_devices_as_nova_does():
    inst = instance(build_device_metadata(ADDRESSES, NETWORK_INFO, {VOLUME: "database"}))
    assert meta_data(inst)["devices"] == [
        {
            "type": "disk",
            "serial": VOLUME,
            "bus": "pci",
            "address": "0000:00:0b.0",
            "tags": ["database"],
        },
        {
            "vf_trusted": False,
            "type": "nic",
            "mac": NIC_MAC,
            "bus": "pci",
            "address": "0000:00:0d.0",
            "tags": ["uplink"],
        },
    ]


def test_each_key_appears_from_its_metadata_version():
    nic = {"type": "nic", "bus": "pci", "address": "0000:00:0d.0", "mac": NIC_MAC}
    inst = instance([{**nic, "tags": ["a"], "vlan": 100, "vf_trusted": True}])
    assert "devices" not in meta_data(inst, "2015-10-15")
    assert devices(inst, "2016-06-30") == [{**nic, "tags": ["a"]}]
    assert devices(inst, "2017-02-22") == [{**nic, "tags": ["a"], "vlan": 100}]
    assert devices(inst, "2018-08-27") == [{**nic, "tags": ["a"], "vlan": 100, "vf_trusted": True}]
    # Every version's meta_data.json carries them (the config drive has them all).
    files = openstack_files(inst, "2016-06-30")
    assert b'"tags": ["a"]' in files["meta_data.json"]


def test_a_nic_with_nothing_to_say_is_left_out_before_rocky():
    # Nova shows a NIC only for its tags, VLAN or (from 2018-08-27) vf_trusted.
    bare = {"type": "nic", "bus": "pci", "address": "0000:00:0d.0", "mac": NIC_MAC}
    inst = instance([bare])
    assert devices(inst, "2016-06-30") == []
    assert devices(inst, "2018-08-27") == [{**bare, "vf_trusted": False}]


def test_devices_on_unknown_buses_are_left_out_and_missing_ones_say_none():
    inst = instance(
        [
            {"type": "disk", "bus": "virtio-mmio", "address": "x", "serial": VOLUME, "tags": ["a"]},
            {"type": "disk", "serial": VOLUME, "path": "/dev/sdb", "tags": ["b"]},
            {"type": "share", "bus": "pci", "address": "0000:00:10.0", "tags": ["c"]},
        ]
    )
    assert devices(inst) == [
        {
            "type": "disk",
            "serial": VOLUME,
            "path": "/dev/sdb",
            "bus": "none",
            "address": "none",
            "tags": ["b"],
        }
    ]


# -- the fake driver -------------------------------------------------------------------------


async def test_fake_driver_keeps_each_device_in_its_slot():
    driver = FakeDriver()
    spec = guest()
    await driver.spawn(spec)
    at_boot = await driver.get_device_addresses("u1")
    assert at_boot == driver.device_layout(spec)
    assert [(a.kind, a.id, a.address) for a in at_boot] == [
        ("disk", VOLUME, "0000:00:04.0"),
        ("nic", NIC_MAC, "0000:00:05.0"),
        ("nic", OTHER_MAC, "0000:00:06.0"),
    ]
    await driver.detach_interface("u1", "p1")
    info = {"driver_volume_type": "file", "data": {}}
    await driver.attach_volume("u1", BlockDevice(OTHER_VOLUME, "/dev/vdc", info))
    await driver.power_off("u1")
    await driver.power_on("u1")
    # The freed slot is taken by the next device; the others stay where they were.
    now = {(a.kind, a.id): a.address for a in await driver.get_device_addresses("u1")}
    assert now == {
        ("disk", VOLUME): "0000:00:04.0",
        ("disk", OTHER_VOLUME): "0000:00:05.0",
        ("nic", OTHER_MAC): "0000:00:06.0",
    }
    await driver.detach_volume("u1", OTHER_VOLUME)
    assert ("disk", OTHER_VOLUME) not in {
        (a.kind, a.id) for a in await driver.get_device_addresses("u1")
    }


# -- the QEMU driver's PCI layout ---------------------------------------------------------------


def test_qemu_gives_volumes_then_nics_the_free_slots_after_the_local_disks(tmp_path: Path):
    driver = QemuDriver(tmp_path, "h1", accel="tcg")
    layout = driver.device_layout(guest(volumes=(VOLUME, OTHER_VOLUME)))
    assert [(a.kind, a.id, a.bus, a.address) for a in layout] == [
        ("disk", VOLUME, "pci", pci_address(qp.FIRST_FREE_SLOT)),
        ("disk", OTHER_VOLUME, "pci", pci_address(qp.FIRST_FREE_SLOT + 1)),
        ("nic", NIC_MAC, "pci", pci_address(qp.FIRST_FREE_SLOT + 2)),
        ("nic", OTHER_MAC, "pci", pci_address(qp.FIRST_FREE_SLOT + 3)),
    ]
    assert min(qp.DISK_SLOTS.values()) > qp.SLOT_USB and max(qp.DISK_SLOTS.values()) < (
        qp.FIRST_FREE_SLOT
    )


def test_qemu_command_line_puts_every_pci_device_in_its_slot(tmp_path: Path):
    machine = qp.MachineConfig(
        uuid="u1",
        name="vm",
        vcpus=1,
        memory_mb=256,
        accel="tcg",
        drives=[
            qp.Drive("root", "/d/disk", "qcow2", slot=qp.DISK_SLOTS["root"]),
            qp.Drive("vol-1", "/d/vol", "raw", serial="v1", slot=0x0B),
        ],
        nics=[qp.Nic("tapp1", NIC_MAC, slot=0x0C)],
        guest_agent=True,
    )
    argv = qp.command_line(machine, tmp_path, qmp_fd=3)
    devices_ = " ".join(argv[i + 1] for i, a in enumerate(argv) if a == "-device")
    assert '"addr": "07.0"' in devices_ and '"addr": "0b.0"' in devices_
    assert f'"mac": "{NIC_MAC}"' in devices_ and '"addr": "0c.0"' in devices_
    assert "virtio-serial-pci,id=virtio-serial0,addr=03.0" in devices_


def test_qemu_hot_plugs_take_the_lowest_free_slot_and_a_rescue_disk_comes_last():
    record = {
        "machine": {
            "drives": [{"node": "root", "slot": 0x07}, {"node": "config", "slot": 0x0A}],
            "nics": [{"tap": "tapa", "mac": NIC_MAC, "slot": 0x0C}],
        },
        "volumes": {VOLUME: {"node": "vol-a", "slot": 0x0D}},
    }
    assert qp.used_slots(record) == {0x07, 0x0A, 0x0C, 0x0D}
    assert qp.free_slot(qp.used_slots(record)) == 0x0B
    assert qp.slot_after_disks(record) == 0x0E
    full = {slot for slot in range(qp.FIRST_FREE_SLOT, qp.LAST_SLOT + 1)}
    with pytest.raises(DriverError):
        qp.free_slot(full)
