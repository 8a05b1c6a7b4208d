"""UEFI guests (issue #16): an image with hw_firmware_type=uefi, as on Nova's libvirt
driver, boots with OVMF. The image is a small whole disk made here from the tiny guest's
kernel and initramfs by the code `cumulo image build debian --firmware uefi` uses: a GPT
whose EFI System Partition holds GRUB's EFI image as \\EFI\\BOOT\\BOOTX64.EFI, a grub.cfg
that prints a mark and boots the kernel and initramfs beside it.

The guest gets OVMF's code read-only and its own variable store (nvram.fd in its
instance directory) as pflash, which it keeps across stop/start, takes along on a cold
migration and loses with the instance; its snapshot keeps hw_firmware_type, so it comes
back from shelve with UEFI; a host without OVMF fails the boot with a fault naming the
missing firmware.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.image.boot_disk import (
    EFI_BOOT_FILE,
    GRUB_EFI_DIR,
    GptLayout,
    MiB,
    grub_efi_argv,
    partition_disk,
    run_tool,
    write_esp,
)
from cumulo.testing.guest import MARK, TinyGuest
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e

HOST = "e2e-uefi"
OVMF_MARK = "BdsDxe: starting"  # OVMF's boot manager on the serial console
GRUB_MARK = "cumulo-uefi: GRUB from the ESP"
BOOTED, READY = f"{MARK} booted", f"{MARK} ready after"
EARLY_CFG = "search --no-floppy --label EFI --set=root\nset prefix=($root)/EFI/BOOT\n"
GRUB_CFG = """\
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
echo '{mark}'
linux /vmlinuz {command_line}
initrd /initrd.img
boot
"""


def require_uefi_tools() -> None:
    missing = [str(p) for p in (qp.OVMF_CODE, qp.OVMF_VARS) if not p.is_file()]
    missing += [
        t for t in ("grub-mkimage", "sfdisk", "mformat", "mmd", "mcopy") if not shutil.which(t)
    ]
    if not Path(GRUB_EFI_DIR).is_dir():
        missing.append(GRUB_EFI_DIR)
    if missing:
        skip_or_fail(
            f"UEFI guests need ovmf, grub-efi-amd64-bin, mtools and fdisk (missing: {missing})"
        )


def tiny_guest() -> TinyGuest:
    from cumulo.testing.guest import build_guest

    try:
        return build_guest()
    except Exception as exc:  # noqa: BLE001 - no kernel package to be had here
        skip_or_fail(f"the tiny test guest could not be built: {exc}")
        raise


def make_tiny_uefi_disk(guest: TinyGuest, work: Path) -> Path:
    """The tiny guest as a UEFI whole disk (qcow2): a GPT whose one partition is the ESP,
    holding GRUB's EFI image, its grub.cfg, the kernel and the initramfs."""
    (work / "early.cfg").write_text(EARLY_CFG)
    (work / "grub.cfg").write_text(GRUB_CFG.format(mark=GRUB_MARK, command_line=guest.command_line))
    grub = work / "BOOTX64.EFI"
    run_tool(
        grub_efi_argv(str(grub), str(work / "early.cfg"), "/EFI/BOOT", GRUB_EFI_DIR),
        "grub-mkimage",
    )
    return esp_disk(guest, work, "uefi", {EFI_BOOT_FILE: grub})


def esp_disk(guest: TinyGuest, work: Path, name: str, loaders: dict[str, Path]) -> Path:
    """A qcow2 whole disk whose GPT's one partition is an ESP holding the boot
    `loaders` (path on the ESP -> file), work/grub.cfg, the kernel and the initramfs."""
    layout = GptLayout(48 * MiB, esp_bytes=40 * MiB, root=False)
    raw = work / f"{name}.raw"
    partition_disk(raw, layout)
    files = {
        **loaders,
        "EFI/BOOT/grub.cfg": work / "grub.cfg",
        "vmlinuz": guest.kernel,
        "initrd.img": guest.initramfs,
    }
    write_esp(raw, layout, files)
    disk = work / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True
    )
    return disk


