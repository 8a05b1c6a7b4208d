"""Encrypted volumes in real QEMU guests: a LUKS1 container (made here as Block Storage
makes one: qemu-img, passphrase the key's hex) is opened by QEMU's own LUKS driver, at
boot and hot-plugged; the guest sees the payload, what it writes lands encrypted in the
file, a power cycle opens it again with the passphrase the host kept, a grown container
is a grown disk, and a detach takes the secret away. LUKS2 is refused cleanly.

Skipped with the reason when QEMU or the tiny guest's packages are unavailable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from cumulo.compute.states import PowerState
from cumulo.compute.virt import qemu_secrets
from cumulo.compute.virt.driver import BlockDevice, DriverError, VolumeEncryption
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.testing.guest import MARK, TinyGuest
from tests.e2e import test_qemu_driver as plain
from tests.e2e.test_qemu_driver import (
    guest_spec,
    instance_dir,
    qmp_query,
    sizes_seen,
    wait_console,
    wait_guest_sees,
)

# The driver tests' fixtures: the tiny guest, and a driver on a state dir of this module's.
tiny_guest = plain.tiny_guest
state_dir = plain.state_dir
driver = plain.driver

pytestmark = pytest.mark.e2e

MiB = 1024**2
PATTERN = 0x5A


def luks_volume(path: Path, size: str) -> tuple[Path, str]:
    """A LUKS1 container with a payload of `size` (64M), its passphrase a random key's hex."""
    passphrase = os.urandom(32).hex()
    # QEMU times its PBKDF2 on the thread's CPU clock, which a sandbox may give too
    # coarsely ("Unable to get accurate CPU usage"): another try then.
    for _ in range(5):
        made = subprocess.run(
            ["qemu-img", "create", "-f", "luks", "--object", f"secret,id=s0,data={passphrase}",
             "-o", "key-secret=s0,iter-time=10", str(path), size],
            capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode == 0:
            return path, passphrase
    raise AssertionError(f"qemu-img could not make a LUKS volume: {made.stderr}")


def encrypted_device(path: Path, passphrase: str, device: str, provider: str = "luks"):
    return BlockDevice(
        volume_id=str(uuid.uuid4()),
        device_name=device,
        connection_info={
            "driver_volume_type": "file",
            "data": {"path": str(path), "format": "luks", "encrypted": True, "access_mode": "rw"},
        },
        encryption=VolumeEncryption(provider, passphrase, "aes-xts-plain64", 256),
    )


def host_read(path: Path, passphrase: str, command: str) -> str:
    """A qemu-io command on the container, opened read-only with the passphrase on the
    host (a pattern that does not match fails it)."""
    done = subprocess.run(
        ["qemu-io", "-r", "-U", "--object", f"secret,id=s0,data={passphrase}", "--image-opts",
         f"driver=luks,key-secret=s0,file.filename={path}", "-c", command],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout


async def hmp(state_dir: Path, guest: str, command: str) -> str:
    return await qmp_query(state_dir, guest, "human-monitor-command", {"command-line": command})


async def luks_nodes(state_dir: Path, guest: str) -> dict[str, dict]:
    nodes = await qmp_query(state_dir, guest, "query-named-block-nodes", {"flat": True})
    return {n["node-name"]: n for n in nodes if n["drv"] == "luks"}


def node(device: BlockDevice) -> str:
    return f"vol-{device.volume_id[:12]}"


def backend(device: BlockDevice) -> str:
    """The guest's virtio-blk device of the volume (HMP qemu-io writes through it)."""
    return f"/machine/peripheral/{node(device)}/virtio-backend"


@pytest.fixture(scope="module")
async def booted(driver: QemuDriver, tiny_guest: TinyGuest, state_dir: Path):
    """A guest booted with an encrypted volume (its first disk after the root, vdc)."""
    path, passphrase = luks_volume(state_dir / "luks-boot.img", "32M")
    device = encrypted_device(path, passphrase, "/dev/vdc")
    spec = guest_spec(tiny_guest, "vm-luks")
    spec = dataclasses.replace(spec, block_devices=(device,))
    await driver.spawn(spec)
    await wait_console(driver, spec.uuid, f"{MARK} ready")
    return spec.uuid, device


async def test_a_guest_boots_with_an_encrypted_volume_opened_by_qemu(driver, booted, state_dir):
    guest, device = booted
    nodes = await luks_nodes(state_dir, guest)
    assert nodes[node(device)]["image"]["virtual-size"] == 32 * MiB
    # The guest sees the payload (32 MiB), not the container with its header.
    console = await wait_guest_sees(
        driver, guest, lambda c: 32 * MiB in sizes_seen(c).values(), "no 32 MiB disk"
    )
    assert 32 * MiB in sizes_seen(console).values()
    directory = instance_dir(state_dir, guest)
    passphrase = device.encryption.passphrase
    # Kept for the next start in a 0600 file beside guest.json, never in it, nor in argv.
    secrets = directory / qemu_secrets.SECRETS
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert passphrase in secrets.read_text()
    assert passphrase not in (directory / "guest.json").read_text()
    pid = int((directory / "qemu.pid").read_text())
    assert passphrase.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not list(directory.glob("*.key"))  # QEMU's one-time files are gone


async def test_a_hot_plugged_encrypted_volume_writes_ciphertext_and_survives_a_power_cycle(
    driver, booted, state_dir
):
    guest, _ = booted
    path, passphrase = luks_volume(state_dir / "luks-hot.img", "64M")
    device = encrypted_device(path, passphrase, "/dev/vdd")
    await driver.attach_volume(guest, device)
    assert (await luks_nodes(state_dir, guest))[node(device)]["image"]["virtual-size"] == 64 * MiB
    await wait_guest_sees(
        driver, guest, lambda c: 64 * MiB in sizes_seen(c).values(), "no 64 MiB disk"
    )
    assert not list(instance_dir(state_dir, guest).glob("*.key"))

    # Written through the guest's device (HMP's qemu-io on its block backend): plaintext
    # to the guest, ciphertext in the file, which the key opens on the host.
    await hmp(state_dir, guest, f'qemu-io -d {backend(device)} "write -P {PATTERN} 0 1M"')
    await hmp(state_dir, guest, f'qemu-io -d {backend(device)} "flush"')
    assert bytes([PATTERN]) * 4096 not in path.read_bytes()
    read = host_read(path, passphrase, f"read -P {PATTERN} 0 1M")
    assert "read 1048576/1048576 bytes" in read and "verification failed" not in read, read

    # Stopped and started again: QEMU opens it with the passphrase the host kept.
    await driver.power_off(guest, timeout=30)
    assert (await driver.get_info(guest)).state == PowerState.SHUTDOWN
    await driver.power_on(guest)
    await wait_console(driver, guest, f"{MARK} ready", count=2)
    assert (await luks_nodes(state_dir, guest))[node(device)]["image"]["virtual-size"] == 64 * MiB
    await wait_guest_sees(
        driver, guest, lambda c: 64 * MiB in sizes_seen(c).values(), "no 64 MiB disk after start"
    )
    assert not list(instance_dir(state_dir, guest).glob("*.key"))


async def test_a_grown_container_is_a_grown_disk_and_detach_takes_the_secret(
    driver, booted, state_dir
):
    guest, _ = booted
    volumes = _record(state_dir, guest)["volumes"]
    [(volume_id, device)] = [(v, d) for v, d in volumes.items() if d["path"].endswith("hot.img")]
    path = Path(device["path"])
    # Block Storage's extend of an encrypted volume: its container grows by 32 MiB (LUKS1
    # keeps no payload size in its header: the payload is the file after the header).
    os.truncate(path, path.stat().st_size + 32 * MiB)
    await driver.extend_volume(guest, volume_id)
    assert (await luks_nodes(state_dir, guest))[device["node"]]["image"]["virtual-size"] == (
        96 * MiB
    )
    await wait_guest_sees(
        driver, guest, lambda c: 96 * MiB in sizes_seen(c).values(), "the disk never grew"
    )
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    offset = info["format-specific"]["data"]["payload-offset"]
    assert path.stat().st_size - offset == 96 * MiB

    directory = instance_dir(state_dir, guest)
    await driver.detach_volume(guest, volume_id)
    assert device["key_secret"] not in qemu_secrets.load(directory)
    objects = await qmp_query(state_dir, guest, "qom-list", {"path": "/objects"})
    assert device["key_secret"] not in {o["name"] for o in objects}
    assert device["node"] not in await luks_nodes(state_dir, guest)


async def test_a_luks2_volume_is_refused_and_nothing_is_attached(driver, booted, state_dir):
    guest, _ = booted
    path, passphrase = luks_volume(state_dir / "luks2-stand-in.img", "16M")
    device = encrypted_device(path, passphrase, "/dev/vde", provider="luks2")
    before = _record(state_dir, guest)
    kept = qemu_secrets.load(instance_dir(state_dir, guest))
    with pytest.raises(DriverError, match="LUKS2 volumes are opened by the host's dm-crypt"):
        await driver.attach_volume(guest, device)
    assert _record(state_dir, guest) == before
    assert qemu_secrets.load(instance_dir(state_dir, guest)) == kept
    assert node(device) not in await luks_nodes(state_dir, guest)


async def test_destroy_removes_the_kept_secrets(driver, booted, state_dir):
    guest, _ = booted
    await driver.destroy(guest)
    assert not (instance_dir(state_dir, guest) / qemu_secrets.SECRETS).exists()


def _record(state_dir: Path, guest: str) -> dict:
    return json.loads((instance_dir(state_dir, guest) / "guest.json").read_text())
