"""Real guests moved by the QEMU driver between two hosts (two drivers with their own
instance directories on this machine, reaching each other over 127.0.0.1):

- rescue boots the rescue image with the guest's own disk attached second;
- a cold migration copies the stopped guest's disk from the source's NBD export;
- a live migration moves the running guest — memory and, by block migration, its
  qcow2 overlay — and it keeps running: the counter it prints every second goes on
  from where it was on the source, with no boot in between.

Skipped with the reason when QEMU or the guest's packages are unavailable (failed
under CI)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from cumulo.compute.states import PowerState
from cumulo.compute.virt.driver import DriverError, FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.metadata import InstanceMetadata, config_drive_files
from cumulo.testing.guest import MARK, TinyGuest
from tests.e2e.test_qemu_driver import file_device, tiny_guest_with, volume_file

pytestmark = pytest.mark.e2e

FLAVOR = FlavorSpec("m1.tiny", vcpus=1, memory_mb=192, root_gb=1)
DISK_MARK = "cumulo-disk-mark"
# The guest writes a mark on its disk, then counts aloud every second (in the background).
USER_DATA = (
    "#!/bin/sh\n"
    f"echo {DISK_MARK}-$(cat /proc/sys/kernel/random/uuid) | dd of=/dev/vda bs=512 seek=64 "
    "conv=notrunc,fsync 2>/dev/null\n"
    '(i=0; while true; do i=$((i+1)); echo "tick $i" > /dev/console; sleep 1; done) &\n'
).encode()


@pytest.fixture(scope="module")
def tiny_guest() -> TinyGuest:
    return tiny_guest_with("qemu-nbd")


@pytest.fixture(scope="module")
def base_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base") / "base.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True, capture_output=True
    )
    return path


@pytest.fixture(scope="module")
async def hosts(tiny_guest: TinyGuest, tmp_path_factory):
    state = tmp_path_factory.mktemp("qemu-moves")
    pair = []
    for name in ("move-src", "move-dst"):
        driver = QemuDriver(state, name, accel="tcg", vnc=False, migration_address="127.0.0.1")
        await driver.init_host(name)
        pair.append(driver)
    yield pair
    for driver in pair:
        for guest in await driver.list_guests():
            await driver.destroy(guest)


def spec(tiny: TinyGuest, base: Path, guest_uuid: str | None = None, **meta) -> GuestSpec:
    guest_uuid = guest_uuid or str(uuid.uuid4())
    metadata = InstanceMetadata(
        uuid=guest_uuid,
        name="mover",
        hostname="mover",
        project_id="p" * 32,
        availability_zone="nova",
        user_data=USER_DATA,
        **meta,
    )
    return GuestSpec(
        uuid=guest_uuid,
        name="mover",
        hostname="mover",
        flavor=FLAVOR,
        image=ImageSpec(
            id="tiny-disk",
            disk_format="qcow2",
            path=str(base),
            kernel_path=str(tiny.kernel),
            ramdisk_path=str(tiny.initramfs),
            properties={"os_command_line": tiny.command_line},
        ),
        config_drive=config_drive_files(metadata),
    )


async def console_has(driver: QemuDriver, guest: str, pattern: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        console = await driver.get_console_output(guest)
        if re.search(pattern, console):
            return console
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not on the console of {guest}:\n{console[-2000:]}")
        await asyncio.sleep(0.3)


def disks_seen(console: str) -> list[str]:
    lines = [line for line in console.splitlines() if f"{MARK} disks" in line]
    return lines[-1].split(f"{MARK} disks", 1)[1].split() if lines else []


def disk_mark(driver: QemuDriver, guest: str) -> str:
    """The mark the guest wrote on its root disk, read from the host's qcow2 file."""
    raw = driver.instances_dir / guest / "disk.check"
    try:
        subprocess.run(
            ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
             str(driver.instances_dir / guest / "disk"), str(raw)],
            check=True, capture_output=True,
        )  # fmt: skip
        with open(raw, "rb") as f:
            f.seek(64 * 512)
            block = f.read(512)
    finally:
        raw.unlink(missing_ok=True)
    found = re.search(rb"cumulo-disk-mark-[0-9a-f-]{36}", block)
    return found.group().decode() if found else ""