@pytest.fixture(scope="module")
def uefi_disk(tmp_path_factory) -> Path:
    require_uefi_tools()
    return make_tiny_uefi_disk(tiny_guest(), tmp_path_factory.mktemp("uefi-disk"))


@pytest.fixture(scope="module")
def cloud(uefi_disk, tmp_path_factory):
    require_real_guests()
    state = tmp_path_factory.mktemp("uefi-cloud")
    configure_guest_state_dir(state, HOST)
    runner = CloudRunner(state).start(timeout=120)
    try:
        runner.openstack(
            "image", "create", "tiny-uefi", "--file", str(uefi_disk), "--disk-format", "qcow2",
            "--public", "--property", "hw_firmware_type=uefi",
        )  # fmt: skip
        yield runner
    finally:
        stop_guest_cloud(runner)


# -- helpers ------------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout: float, message: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(message())
        time.sleep(1)
    return found


def status(cloud: CloudRunner, server: str) -> dict[str, Any]:
    return cloud.openstack("server", "show", server, "-f", "json")


def wait_status(cloud: CloudRunner, server: str, wanted: str, timeout: float = 120) -> dict:
    shown: list[dict] = [{}]

    def reached() -> bool:
        shown[0] = status(cloud, server)
        return shown[0]["status"] == wanted

    wait_for(reached, timeout, lambda: f"{server} never became {wanted}: {shown[0]}")
    return shown[0]


def wait_booted(cloud: CloudRunner, server: str, boots: int, timeout: float = 120) -> str:
    """The console once the `boots`-th boot reached the tiny guest's userland."""
    log = [""]

    def ready() -> bool:
        log[0] = cloud.openstack("console", "log", "show", server)
        return log[0].count(BOOTED) >= boots and READY in log[0].rsplit(BOOTED, 1)[1]

    wait_for(
        ready, timeout, lambda: f"boot #{boots} of {server} never got ready:\n{log[0][-3000:]}"
    )
    return log[0]


def instance_dir(cloud: CloudRunner, server: str) -> Path:
    return cloud.state_dir / "compute" / HOST / "instances" / server


def qemu_argv(directory: Path, server: str) -> list[str]:
    pid = qp.read_pid(directory)
    assert qp.process_alive(pid, server), f"no QEMU for {server}"
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def create_server(cloud: CloudRunner, name: str) -> str:
    return cloud.openstack(
        "server", "create", "--image", "tiny-uefi", "--flavor", "m1.tiny", "--nic", "none",
        name, "-f", "json",
    )["id"]  # fmt: skip


# -- through the cloud ---------------------------------------------------------------------


def test_a_uefi_image_boots_with_ovmf_and_keeps_its_variables_across_stop_and_start(cloud):
    server = create_server(cloud, f"uefi-{uuid.uuid4().hex[:6]}")
    wait_status(cloud, server, "ACTIVE")
    log = wait_booted(cloud, server, 1)
    assert log.index(OVMF_MARK) < log.index(GRUB_MARK) < log.index(BOOTED), log[-3000:]

    directory = instance_dir(cloud, server)
    argv = qemu_argv(directory, server)
    assert argv[argv.index("-machine") + 1] == "pc,pflash0=ovmf-code,pflash1=ovmf-vars"
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    pflash = {b["node-name"]: b for b in blockdevs if b["node-name"].startswith("ovmf-")}
    assert pflash["ovmf-code"]["file"]["filename"] == str(qp.OVMF_CODE)
    assert pflash["ovmf-code"]["read-only"] is True
    nvram = directory / "nvram.fd"
    assert pflash["ovmf-vars"]["file"]["filename"] == str(nvram)
    assert pflash["ovmf-vars"]["read-only"] is False
    # OVMF wrote its boot options into the guest's own copy of the template.
    assert nvram.read_bytes() != qp.OVMF_VARS.read_bytes()
    inode = nvram.stat().st_ino

    cloud.openstack("server", "stop", server)
    wait_status(cloud, server, "SHUTOFF")
    assert nvram.stat().st_ino == inode
    cloud.openstack("server", "start", server)
    wait_status(cloud, server, "ACTIVE")
    log = wait_booted(cloud, server, 2)
    assert log.count(GRUB_MARK) >= 2
    assert nvram.stat().st_ino == inode, "the variable store was made again"
    assert GRUB_MARK in cloud.openstack("console", "log", "show", server)

    cloud.openstack("server", "delete", "--wait", server)
    assert not directory.exists(), "the guest's directory (and its nvram) was left behind"


