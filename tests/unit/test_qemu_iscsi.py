"""iSCSI volumes on the QEMU driver: Block Storage's `driver_volume_type: iscsi` becomes
QEMU's own initiator (the iscsi block driver) logging in with the host's initiator name
and CHAP from a secret object (never the password in argv); a volume is a virtio disk,
a scsi-hd on the virtio-scsi controller (disk_bus scsi), or with device_type lun a
scsi-block that passes SCSI commands through to the LUN; a lun over NBD or a file is
refused before anything is plugged, as are buses and SCSI models QEMU is not given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import BlockDevice, DriverError, initiator_name
from cumulo.compute.virt.qemu import _drive_secrets, _volume_drive
from cumulo.compute.virt.qemu_iscsi import scsi_model

VOLUME = "0123456789ab-cdef-0123-4567-89abcdef0123"
GUEST = "11111111-2222-3333-4444-555555555555"
PASSWORD = "s3cretCHAPpassw0rd20"
IQN = f"iqn.2010-10.org.openstack:volume-{VOLUME}"
INITIATOR = initiator_name("compute-1")


def iscsi_device(**mapping) -> BlockDevice:
    data = {
        "target_portal": "192.0.2.7:3260",
        "target_iqn": IQN,
        "target_lun": 1,
        "auth_method": "CHAP",
        "auth_username": "chapuser",
        "auth_password": PASSWORD,
        "access_mode": "rw",
        "volume_id": VOLUME,
    }
    return BlockDevice(VOLUME, "/dev/sdb", {"driver_volume_type": "iscsi", "data": data}, **mapping)


def test_the_initiator_name_is_an_iqn_of_the_host() -> None:
    assert initiator_name("Compute_1.example") == "iqn.2008-11.org.linux-kvm:compute-1.example"


def test_a_lun_is_scsi_block_on_the_iscsi_node_itself() -> None:
    drive = _volume_drive(iscsi_device(device_type="lun", disk_bus="scsi"), 0x0B, INITIATOR)
    assert (drive.bus, drive.media, drive.slot, drive.protocol) == ("scsi", "lun", None, "iscsi")
    assert drive.path == f"iscsi://192.0.2.7:3260/{IQN}/1"
    assert qp.blockdev_args(drive) == {
        "driver": "iscsi",
        "node-name": drive.node,
        "transport": "tcp",
        "portal": "192.0.2.7:3260",
        "target": IQN,
        "lun": 1,
        "read-only": False,
        "initiator-name": INITIATOR,
        "user": "chapuser",
        "password-secret": f"{drive.node}-chap",
    }
    # scsi-block has no serial of its own: the LUN's inquiry data is the target's.
    assert qp.device_args(drive) == {"driver": "scsi-block", "bus": "scsi0.0", "drive": drive.node,
                                     "id": drive.node}  # fmt: skip


def test_a_lun_defaults_to_the_scsi_bus_and_a_scsi_disk_is_scsi_hd() -> None:
    assert _volume_drive(iscsi_device(device_type="lun"), 0x0B, INITIATOR).bus == "scsi"
    disk = _volume_drive(iscsi_device(disk_bus="scsi"), 0x0B, INITIATOR)
    assert qp.device_args(disk)["driver"] == "scsi-hd"
    assert qp.blockdev_args(disk)["driver"] == "raw"  # a format node over the LUN
    assert qp.blockdev_args(disk)["file"]["driver"] == "iscsi"


def test_an_iscsi_virtio_disk_reaches_the_portal_through_its_relay() -> None:
    drive = _volume_drive(iscsi_device(), 0x0C, INITIATOR)
    assert (drive.bus, drive.slot) == ("virtio", 0x0C)
    drive.relay_port = 41234
    assert qp.blockdev_args(drive)["file"]["portal"] == "127.0.0.1:41234"
    assert qp.device_args(drive)["driver"] == "virtio-blk-pci"


def test_the_chap_password_is_in_a_secret_file_never_in_argv(tmp_path: Path) -> None:
    device = iscsi_device(device_type="lun")
    drive = _volume_drive(device, None, INITIATOR)
    assert _drive_secrets(device, drive) == {f"{drive.node}-chap": PASSWORD}
    machine = qp.MachineConfig(GUEST, "vm", 1, 256, "tcg", drives=[drive])
    secret = tmp_path / "chap.key"
    argv = qp.command_line(machine, tmp_path, 3, secret_files={drive.chap_secret: secret})
    assert PASSWORD not in " ".join(argv)
    at = argv.index(f"secret,id={drive.chap_secret},file={secret},format=raw")
    assert argv[at - 1] == "-object"
    assert "virtio-scsi-pci,id=scsi0,addr=04.0" in argv
    with pytest.raises(DriverError, match="no CHAP password"):
        qp.command_line(machine, tmp_path, 3)
    assert json.dumps(drive.__dict__).count(PASSWORD) == 0  # what guest.json keeps


def test_an_image_with_hw_scsi_model_gives_a_controller_without_scsi_disks(tmp_path) -> None:
    machine = qp.MachineConfig(GUEST, "vm", 1, 256, "tcg", scsi_model="virtio-scsi")
    assert "virtio-scsi-pci,id=scsi0,addr=04.0" in qp.command_line(machine, tmp_path, 3)
    assert scsi_model({"hw_scsi_model": "virtio-scsi"}) == "virtio-scsi"
    assert scsi_model({}) is None
    with pytest.raises(DriverError, match="'lsisas1068' is not supported by the 'qemu'"):
        scsi_model({"hw_scsi_model": "lsisas1068"})


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("nbd", {"uri": "nbd://192.0.2.7:10809/v1"}),
        ("file", {"path": "/srv/volumes/volume-1"}),
    ],
)
def test_a_lun_over_a_transport_without_scsi_is_refused(kind: str, data: dict) -> None:
    device = BlockDevice(
        VOLUME, "/dev/sdb", {"driver_volume_type": kind, "data": data}, device_type="lun"
    )
    with pytest.raises(DriverError, match=f"serves it over {kind}, which does not pass SCSI"):
        _volume_drive(device, None, INITIATOR)


def test_buses_and_device_types_the_driver_does_not_give_are_refused() -> None:
    with pytest.raises(DriverError, match="'ide' is not supported"):
        _volume_drive(iscsi_device(disk_bus="ide"), None, INITIATOR)
    with pytest.raises(DriverError, match="'floppy' is not supported"):
        _volume_drive(iscsi_device(device_type="floppy"), None, INITIATOR)
    with pytest.raises(DriverError, match="device_type lun needs disk_bus scsi"):
        _volume_drive(iscsi_device(device_type="lun", disk_bus="virtio"), None, INITIATOR)


def test_chap_without_credentials_or_another_method_is_refused() -> None:
    device = iscsi_device()
    device.connection_info["data"].pop("auth_password")
    with pytest.raises(DriverError, match="has no credentials"):
        _volume_drive(device, None, INITIATOR)
    device = iscsi_device()
    device.connection_info["data"]["auth_method"] = "kerberos"
    with pytest.raises(DriverError, match="kerberos is not supported"):
        _volume_drive(device, None, INITIATOR)
