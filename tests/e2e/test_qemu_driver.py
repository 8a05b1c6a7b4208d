"""The QEMU driver runs real guests: the tiny test guest (Debian's cloud kernel and a
busybox initramfs, built from .deb files and cached) boots under QEMU, reads its config
drive, and reports on its serial console what the driver did to it.

Skipped with the reason when QEMU or the guest's packages are unavailable (failed
under CI). The guests have no network to the outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cumulo.compute.states import PowerState
from cumulo.compute.virt import qemu_process
from cumulo.compute.virt.driver import (
    BlockDevice,
    DriverError,
    FlavorSpec,
    GuestSpec,
    ImageSpec,
    Vif,
    pci_address,
)
from cumulo.compute.virt.qemu import QemuDriver, tap_name
from cumulo.metadata import InstanceMetadata, config_drive_files
from cumulo.testing.guest import MARK, GuestBuildError, TinyGuest, build_guest
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.e2e

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0cumulo tester@e2e"
USER_DATA = b"#!/bin/sh\necho user data says $((6 * 7))\n"
FLAVOR = FlavorSpec("m1.tiny", vcpus=1, memory_mb=256, root_gb=1)


@pytest.fixture(scope="module")
def tiny_guest() -> TinyGuest:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None:
        skip_or_fail("qemu-system-x86_64 and qemu-img are not installed")
    try:
        return build_guest()
    except GuestBuildError as exc:
        skip_or_fail(f"the tiny test guest cannot be built: {exc}")
        raise


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qemu-state")


@pytest.fixture(scope="module")
async def driver(tiny_guest: TinyGuest, state_dir: Path):
    driver = QemuDriver(state_dir, "e2e-host", probe_kernel=tiny_guest.kernel)
    await driver.init_host("e2e-host")
    yield driver
    for guest in await driver.list_guests():
        await driver.destroy(guest)


def guest_spec(tiny: TinyGuest, name: str, *, vifs: tuple[Vif, ...] = ()) -> GuestSpec:
    guest_uuid = str(uuid.uuid4())
    meta = InstanceMetadata(
        uuid=guest_uuid,
        name=name,
        hostname=name,
        project_id="p" * 32,
        availability_zone="nova",
        public_keys={"tester": KEY},
        user_data=USER_DATA,
    )
    return GuestSpec(
        uuid=guest_uuid,
        name=name,
        hostname=name,
        flavor=FLAVOR,
        image=ImageSpec(
            id="tiny",
            disk_format="aki",
            kernel_path=str(tiny.kernel),
            ramdisk_path=str(tiny.initramfs),
            properties={"os_command_line": tiny.command_line},
        ),
        vifs=vifs,
        config_drive=config_drive_files(meta),
    )


async def wait_console(
    driver: QemuDriver, guest: str, text: str, count: int = 1, timeout: float = 60
) -> str:
    """The console once `text` appeared on it `count` times (boots take ~3 s under TCG)."""
    deadline = time.monotonic() + timeout
    while True:
        console = await driver.get_console_output(guest)
        if console.count(text) >= count:
            return console
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} x{count} not on the console of {guest}:\n{console}")
        await asyncio.sleep(0.2)


def disks_seen(console: str) -> list[str]:
    """The block devices in the guest's last report (it prints them whenever they change)."""
    # The shell's prompt may share the line: look for the marker anywhere in it. Only
    # whole lines: the last one may be read while the guest is still writing it.
    complete = console[: console.rfind("\n") + 1]
    lines = [line for line in complete.splitlines() if f"{MARK} disks" in line]
    return lines[-1].split(f"{MARK} disks", 1)[1].split() if lines else []


async def pci_slots(state_dir: Path, guest: str) -> dict[str, str]:
    """Where QEMU put each device on the guest's PCI bus (device id -> the address the
    guest finds it at), as the running QEMU reports it."""
    directory = state_dir / "compute" / "e2e-host" / "instances" / guest
    async with qemu_process.qmp_session(directory, guest) as qmp:
        buses = await qmp.execute("query-pci")
    return {
        dev["qdev_id"]: pci_address(dev["slot"])
        for bus in buses
        for dev in bus["devices"]
        if dev.get("qdev_id") and dev["function"] == 0
    }