def test_a_shelved_uefi_guest_comes_back_with_uefi(cloud):
    name = f"shelf-{uuid.uuid4().hex[:6]}"
    server = create_server(cloud, name)
    wait_status(cloud, server, "ACTIVE")
    wait_booted(cloud, server, 1)
    cloud.openstack("server", "shelve", server)
    wait_status(cloud, server, "SHELVED_OFFLOADED", timeout=180)
    [snapshot] = cloud.openstack("image", "list", "--name", f"{name}-shelved", "-f", "json")
    shown = cloud.openstack("image", "show", snapshot["ID"], "-f", "json")
    assert shown["properties"]["hw_firmware_type"] == "uefi"

    cloud.openstack("server", "unshelve", server)
    wait_status(cloud, server, "ACTIVE")
    log = wait_booted(cloud, server, 1)  # a new console: the guest started again here
    assert OVMF_MARK in log and GRUB_MARK in log
    assert (instance_dir(cloud, server) / "nvram.fd").is_file()
    cloud.openstack("server", "delete", "--wait", server)


def test_a_host_without_ovmf_fails_the_boot_with_a_fault_naming_it(cloud, monkeypatch):
    missing = Path("/nonexistent/OVMF/OVMF_CODE_4M.fd")
    monkeypatch.setattr(qp, "OVMF_CODE", missing)  # the cloud runs in this process
    server = create_server(cloud, f"no-ovmf-{uuid.uuid4().hex[:6]}")
    fault = wait_status(cloud, server, "ERROR")["fault"]
    # The only host failed the build and none is left to retry on: the fault is Nova's
    # MaxRetriesExceeded, with this host's failure in its details.
    assert fault["message"].startswith("Exhausted all hosts available for retrying"), fault
    assert f"UEFI firmware is missing on this host: {missing}" in fault["details"], fault
    assert "ovmf" in fault["details"], fault
    assert not instance_dir(cloud, server).exists()
    cloud.openstack("server", "delete", "--wait", server)


# -- the driver's cold migration -------------------------------------------------------------


async def test_a_cold_migration_takes_the_guests_variables_along(uefi_disk, tmp_path):
    if shutil.which("qemu-nbd") is None:
        skip_or_fail("qemu-nbd is not installed")
    source, destination = (
        QemuDriver(tmp_path, name, accel="tcg", vnc=False, migration_address="127.0.0.1")
        for name in ("uefi-src", "uefi-dst")
    )
    for driver in (source, destination):
        await driver.init_host(driver.host)
    image = ImageSpec(
        "tiny-uefi", "qcow2", path=str(uefi_disk), properties={"hw_firmware_type": "uefi"}
    )
    guest = GuestSpec(
        uuid=str(uuid.uuid4()),
        name="mover",
        hostname="mover",
        flavor=FlavorSpec("m1.tiny", vcpus=1, memory_mb=256, root_gb=1),
        image=image,
    )
    try:
        await source.spawn(guest)
        await source.power_off(guest.uuid, timeout=0)
        # Variables only this guest has (written while it is off, as OVMF would).
        nvram = source.instances_dir / guest.uuid / "nvram.fd"
        with nvram.open("r+b") as store:
            store.seek(-16, 2)
            store.write(b"cumulo-uefi-mark")
        disk_info = await source.migrate_disk_and_power_off(guest.uuid)
        assert set(disk_info["disks"]) == {"root", "nvram"}
        try:
            await destination.finish_migration(guest, disk_info, power_on=False)
        finally:
            await source.end_disk_export(guest.uuid)
        moved = destination.instances_dir / guest.uuid / "nvram.fd"
        assert moved.read_bytes() == nvram.read_bytes()
        record = json.loads((moved.parent / "guest.json").read_text())
        assert record["machine"]["firmware"] == "uefi"
    finally:
        for driver in (source, destination):
            await driver.destroy(guest.uuid)
    assert not (destination.instances_dir / guest.uuid).exists()