def ticks(console: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", console)]


async def test_rescue_boots_the_rescue_disk_first_and_unrescue_its_own(
    hosts, tiny_guest, base_image
):
    src, _ = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    console = await console_has(src, guest.uuid, f"{MARK} ready")
    assert disks_seen(console) == ["vda", "vdb"]  # root disk, config drive
    mark = disk_mark(src, guest.uuid)
    assert mark
    rescue = spec(tiny_guest, base_image, guest.uuid, admin_pass="rescue-me")
    await src.rescue(guest.uuid, rescue)
    console = await console_has(src, guest.uuid, rf"{MARK} ready(.|\n)*{MARK} ready")
    assert disks_seen(console) == ["vda", "vdb", "vdc"]  # rescue disk, own disk, config
    assert (await src.get_info(guest.uuid)).state == PowerState.RUNNING
    with pytest.raises(DriverError):
        await src.rescue(guest.uuid, rescue)
    await src.unrescue(guest.uuid)
    console = await console_has(src, guest.uuid, rf"({MARK} ready(.|\n)*){{3}}")
    assert disks_seen(console) == ["vda", "vdb"]
    assert not (src.instances_dir / guest.uuid / "disk.rescue").exists()
    await src.destroy(guest.uuid)


async def test_a_stable_device_rescue_keeps_the_guests_disks_in_place(
    hosts, tiny_guest, base_image
):
    """hw_rescue_bus/hw_rescue_device: the guest's own disk stays vda (its user data,
    run again by the rescue boot, writes a new mark on it) and the rescue disk is
    attached last, here as a CD-ROM on a virtio-scsi controller."""
    src, _ = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    await console_has(src, guest.uuid, f"{MARK} ready")
    before = disk_mark(src, guest.uuid)
    rescue = spec(tiny_guest, base_image, guest.uuid, admin_pass="rescue-me")
    props = {**rescue.image.properties, "hw_rescue_bus": "scsi", "hw_rescue_device": "cdrom"}
    rescue = replace(rescue, image=replace(rescue.image, properties=props))
    await src.rescue(guest.uuid, rescue)
    console = await console_has(src, guest.uuid, rf"{MARK} ready(.|\n)*{MARK} ready")
    assert disks_seen(console)[:2] == ["vda", "vdb"]  # own disk, rescue config drive
    after = disk_mark(src, guest.uuid)
    assert after and after != before  # vda was the guest's own disk
    blocks = {b["qdev"].rsplit("/", 1)[-1]: b for b in await src._qmp(guest.uuid, "query-block")}
    assert blocks["rescue"]["removable"] and blocks["rescue"]["inserted"]["node-name"] == "rescue"
    await src.unrescue(guest.uuid)
    await console_has(src, guest.uuid, rf"({MARK} ready(.|\n)*){{3}}")
    bad = {**props, "hw_rescue_bus": "virtio"}  # no CD-ROM on virtio
    with pytest.raises(DriverError, match="virtio"):
        await src.rescue(guest.uuid, replace(rescue, image=replace(rescue.image, properties=bad)))
    await src.destroy(guest.uuid)


async def test_cold_migration_copies_the_disk_to_the_other_host(hosts, tiny_guest, base_image):
    src, dst = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    await console_has(src, guest.uuid, r"tick 2\b")
    mark = disk_mark(src, guest.uuid)
    assert mark
    disk_info = await src.migrate_disk_and_power_off(guest.uuid)
    assert (await src.get_info(guest.uuid)).state == PowerState.SHUTDOWN
    try:
        bigger = replace(guest, flavor=replace(FLAVOR, name="m1.bigger", root_gb=2))
        await dst.finish_migration(bigger, disk_info, power_on=False)
    finally:
        await src.end_disk_export(guest.uuid)
    assert (await dst.get_info(guest.uuid)).state == PowerState.SHUTDOWN
    assert disk_mark(dst, guest.uuid) == mark  # before it boots (and writes a new one)
    await dst.power_on(guest.uuid)
    await console_has(dst, guest.uuid, r"tick 1\b")
    info = subprocess.run(
        ["qemu-img", "info", "-U", str(dst.instances_dir / guest.uuid / "disk")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "virtual size: 2 GiB" in info  # resized with the flavor
    # The source keeps its stopped copy until the move is confirmed.
    assert guest.uuid in await src.list_guests()
    await src.destroy(guest.uuid)
    await dst.destroy(guest.uuid)


async def test_live_block_migration_moves_a_running_guest(hosts, tiny_guest, base_image):
    src, dst = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    await console_has(src, guest.uuid, r"tick 3\b")
    mark = disk_mark(src, guest.uuid)
    with pytest.raises(DriverError, match="block_migration"):
        await src.live_migrate(guest.uuid, {"disks": []}, False, _no_progress)
    data = await dst.pre_live_migration(guest, block_migration=True)
    assert data["disks"] == ["root"]
    figures: list[dict] = []

    async def progress(stats):
        figures.append(stats)

    result = await src.live_migrate(guest.uuid, data, True, progress)
    before = max(ticks(await src.get_console_output(guest.uuid)))
    await dst.post_live_migration_at_destination(guest.uuid, result)
    await src.post_live_migration_at_source(guest.uuid)
    assert guest.uuid not in await src.list_guests()
    assert (await dst.get_info(guest.uuid)).state == PowerState.RUNNING
    console = await console_has(dst, guest.uuid, rf"tick {before + 2}\b")
    after = ticks(console)
    assert min(after) >= before, "the counter went on: the guest kept its memory"
    assert f"{MARK} ready" not in console, "no boot on the destination"
    assert disk_mark(dst, guest.uuid) == mark
    assert any(f.get("memory_total") for f in figures)
    assert any("disk_total" in f for f in figures)
    await dst.destroy(guest.uuid)


async def test_live_migration_opens_the_volumes_where_they_were_attached(
    hosts, tiny_guest, base_image, tmp_path
):
    """Volumes are reached from both hosts (here files), not copied: the incoming machine
    opens each one at the slot it has on the source. Of two hot-plugged volumes the first
    is detached, so the second's slot is not the one a new guest's volume would get: a
    machine laid out anew would not take the guest's state."""
    src, dst = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    await console_has(src, guest.uuid, r"tick 2\b")
    first, second = (
        file_device(volume_file(tmp_path / f"vol{i}.raw", "16M", "raw"), "raw") for i in (1, 2)
    )
    await src.attach_volume(guest.uuid, first)
    await src.attach_volume(guest.uuid, second)
    await src.detach_volume(guest.uuid, first.volume_id)
    where = await src.get_device_addresses(guest.uuid)
    assert where != dst.device_layout(replace(guest, block_devices=[second]))
    source = await src.live_migration_source(guest.uuid)
    moving = replace(guest, block_devices=[second])
    data = await dst.pre_live_migration(moving, True, source)
    assert data["disks"] == ["root"]  # the volume is not mirrored
    result = await src.live_migrate(guest.uuid, data, True, _no_progress)
    before = max(ticks(await src.get_console_output(guest.uuid)))
    await dst.post_live_migration_at_destination(guest.uuid, result)
    await src.post_live_migration_at_source(guest.uuid)
    assert (await dst.get_info(guest.uuid)).state == PowerState.RUNNING
    assert await dst.get_device_addresses(guest.uuid) == where
    console = await console_has(dst, guest.uuid, rf"tick {before + 2}\b")
    assert min(ticks(console)) >= before, "the counter went on: the guest kept its memory"
    await dst.detach_volume(guest.uuid, second.volume_id)  # the guest lets it go there
    await dst.destroy(guest.uuid)


async def _no_progress(stats) -> None:
    return None


async def test_resize_in_place_grows_the_guest_and_revert_puts_it_back(
    hosts, tiny_guest, base_image
):
    src, _ = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    await console_has(src, guest.uuid, f"{MARK} ready")
    await src.power_off(guest.uuid, timeout=30)
    disk = src.instances_dir / guest.uuid / "disk"

    def virtual_size() -> str:
        out = subprocess.run(
            ["qemu-img", "info", "-U", str(disk)], check=True, capture_output=True, text=True
        ).stdout
        return re.search(r"virtual size: (\S+ \S+)", out).group(1)

    await src.resize(guest.uuid, replace(FLAVOR, name="m1.big", memory_mb=256, root_gb=2))
    await src.power_on(guest.uuid)
    assert (await src.get_info(guest.uuid)).max_mem_kb == 256 * 1024
    assert virtual_size() == "2 GiB"
    await src.power_off(guest.uuid, timeout=30)
    await src.revert_resize(guest.uuid)
    await src.power_on(guest.uuid)
    assert (await src.get_info(guest.uuid)).max_mem_kb == FLAVOR.memory_mb * 1024
    assert virtual_size() == "1 GiB"
    await src.destroy(guest.uuid)
