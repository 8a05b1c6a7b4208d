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
# The user data also leaves a loop behind that prints the size in bytes of each disk
# whenever one changes: the guest's own view of a device that grew.
USER_DATA = b"""#!/bin/sh
echo user data says $((6 * 7))
sizes() { for d in /sys/block/vd*; do printf '%s=%s ' ${d##*/} $(($(cat $d/size) * 512)); done; }
(seen=; while true; do
    now="$(sizes)"
    [ "$now" != "$seen" ] && { seen="$now"; echo "user-data sizes $now"; }
    sleep 1
done) &
"""
FLAVOR = FlavorSpec("m1.tiny", vcpus=1, memory_mb=256, root_gb=1)


def tiny_guest_with(*tools: str) -> TinyGuest:
    """The tiny test guest (built once, then cached), skipped with the reason (failed
    under CI) when QEMU or one of `tools` is not installed or the guest cannot be built."""
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", *tools) if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed")
    try:
        return build_guest()
    except GuestBuildError as exc:
        skip_or_fail(f"the tiny test guest cannot be built: {exc}")
        raise


@pytest.fixture(scope="module")
def tiny_guest() -> TinyGuest:
    return tiny_guest_with()


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


def sizes_seen(console: str) -> dict[str, int]:
    """The size in bytes of each disk in the guest's last report (USER_DATA's loop)."""
    complete = console[: console.rfind("\n") + 1]
    lines = [line for line in complete.splitlines() if "user-data sizes " in line]
    if not lines:
        return {}
    pairs = lines[-1].split("user-data sizes ", 1)[1].split()
    return {name: int(size) for name, _, size in (p.partition("=") for p in pairs)}


async def wait_guest_sees(driver: QemuDriver, guest: str, check, what: str, timeout=20):
    """The guest's console once `check(console)` is true."""
    deadline = time.monotonic() + timeout
    while not check(console := await driver.get_console_output(guest)):
        assert time.monotonic() < deadline, f"{what}: {console[-1500:]}"
        await asyncio.sleep(0.2)
    return console


def volume_file(path: Path, size: str, fmt: str, *writes: str) -> Path:
    """A volume's file (qemu-img create: `size` like 64M, `fmt` raw or qcow2) with the
    qemu-io commands `writes` run on it."""
    subprocess.run(
        ["qemu-img", "create", "-f", fmt, str(path), size], check=True, capture_output=True
    )
    for write in writes:
        subprocess.run(
            ["qemu-io", "-f", fmt, "-c", write, str(path)], check=True, capture_output=True
        )
    return path


def file_device(path: Path, fmt: str) -> BlockDevice:
    """A volume of its own id at /dev/vdc, reached as a file on this host."""
    return BlockDevice(
        volume_id=str(uuid.uuid4()),
        device_name="/dev/vdc",
        connection_info={
            "driver_volume_type": "file",
            "data": {"path": str(path), "format": fmt, "access_mode": "rw"},
        },
    )


async def attached_for_swap(
    driver: QemuDriver, guest: str, old: BlockDevice
) -> tuple[list[str], list[str]]:
    """The swap tests' start: `old` hot-plugged into the guest, which sees it; the guest's
    disks before and after."""
    before = disks_seen(await driver.get_console_output(guest))
    await driver.attach_volume(guest, old)
    console = await wait_guest_sees(
        driver, guest, lambda c: len(disks_seen(c)) > len(before), "the guest never saw the disk"
    )
    disks = disks_seen(console)
    assert disks[: len(before)] == before and len(disks) == len(before) + 1
    return before, disks


def instance_dir(state_dir: Path, guest: str) -> Path:
    return state_dir / "compute" / "e2e-host" / "instances" / guest


async def qmp_query(state_dir: Path, guest: str, command: str, arguments=None):
    async with qemu_process.qmp_session(instance_dir(state_dir, guest), guest) as qmp:
        return await qmp.execute(command, arguments)


async def devices_read(state_dir: Path, guest: str) -> dict[str, dict]:
    """What each device of the running guest reads (query-block's `inserted`), by id."""
    return {
        b["qdev"].split("/")[3]: b["inserted"]
        for b in await qmp_query(state_dir, guest, "query-block")
        if b.get("inserted") and b.get("qdev", "").startswith("/machine/peripheral/")
    }