async def wait_state(driver: QemuDriver, guest: str, state: PowerState, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while (info := await driver.get_info(guest)).state != state:
        assert time.monotonic() < deadline, f"{guest} stayed {info.state.name}, not {state.name}"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def running(driver: QemuDriver, tiny_guest: TinyGuest) -> str:
    """One guest booted with a config drive, shared by the tests below (in file order)."""
    spec = guest_spec(tiny_guest, "vm-e2e")
    await driver.spawn(spec)
    await wait_console(driver, spec.uuid, f"{MARK} ready")
    return spec.uuid


async def test_guest_reads_hostname_key_and_user_data_from_the_config_drive(driver, running):
    console = await driver.get_console_output(running)
    assert f"{MARK} config-drive hostname=vm-e2e uuid={running}" in console
    assert f"{MARK} config-drive key tester {KEY}" in console
    assert "user data says 42" in console
    assert f"{MARK} user-data exit=0" in console
    info = await driver.get_info(running)
    assert info.state == PowerState.RUNNING
    assert (info.num_cpu, info.max_mem_kb) == (1, 256 * 1024)
    assert info.cpu_time_ns > 0
    vnc = await driver.get_vnc_console(running)
    assert vnc["internal_access_path"].endswith("/vnc.sock")
    path, directory = qemu_process.short_unix_path(
        Path(vnc["internal_access_path"]).parent, "vnc.sock"
    )
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(path)
            assert client.recv(12) == b"RFB 003.008\n"  # QEMU's VNC server greets
    finally:
        os.close(directory)


async def test_pause_and_unpause_stop_the_guest_cpu(driver, running):
    await driver.pause(running)
    assert (await driver.get_info(running)).state == PowerState.PAUSED
    await driver.unpause(running)
    assert (await driver.get_info(running)).state == PowerState.RUNNING


async def test_hard_reboot_boots_the_guest_again(driver, running):
    await driver.reboot(running, hard=True)
    await wait_console(driver, running, f"{MARK} ready", count=2)
    assert (await driver.get_info(running)).state == PowerState.RUNNING


async def test_power_off_presses_the_power_button_and_power_on_boots(driver, running):
    started = time.monotonic()
    await driver.power_off(running, timeout=30)
    assert time.monotonic() - started < 20, "the guest should obey the ACPI power button"
    assert f"{MARK} power button, powering off" in await driver.get_console_output(running)
    assert (await driver.get_info(running)).state == PowerState.SHUTDOWN
    await driver.power_on(running)
    assert (await driver.get_info(running)).state == PowerState.RUNNING
    await wait_console(driver, running, f"{MARK} ready", count=3)


async def test_a_volume_hot_plugs_into_the_guest_and_unplugs(driver, running, state_dir):
    volume = state_dir / "volume-1.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(volume), "64M"], check=True, capture_output=True
    )
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", str(volume)],
        check=True, capture_output=True,
    )  # fmt: skip
    device = BlockDevice(
        volume_id=str(uuid.uuid4()),
        device_name="/dev/vdc",
        connection_info={
            "driver_volume_type": "file",
            "data": {"path": str(volume), "format": "qcow2", "access_mode": "rw"},
        },
    )
    before = disks_seen(await driver.get_console_output(running))
    await driver.attach_volume(running, device)
    deadline = time.monotonic() + 20
    while len(disks := disks_seen(await driver.get_console_output(running))) == len(before):
        assert time.monotonic() < deadline, (
            "the guest never saw the new disk: "
            + (await driver.get_console_output(running))[-1500:]
        )
        await asyncio.sleep(0.2)
    assert disks[: len(before)] == before and len(disks) == len(before) + 1
    # The device metadata's address of the volume is where QEMU put it (and the root disk
    # and config drive are in their own slots, vda and vdb).
    [reported] = [a for a in await driver.get_device_addresses(running) if a.kind == "disk"]
    slots = await pci_slots(state_dir, running)
    assert (reported.id, reported.address) == (
        device.volume_id,
        slots[f"vol-{device.volume_id[:12]}"],
    )
    assert (slots["root"], slots["config"]) == ("0000:00:07.0", "0000:00:0a.0")
    # Swap volume: the running guest's device is mirrored onto another volume (raw here)
    # and reads it from then on, in the same slot; the old file is let go.
    swapped = state_dir / "volume-2.raw"
    subprocess.run(["truncate", "-s", "64M", str(swapped)], check=True)
    new = BlockDevice(
        volume_id=str(uuid.uuid4()),
        device_name="/dev/vdc",
        connection_info={
            "driver_volume_type": "file",
            "data": {"path": str(swapped), "format": "raw", "access_mode": "rw"},
        },
    )
    await driver.swap_volume(running, device.volume_id, new)
    async with qemu_process.qmp_session(
        state_dir / "compute" / "e2e-host" / "instances" / running, running
    ) as qmp:
        files = {
            b["qdev"].split("/")[3]: b["inserted"]["file"]
            for b in await qmp.execute("query-block")
            if b.get("inserted") and b.get("qdev", "").startswith("/machine/peripheral/")
        }
    assert files[f"vol-{device.volume_id[:12]}"] == str(swapped)
    assert str(volume) not in files.values()
    assert swapped.read_bytes()[: 1 << 20] == b"\x5a" * (1 << 20)
    assert (await pci_slots(state_dir, running))[f"vol-{device.volume_id[:12]}"] == (
        reported.address
    )
    assert disks_seen(await driver.get_console_output(running)) == disks
    device = new
    await driver.detach_volume(running, device.volume_id)
    deadline = time.monotonic() + 20
    while disks_seen(await driver.get_console_output(running)) != before:
        assert time.monotonic() < deadline, "the guest still sees the unplugged disk"
        await asyncio.sleep(0.2)
    with pytest.raises(DriverError):
        await driver.detach_volume(running, device.volume_id)


