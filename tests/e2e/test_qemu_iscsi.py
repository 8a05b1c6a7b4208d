"""iSCSI volumes in real QEMU guests: the file backend exports them through tgtd (target
per volume, CHAP, initiator ACL), the QEMU driver logs in with QEMU's own initiator
(libiscsi). A guest of an image with hw_scsi_model=virtio-scsi reads what the host wrote
on a volume attached as a virtio disk and writes back (and sees it grow: the LUN re-added
at its new size); a volume with device_type lun is its SCSI disk sda, whose SCSI INQUIRY
is tgt's (the commands pass through: scsi-block, not QEMU's emulated disk), written
through to the file; a lun hot-plugs and unplugs; no CHAP password is on QEMU's command
line; a portal on the host's loopback is reached from a network namespace through the
driver's relay; and a migration writes into an iSCSI volume through libiscsi.

Skipped when QEMU, tgt or the tiny guest's packages are unavailable (failed under CI).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from cumulo.compute.virt.driver import BlockDevice, ImageSpec
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.compute.virt.qemu_iscsi import PortalRelays
from cumulo.metadata import InstanceMetadata, config_drive_files
from cumulo.testing.guest import MARK, TinyGuest
from cumulo.volume.drivers.file import FileDriver
from cumulo.volume.drivers.tgt import IscsiExports, migration_initiator
from tests.conftest import skip_or_fail
from tests.e2e import test_qemu_driver as plain
from tests.e2e.test_qemu_driver import disks_seen, guest_spec, wait_console, wait_guest_sees
from tests.functional.test_volume_iscsi import login, refused_as_unknown

tiny_guest = plain.tiny_guest
state_dir = plain.state_dir
driver = plain.driver

pytestmark = pytest.mark.e2e

# What the guest does once up: find the virtio disk by its serial, print its first
# bytes, write after them; print `lsblk -S`; write on the LUN.
USER_DATA = """#!/bin/sh
for d in /sys/block/vd*; do
    [ "$(cat $d/serial 2>/dev/null)" = "@SERIAL@" ] && disk=/dev/${d##*/}
done
echo "iscsi-read $(dd if=$disk bs=32 count=1 2>/dev/null | tr -d '\\0')"
echo "@GUEST@" | dd of=$disk bs=512 seek=1 conv=sync 2>/dev/null
echo "@LUN@" | dd of=/dev/sda bs=512 seek=2 conv=sync 2>/dev/null
sync
echo iscsi-lsblk-begin; lsblk -S; echo iscsi-lsblk-end
echo iscsi-done
"""


@pytest.fixture(scope="module")
async def storage(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("tgtd") is None:
        skip_or_fail("tgtd is not installed (the Debian package tgt)")
    root = tmp_path_factory.mktemp("iscsi-volumes")
    backend = FileDriver(
        root, host="storage", iscsi=IscsiExports(root / ".iscsi", "127.0.0.1", 3260)
    )
    yield backend
    for name in backend.volume_files():
        await backend.delete_volume(name.removeprefix("volume-"))


async def iscsi_volume(
    storage: FileDriver, driver: QemuDriver, attachment: str, **mapping
) -> BlockDevice:
    volume_id = str(uuid.uuid4())
    await storage.create_volume(volume_id, 1)
    connector = driver.volume_connector("e2e-host")
    info = await storage.initialize_connection(volume_id, attachment, connector, "rw")
    assert info["driver_volume_type"] == "iscsi"
    return BlockDevice(volume_id, "/dev/sdb", info, **mapping)


def at(path: Path, offset: int, size: int = 32) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


async def test_a_guest_reads_and_writes_iscsi_volumes_and_sees_a_lun_as_sda(
    driver: QemuDriver, tiny_guest: TinyGuest, storage: FileDriver, state_dir: Path
) -> None:
    disk = await iscsi_volume(storage, driver, "att-disk")
    lun = await iscsi_volume(storage, driver, "att-lun", device_type="lun", disk_bus="scsi")
    host_wrote = f"HOST-{secrets.token_hex(6)}".encode()
    with storage.path(disk.volume_id).open("r+b") as f:
        f.write(host_wrote)
    guest_wrote, lun_wrote = f"GUEST-{secrets.token_hex(6)}", f"LUN-{secrets.token_hex(6)}"
    spec = guest_spec(tiny_guest, "vm-iscsi")
    assert spec.image is not None
    user_data = (
        USER_DATA.replace("@SERIAL@", disk.volume_id[:20])
        .replace("@GUEST@", guest_wrote)
        .replace("@LUN@", lun_wrote)
    )
    meta = InstanceMetadata(
        uuid=spec.uuid, name=spec.name, hostname=spec.name, project_id="p" * 32,
        availability_zone="nova", user_data=user_data.encode(),
    )  # fmt: skip
    image = ImageSpec(
        **{**dataclasses.asdict(spec.image), "properties": {
            **spec.image.properties, "hw_scsi_model": "virtio-scsi"}}
    )  # fmt: skip
    spec = dataclasses.replace(
        spec, image=image, config_drive=config_drive_files(meta), block_devices=(disk, lun)
    )
    await driver.spawn(spec)
    try:
        console = await wait_console(driver, spec.uuid, "iscsi-done", timeout=120)
        assert f"iscsi-read {host_wrote.decode()}" in console
        assert at(storage.path(disk.volume_id), 512).startswith(guest_wrote.encode())
        assert at(storage.path(lun.volume_id), 1024).startswith(lun_wrote.encode())
        listing = console.split("iscsi-lsblk-begin", 1)[1].split("iscsi-lsblk-end", 1)[0]
        rows = [line.split() for line in listing.strip().splitlines()]
        assert rows[0] == ["NAME", "HCTL", "TYPE", "VENDOR", "MODEL", "REV", "SERIAL", "TRAN"]
        assert "\nsda " in listing.replace("\r", "")
        # tgt's own INQUIRY answer (vendor IET): the guest talks to the LUN, not to QEMU.
        [sda] = [row for row in rows if row[0] == "sda"]
        assert sda[2:5] == ["disk", "IET", "VIRTUAL-DISK"]
        for pid in plain.qemu_pids(spec.uuid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            for device in (disk, lun):
                assert device.connection_info["data"]["auth_password"].encode() not in cmdline

        # Grown while attached: the LUN leaves the target and comes back at its new size
        # (Cinder's extend_target); the guest's disk is block_resize'd to it.
        await storage.extend_volume(disk.volume_id, 2)
        await driver.extend_volume(spec.uuid, disk.volume_id)
        nodes = await plain.qmp_query(state_dir, spec.uuid, "query-named-block-nodes")
        sizes = {n["node-name"]: n["image"]["virtual-size"] for n in nodes}
        assert sizes[f"vol-{disk.volume_id[:12]}"] == 2 * 1024**3

        # A second LUN hot-plugs onto the SCSI controller and unplugs.
        console = await wait_console(driver, spec.uuid, f"{MARK} ready")
        before = disks_seen(console)
        assert "sda" in before
        extra = await iscsi_volume(storage, driver, "att-extra", device_type="lun")
        await driver.attach_volume(spec.uuid, extra)
        seen = await wait_guest_sees(
            driver, spec.uuid, lambda c: "sdb" in disks_seen(c), "the LUN never came"
        )
        assert set(disks_seen(seen)) == {*before, "sdb"}
        await driver.detach_volume(spec.uuid, extra.volume_id)
        await wait_guest_sees(
            driver, spec.uuid, lambda c: "sdb" not in disks_seen(c), "the LUN never left"
        )
        await storage.terminate_connection(extra.volume_id, "att-extra")
        assert not storage.iscsi.exporting(extra.volume_id)
    finally:
        await driver.destroy(spec.uuid)
    for device, attachment in ((disk, "att-disk"), (lun, "att-lun")):
        await storage.terminate_connection(device.volume_id, attachment)
    assert f"{MARK} ready" in console


async def test_a_portal_on_the_hosts_loopback_is_relayed_into_a_namespace(
    storage: FileDriver, driver: QemuDriver, tmp_path: Path
) -> None:
    if shutil.which("ip") is None:
        skip_or_fail("iproute2 is not installed")
    volume = await iscsi_volume(storage, driver, "att-relay")
    data = volume.connection_info["data"]
    namespace = f"iscsi-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    relays = PortalRelays()
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        port = await relays.port(namespace, data["target_portal"])
        assert await relays.port(namespace, data["target_portal"]) == port  # one per portal
        initiator = driver.volume_connector("e2e-host")["initiator"]
        relayed = await asyncio.to_thread(
            login, data, initiator, tmp_path, portal=f"127.0.0.1:{port}", netns=namespace
        )
        assert relayed == ""
    finally:
        await relays.close()
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
        await storage.terminate_connection(volume.volume_id, "att-relay")


async def test_a_migration_writes_into_an_iscsi_volume_through_libiscsi(
    storage: FileDriver, tmp_path: Path
) -> None:
    """Cinder's host-copy migration onto an iSCSI backend: the source backend's host logs
    in as its migration initiator and qemu-img writes every block."""
    source = FileDriver(tmp_path / "source", host="storage")
    volume_id, new_id = str(uuid.uuid4()), str(uuid.uuid4())
    await source.create_volume(volume_id, 1)
    written = f"MOVED-{secrets.token_hex(6)}".encode()
    with source.path(volume_id).open("r+b") as f:
        f.seek(4096)
        f.write(written)
    await storage.create_volume(new_id, 1)
    connector = {"host": "storage", "initiator": migration_initiator("storage")}
    info = await storage.initialize_connection(new_id, "migration", connector, "rw")
    await source.copy_volume_to(volume_id, info)
    assert at(storage.path(new_id), 4096, len(written)) == written
    await storage.terminate_connection(new_id, "migration")
    await storage.delete_volume(new_id)


async def test_exports_tgtd_lost_are_made_again_when_the_backend_starts(
    storage: FileDriver, driver: QemuDriver, tmp_path: Path
) -> None:
    """A tgtd that restarted (a host reboot) has no targets: the volume service's start
    (ensure_exports, Cinder's ensure_export) makes them again, its hosts let in."""
    volume = await iscsi_volume(storage, driver, "att-restore")
    data = volume.connection_info["data"]
    shown = subprocess.run(
        ["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    tid = next(
        line.split()[1].rstrip(":")
        for line in shown.splitlines()
        if line.startswith("Target ") and line.endswith(data["target_iqn"])
    )
    subprocess.run(
        ["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force",
         "--tid", tid], check=True,
    )  # fmt: skip
    initiator = driver.volume_connector("e2e-host")["initiator"]
    assert refused_as_unknown(data, initiator, tmp_path)
    await storage.ensure_exports()
    assert login(data, initiator, tmp_path) == ""
    assert "Target not found" in login(data, "iqn.2008-11.org.linux-kvm:other", tmp_path)
    await storage.terminate_connection(volume.volume_id, "att-restore")
    await storage.delete_volume(volume.volume_id)
