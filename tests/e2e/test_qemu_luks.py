"""Encrypted volumes in real QEMU guests: a LUKS1 container (made here as Block Storage
makes one: qemu-img, passphrase the key's hex) is opened by QEMU's own LUKS driver, at
boot and hot-plugged; the guest sees the payload, what it writes lands encrypted in the
file, a power cycle opens it again with the passphrase the host kept, a grown container
is a grown disk, and a detach takes the secret away. LUKS2 is refused cleanly.

Skipped with the reason when QEMU or the tiny guest's packages are unavailable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import stat
import subprocess
import time
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


async def test_an_encrypted_volume_over_nbd_is_opened_over_the_export(driver, booted, state_dir):
    guest, _ = booted
    path, passphrase = luks_volume(state_dir / "luks-nbd.img", "16M")
    port = _free_port()
    # Block Storage's export of an encrypted volume serves the container as it is (raw).
    server = subprocess.Popen(
        ["qemu-nbd", "--format=raw", "--persistent", "--shared=2", "--bind=127.0.0.1",
         f"--port={port}", "--export-name=v", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_port(port)
        device = dataclasses.replace(
            encrypted_device(path, passphrase, "/dev/vde"),
            connection_info={
                "driver_volume_type": "nbd",
                "data": {"uri": f"nbd://127.0.0.1:{port}/v", "format": "luks", "encrypted": True},
            },
        )
        await driver.attach_volume(guest, device)
        nodes = await luks_nodes(state_dir, guest)
        assert nodes[node(device)]["image"]["virtual-size"] == 16 * MiB
        await hmp(state_dir, guest, f'qemu-io -d {backend(device)} "write -P {PATTERN} 0 1M"')
        await hmp(state_dir, guest, f'qemu-io -d {backend(device)} "flush"')
        assert bytes([PATTERN]) * 4096 not in path.read_bytes()
        assert "read 1048576/" in host_read(path, passphrase, f"read -P {PATTERN} 0 1M")
        with pytest.raises(DriverError, match="reached over nbd"):
            await driver.extend_volume(guest, device.volume_id)
        await driver.detach_volume(guest, device.volume_id)
        assert node(device) not in await luks_nodes(state_dir, guest)
    finally:
        server.terminate()
        server.wait(10)


async def test_a_swap_mirrors_an_encrypted_volume_onto_another_with_its_own_key(
    driver, booted, state_dir
):
    guest, old = booted
    await hmp(state_dir, guest, f'qemu-io -d {backend(old)} "write -P {PATTERN} 1M 1M"')
    await hmp(state_dir, guest, f'qemu-io -d {backend(old)} "flush"')
    path, passphrase = luks_volume(state_dir / "luks-swapped.img", "32M")
    new = encrypted_device(path, passphrase, old.device_name)
    await driver.swap_volume(guest, old.volume_id, new)
    drive = _record(state_dir, guest)["volumes"][new.volume_id]
    assert (drive["path"], drive["format"]) == (str(path), "luks")
    directory = instance_dir(state_dir, guest)
    assert qemu_secrets.load(directory)[drive["key_secret"]] == passphrase
    assert f"{node(old)}-key" not in qemu_secrets.load(directory)
    objects = {
        o["name"] for o in await qmp_query(state_dir, guest, "qom-list", {"path": "/objects"})
    }
    assert drive["key_secret"] in objects and f"{node(old)}-key" not in objects
    # The guest's data, copied in the clear through both keys, is the new key's ciphertext.
    assert bytes([PATTERN]) * 4096 not in path.read_bytes()
    assert "read 1048576/" in host_read(path, passphrase, f"read -P {PATTERN} 1M 1M")


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


async def test_a_rescued_guest_opens_its_encrypted_volume_with_the_kept_secret(
    driver, booted, state_dir, tiny_guest
):
    guest, _ = booted
    base = state_dir / "rescue-base.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(base), "64M"], check=True)
    plain_spec = guest_spec(tiny_guest, "vm-luks")
    image = dataclasses.replace(plain_spec.image, path=str(base), disk_format="qcow2")
    rescue = dataclasses.replace(plain_spec, uuid=guest, image=image)
    encrypted_nodes = {
        d["node"] for d in _record(state_dir, guest)["volumes"].values() if d.get("key_secret")
    }
    assert encrypted_nodes
    await driver.rescue(guest, rescue)
    assert encrypted_nodes <= set(await luks_nodes(state_dir, guest))
    await driver.unrescue(guest)
    assert encrypted_nodes <= set(await luks_nodes(state_dir, guest))
    assert not list(instance_dir(state_dir, guest).glob("*.key"))


async def test_a_cold_migration_opens_the_encrypted_volume_on_the_destination(
    driver, tiny_guest, state_dir
):
    """The destination is given the volume with its key by its own compute manager (as at
    a spawn), keeps the passphrase itself; the source forgets it with its guest."""
    path, passphrase = luks_volume(state_dir / "luks-mover.img", "16M")
    device = encrypted_device(path, passphrase, "/dev/vdc")
    spec = dataclasses.replace(guest_spec(tiny_guest, "vm-mover"), block_devices=(device,))
    await driver.spawn(spec)
    await wait_console(driver, spec.uuid, f"{MARK} ready")
    driver.migration_address = "127.0.0.1"
    dst = QemuDriver(
        state_dir, "e2e-dst", accel=driver.accel or "tcg", migration_address="127.0.0.1"
    )
    await dst.init_host("e2e-dst")
    disk_info = await driver.migrate_disk_and_power_off(spec.uuid)
    try:
        await dst.finish_migration(spec, disk_info, power_on=True)
    finally:
        await driver.end_disk_export(spec.uuid)
    try:
        await wait_console(dst, spec.uuid, f"{MARK} ready")
        nodes = await dst._qmp(spec.uuid, "query-named-block-nodes", {"flat": True})
        assert node(device) in {n["node-name"] for n in nodes if n["drv"] == "luks"}
        kept = dst.instances_dir / spec.uuid / qemu_secrets.SECRETS
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert qemu_secrets.load(kept.parent) == {f"{node(device)}-key": passphrase}
    finally:
        await driver.destroy(spec.uuid)
        await dst.destroy(spec.uuid)
    assert not (instance_dir(state_dir, spec.uuid) / qemu_secrets.SECRETS).exists()


async def test_destroy_removes_the_kept_secrets(driver, booted, state_dir):
    guest, _ = booted
    await driver.destroy(guest)
    assert not (instance_dir(state_dir, guest) / qemu_secrets.SECRETS).exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"qemu-nbd never listened on {port}"
            await asyncio.sleep(0.1)


def _record(state_dir: Path, guest: str) -> dict:
    return json.loads((instance_dir(state_dir, guest) / "guest.json").read_text())