async def test_a_new_agent_finds_the_running_guest(driver, running, state_dir, tiny_guest):
    pid = qemu_process.read_pid(state_dir / "compute" / "e2e-host" / "instances" / running)
    restarted = QemuDriver(state_dir, "e2e-host", probe_kernel=tiny_guest.kernel)
    await restarted.init_host("e2e-host")
    assert running in await restarted.list_guests()
    assert restarted.accel == driver.accel  # the probe verdict was kept
    assert (await restarted.get_info(running)).state == PowerState.RUNNING
    await restarted.pause(running)
    assert (await driver.get_info(running)).state == PowerState.PAUSED
    await restarted.unpause(running)
    assert qemu_process.read_pid(state_dir / "compute" / "e2e-host" / "instances" / running) == pid


async def test_suspend_saves_memory_and_resume_continues_without_a_boot(driver, running):
    boots = (await driver.get_console_output(running)).count(f"{MARK} booted")
    await driver.suspend(running)
    assert (await driver.get_info(running)).state == PowerState.SUSPENDED
    await driver.resume(running)
    assert (await driver.get_info(running)).state == PowerState.RUNNING
    await asyncio.sleep(1)
    assert (await driver.get_console_output(running)).count(f"{MARK} booted") == boots


async def test_a_guest_whose_qemu_dies_is_shutdown_never_running(driver, running, state_dir):
    pid = qemu_process.read_pid(state_dir / "compute" / "e2e-host" / "instances" / running)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_state(driver, running, PowerState.SHUTDOWN)
    await driver.destroy(running)
    assert not qemu_pids(running)
    assert running not in await driver.list_guests()
    assert not (state_dir / "compute" / "e2e-host" / "instances" / running).exists()


async def test_a_guest_with_a_port_gets_a_tap_with_its_mac(driver, tiny_guest, state_dir):
    if os.geteuid() != 0:
        pytest.skip("creating tap devices needs root")
    port = str(uuid.uuid4())
    vif = Vif(port_id=port, mac="fa:16:3e:12:34:56", network_id="net", mtu=1450)
    spec = guest_spec(tiny_guest, "vm-nic", vifs=(vif,))
    await driver.spawn(spec)
    tap = tap_name(port)
    link = json.loads(
        subprocess.run(
            ["ip", "-j", "link", "show", tap], check=True, capture_output=True, text=True
        ).stdout
    )[0]
    assert link["mtu"] == 1450
    await wait_console(driver, spec.uuid, f"{MARK} eth0 mac fa:16:3e:12:34:56")
    # The NIC is in the slot the device metadata says, laid out before it was spawned.
    reported = await driver.get_device_addresses(spec.uuid)
    assert reported == driver.device_layout(spec)
    [nic] = reported
    assert nic.address == (await pci_slots(state_dir, spec.uuid))[f"nic-{tap}"]
    await driver.destroy(spec.uuid)
    assert not Path(f"/sys/class/net/{tap}").exists()
    assert not qemu_pids(spec.uuid)


def qemu_pids(guest: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"guest={guest}"], capture_output=True, text=True)
    return found.stdout.split()