async def pci_slots(state_dir: Path, guest: str) -> dict[str, str]:
    """Where QEMU put each device on the guest's PCI bus (device id -> the address the
    guest finds it at), as the running QEMU reports it."""
    buses = await qmp_query(state_dir, guest, "query-pci")
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
    volume = volume_file(state_dir / "volume-1.qcow2", "64M", "qcow2", "write -P 0x5a 0 1M")
    device = file_device(volume, "qcow2")
    before, disks = await attached_for_swap(driver, running, device)
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
    swapped = volume_file(state_dir / "volume-2.raw", "64M", "raw")
    new = file_device(swapped, "raw")
    await driver.swap_volume(running, device.volume_id, new)
    files = {dev: disk["file"] for dev, disk in (await devices_read(state_dir, running)).items()}
    assert files[f"vol-{device.volume_id[:12]}"] == str(swapped)
    assert str(volume) not in files.values()
    assert swapped.read_bytes()[: 1 << 20] == b"\x5a" * (1 << 20)
    assert (await pci_slots(state_dir, running))[f"vol-{device.volume_id[:12]}"] == (
        reported.address
    )
    assert disks_seen(await driver.get_console_output(running)) == disks
    device = new
    await driver.detach_volume(running, device.volume_id)
    await wait_guest_sees(
        driver, running, lambda c: disks_seen(c) == before, "the guest still sees the disk"
    )
    with pytest.raises(DriverError):
        await driver.detach_volume(running, device.volume_id)


async def test_a_swap_onto_a_larger_volume_grows_the_guests_device(driver, running, state_dir):
    small = volume_file(state_dir / "volume-small.raw", "64M", "raw", "write -P 0xa5 63M 1M")
    device = file_device(small, "raw")
    before, disks = await attached_for_swap(driver, running, device)
    [vdc] = set(disks) - set(before)
    await wait_guest_sees(
        driver, running, lambda c: sizes_seen(c).get(vdc) == 64 << 20, "64 MiB never seen"
    )
    large = volume_file(state_dir / "volume-large.qcow2", "1G", "qcow2")
    new = file_device(large, "qcow2")
    # QEMU mirrors only between nodes of one size: the larger volume is copied through a
    # view of the old size, then the guest's device grows to the whole volume.
    await driver.swap_volume(running, device.volume_id, new, new_size_gb=1)
    disk = (await devices_read(state_dir, running))[f"vol-{device.volume_id[:12]}"]
    nodes = await qmp_query(state_dir, running, "query-named-block-nodes", {"flat": True})
    assert not [n for n in nodes if n["file"] == str(small)]  # the old volume is let go
    # (the device reads the whole volume through a raw node over it: the file is named inside)
    assert str(large) in disk["file"] and str(small) not in disk["file"]
    assert disk["image"]["virtual-size"] == 1 << 30
    # The guest itself sees its disk grown to the new volume's size.
    await wait_guest_sees(
        driver, running, lambda c: sizes_seen(c).get(vdc) == 1 << 30, "the guest's disk grew"
    )
    read = ["-c", "read -P 0xa5 63M 1M", "-c", "read -P 0 64M 1M"]
    copied = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", "qcow2", *read, str(large)], capture_output=True, text=True
    )
    assert copied.returncode == 0 and "Pattern verification failed" not in copied.stdout, (
        copied.stdout + copied.stderr
    )
    await driver.detach_volume(running, new.volume_id)


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


async def test_a_guest_runs_only_once_its_network_is_ready(driver, tiny_guest, state_dir):
    """QEMU starts paused while the ports are wired (Nova's wait for network-vif-plugged
    around a paused domain); a wiring that fails leaves no guest and no tap."""
    if os.geteuid() != 0:
        pytest.skip("creating tap devices needs root")
    port = str(uuid.uuid4())
    vif = Vif(port_id=port, mac="fa:16:3e:12:34:57", network_id="net", mtu=1500)
    spec = guest_spec(tiny_guest, "vm-wired", vifs=(vif,))
    waiting, wired = asyncio.Event(), asyncio.Event()

    async def network_ready() -> None:
        waiting.set()
        await wired.wait()

    spawn = asyncio.create_task(driver.spawn(spec, network_ready))
    await asyncio.wait_for(waiting.wait(), 60)
    # Started, with its tap, but not running: nothing on the console yet.
    assert qemu_pids(spec.uuid) and Path(f"/sys/class/net/{tap_name(port)}").exists()
    assert (await driver.get_info(spec.uuid)).state != PowerState.RUNNING
    await asyncio.sleep(1)
    assert MARK not in await driver.get_console_output(spec.uuid)
    wired.set()
    await asyncio.wait_for(spawn, 60)
    assert (await driver.get_info(spec.uuid)).state == PowerState.RUNNING
    await wait_console(driver, spec.uuid, f"{MARK} eth0 mac fa:16:3e:12:34:57")
    await driver.destroy(spec.uuid)

    failing = guest_spec(tiny_guest, "vm-unwired", vifs=(vif,))

    async def never_wired() -> None:
        raise DriverError("the network agent did not wire the port")

    with pytest.raises(DriverError, match="did not wire"):
        await driver.spawn(failing, never_wired)
    assert not qemu_pids(failing.uuid)
    assert not Path(f"/sys/class/net/{tap_name(port)}").exists()
    assert failing.uuid not in await driver.list_guests()


def qemu_pids(guest: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"guest={guest}"], capture_output=True, text=True)
    return found.stdout.split()
