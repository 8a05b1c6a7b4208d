"""UEFI Secure Boot and the q35 machine (issue #16), as on Nova's libvirt driver: an image
with os_secure_boot=required (or a flavor with os:secure_boot=required) boots on q35
with SMM, OVMF's Secure Boot build as a secure pflash and a variable store made from
the template with Microsoft's keys enrolled; hw_machine_type=q35 alone boots on q35.

Two UEFI disks of the tiny guest, both made by the UEFI e2e test's code: its own, whose
GRUB is built here by grub-mkimage and signed by nobody, and a signed chain from Debian's
packages, as Debian's cloud images boot under Secure Boot: shim signed by Microsoft's
UEFI CA as \\EFI\\BOOT\\BOOTX64.EFI, GRUB signed by Debian beside it (shim checks it
against Debian's CA), and Debian's cloud kernel, signed by Debian (GRUB has shim
check it). Under Secure Boot the signed chain boots (the kernel's EFI stub says Secure
Boot is on) and OVMF refuses the unsigned GRUB ("Access Denied") and boots nothing.
A Secure Boot guest live-migrated between two drivers runs on, on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import BlockDevice, FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.image.boot_disk import EFI_BOOT_FILE
from cumulo.testing.guest import MARK, TinyGuest
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail
from tests.e2e.test_qemu_uefi import (
    BOOTED,
    GRUB_CFG,
    GRUB_MARK,
    OVMF_MARK,
    esp_disk,
    make_tiny_uefi_disk,
    qemu_argv,
    require_uefi_tools,
    tiny_guest,
    wait_booted,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.e2e

HOST = "e2e-secboot"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")  # shim-signed
SIGNED_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")  # grub-efi-amd64-signed
SECURE_BOOT_ON = "EFI stub: UEFI Secure Boot is enabled."  # the kernel, on the console
SECURE_BOOT_SEEN = "secureboot: Secure boot enabled"  # and Linux, from the firmware's variable
REFUSED = "Access Denied"  # OVMF, for a boot loader no key in db signed
NOTHING_BOOTS = "BdsDxe: No bootable option or device was found."


def make_signed_uefi_disk(guest: TinyGuest, work: Path) -> Path:
    """The tiny guest behind Debian's signed boot chain: shim as BOOTX64.EFI, which
    loads grubx64.efi from its own folder; Debian's signed GRUB reads grub.cfg from
    there too (its built-in config falls back to $cmdpath/grub.cfg)."""
    missing = [str(p) for p in (SHIM, SIGNED_GRUB) if not p.is_file()]
    if missing:
        skip_or_fail(f"a signed boot chain needs shim-signed and grub-efi-amd64-signed: {missing}")
    # Not quiet: the kernel's EFI stub says whether Secure Boot is on only then.
    command_line = " ".join(w for w in guest.command_line.split() if w != "quiet")
    (work / "grub.cfg").write_text(GRUB_CFG.format(mark=GRUB_MARK, command_line=command_line))
    loaders = {EFI_BOOT_FILE: SHIM, "EFI/BOOT/grubx64.efi": SIGNED_GRUB}
    return esp_disk(guest, work, "signed", loaders)


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> dict[str, Path]:
    require_uefi_tools()
    if not all(p.is_file() for p in qp.firmware_files(secure_boot=True)):
        skip_or_fail(f"Secure Boot needs OVMF's {qp.firmware_files(secure_boot=True)} (ovmf)")
    guest = tiny_guest()
    return {
        "unsigned": make_tiny_uefi_disk(guest, tmp_path_factory.mktemp("unsigned")),
        "signed": make_signed_uefi_disk(guest, tmp_path_factory.mktemp("signed")),
    }


IMAGES = {  # name -> (disk, properties)
    "tiny-secboot": ("signed", {"hw_firmware_type": "uefi", "os_secure_boot": "required"}),
    "tiny-unsigned-secboot": (
        "unsigned",
        {"hw_firmware_type": "uefi", "os_secure_boot": "required"},
    ),
    "tiny-q35": (
        "unsigned",
        {"hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_secure_boot": "disabled"},
    ),
    "tiny-bios-secboot": ("unsigned", {"os_secure_boot": "required"}),
    "tiny-virt": ("unsigned", {"hw_firmware_type": "uefi", "hw_machine_type": "virt"}),
}


@pytest.fixture(scope="module")
def cloud(disks, tmp_path_factory):
    require_real_guests()
    state = tmp_path_factory.mktemp("secboot-cloud")
    configure_guest_state_dir(state, HOST)
    runner = CloudRunner(state).start(timeout=120)
    try:
        for name, (disk, properties) in IMAGES.items():
            props = [a for k, v in properties.items() for a in ("--property", f"{k}={v}")]
            runner.openstack(
                "image", "create", name, "--file", str(disks[disk]), "--disk-format", "qcow2",
                "--public", *props,
            )  # fmt: skip
        yield runner
    finally:
        stop_guest_cloud(runner)


def create_server(cloud: CloudRunner, image: str, flavor: str = "m1.tiny") -> str:
    name = f"{image}-{uuid.uuid4().hex[:6]}"
    return cloud.openstack(
        "server", "create", "--image", image, "--flavor", flavor, "--nic", "none", name,
        "-f", "json",
    )["id"]  # fmt: skip


def instance_dir(cloud: CloudRunner, server: str) -> Path:
    return cloud.state_dir / "compute" / HOST / "instances" / server


def console(cloud: CloudRunner, server: str) -> str:
    return cloud.openstack("console", "log", "show", server)


def test_a_signed_chain_boots_under_secure_boot_and_keeps_its_variables(cloud):
    server = create_server(cloud, "tiny-secboot")
    wait_status(cloud, server, "ACTIVE")
    log = wait_booted(cloud, server, 1, timeout=240)
    assert log.index(OVMF_MARK) < log.index(GRUB_MARK) < log.index(SECURE_BOOT_ON), log[-3000:]
    assert SECURE_BOOT_SEEN in log, log[-3000:]

    directory = instance_dir(cloud, server)
    argv = qemu_argv(directory, server)
    assert argv[argv.index("-machine") + 1] == "q35,smm=on,pflash0=ovmf-code,pflash1=ovmf-vars"
    assert argv[argv.index("-global") + 1] == "driver=cfi.pflash01,property=secure,value=on"
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    pflash = {b["node-name"]: b for b in blockdevs if b["node-name"].startswith("ovmf-")}
    assert pflash["ovmf-code"]["file"]["filename"] == str(qp.OVMF_SECBOOT_CODE)
    nvram = directory / "nvram.fd"
    assert pflash["ovmf-vars"]["file"]["filename"] == str(nvram)
    # Made from the template with Microsoft's keys (their UEFI CA signed shim).
    assert b"Microsoft Corporation UEFI CA 2011" in nvram.read_bytes()
    inode = nvram.stat().st_ino

    cloud.openstack("server", "stop", server)
    wait_status(cloud, server, "SHUTOFF")
    cloud.openstack("server", "start", server)
    wait_status(cloud, server, "ACTIVE")
    log = wait_booted(cloud, server, 2, timeout=240)
    assert SECURE_BOOT_ON in log.rsplit(OVMF_MARK, 1)[1], log[-3000:]  # the second boot's
    assert nvram.stat().st_ino == inode, "the variable store was made again"
    cloud.openstack("server", "delete", "--wait", server)


def test_secure_boot_refuses_an_unsigned_boot_loader(cloud):
    server = create_server(cloud, "tiny-unsigned-secboot")
    wait_status(cloud, server, "ACTIVE")  # the machine runs: its firmware refuses the disk
    wait_for(
        lambda: NOTHING_BOOTS in console(cloud, server),
        240,
        lambda: f"OVMF never gave up on {server}:\n{console(cloud, server)[-3000:]}",
    )
    log = console(cloud, server)
    assert REFUSED in log, log[-3000:]
    assert GRUB_MARK not in log and "cumulo-guest:" not in log, log[-3000:]
    cloud.openstack("server", "delete", "--wait", server)


def test_q35_without_secure_boot_boots_the_unsigned_disk(cloud):
    server = create_server(cloud, "tiny-q35")
    wait_status(cloud, server, "ACTIVE")
    log = wait_booted(cloud, server, 1, timeout=240)
    assert GRUB_MARK in log and SECURE_BOOT_ON not in log
    argv = qemu_argv(instance_dir(cloud, server), server)
    assert argv[argv.index("-machine") + 1] == "q35,pflash0=ovmf-code,pflash1=ovmf-vars"
    assert "-global" not in argv
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    [code] = [b for b in blockdevs if b["node-name"] == "ovmf-code"]
    assert code["file"]["filename"] == str(qp.OVMF_CODE)
    cloud.openstack("server", "delete", "--wait", server)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("tiny-bios-secboot", "Secure Boot is required (os_secure_boot / os:secure_boot) but"),
        ("tiny-virt", "Machine type 'virt' is not supported (hw_machine_type)"),
    ],
)
def test_what_the_host_cannot_boot_fails_the_build_with_a_fault(cloud, image, message):
    server = create_server(cloud, image)
    fault = wait_status(cloud, server, "ERROR")["fault"]
    assert fault["message"].startswith("Exhausted all hosts available for retrying"), fault
    assert message in fault["details"], fault
    assert not instance_dir(cloud, server).exists()
    cloud.openstack("server", "delete", "--wait", server)


# -- the driver's live migration ---------------------------------------------------------


async def test_a_live_migrated_secure_boot_guest_runs_on_with_its_machine(disks, tmp_path):
    """Both hosts start the guest from the same image properties: the destination's
    QEMU is the same q35 machine with SMM and the secure pflash (else the migration
    stream would not load), and the guest goes on running there without a boot."""
    if shutil.which("qemu-nbd") is None:
        skip_or_fail("qemu-nbd is not installed")
    source, destination = (
        QemuDriver(tmp_path, name, accel="tcg", vnc=False, migration_address="127.0.0.1")
        for name in ("sb-src", "sb-dst")
    )
    for driver in (source, destination):
        await driver.init_host(driver.host)
    image = ImageSpec(
        "tiny-secboot",
        "qcow2",
        path=str(disks["signed"]),
        properties={"hw_firmware_type": "uefi", "os_secure_boot": "required"},
    )
    guest = GuestSpec(
        uuid=str(uuid.uuid4()),
        name="mover",
        hostname="mover",
        flavor=FlavorSpec("m1.tiny", vcpus=1, memory_mb=512, root_gb=1),
        image=image,
    )
    try:
        await source.spawn(guest)
        await console_shows(source, guest.uuid, f"{MARK} ready", timeout=240)
        assert SECURE_BOOT_ON in await source.get_console_output(guest.uuid)
        data = await destination.pre_live_migration(guest, block_migration=True)
        result = await source.live_migrate(guest.uuid, data, True, _no_progress)
        await destination.post_live_migration_at_destination(guest.uuid, result)
        await source.post_live_migration_at_source(guest.uuid)

        directory = destination.instances_dir / guest.uuid
        argv = qemu_argv(directory, guest.uuid)
        assert argv[argv.index("-machine") + 1].startswith("q35,smm=on,")
        assert "driver=cfi.pflash01,property=secure,value=on" in argv
        # The guest runs on: it sees a volume plugged in there, and never booted again.
        volume = tmp_path / "volume.raw"
        subprocess.run(["truncate", "-s", "16M", str(volume)], check=True)
        device = BlockDevice(
            str(uuid.uuid4()),
            "/dev/vdb",
            {"driver_volume_type": "file", "data": {"path": str(volume)}},
        )
        await destination.attach_volume(guest.uuid, device)
        console = await console_shows(destination, guest.uuid, f"{MARK} disks vda vdb")
        assert OVMF_MARK not in console and BOOTED not in console, console[-2000:]
    finally:
        for driver in (source, destination):
            await driver.destroy(guest.uuid)


async def console_shows(driver: QemuDriver, guest: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (console := await driver.get_console_output(guest)):
        assert time.monotonic() < deadline, f"{text!r} not on {guest}'s console:\n{console[-2000:]}"
        await asyncio.sleep(0.5)
    return console


async def _no_progress(stats: dict[str, int]) -> None:
    return None
