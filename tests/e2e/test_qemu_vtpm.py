"""A QEMU guest with an emulated TPM (Nova's vTPM) on the QEMU driver: one swtpm per
guest, its state in the instance directory encrypted with the Key Manager secret's
passphrase (given to swtpm on a pipe, never on a command line or in a file but the
0600 secrets.json of a `host` policy TPM); the tiny guest finds /sys/class/tpm/tpm0 and
prints its version and (TPM 1.2) its endorsement key's digest, which stays the same
across stop/start and a restart of the compute host: the state is kept, and opened
only with the right passphrase."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process, qemu_tpm
from cumulo.compute.virt.driver import DriverError, FlavorSpec, GuestSpec, ImageSpec, VirtualTPM
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.testing.guest import MARK, TinyGuest
from tests.e2e.test_qemu_driver import tiny_guest_with
from tests.e2e.test_qemu_moves import _no_progress
from tests.e2e.test_qemu_moves import hosts as hosts  # two hosts over 127.0.0.1

pytestmark = pytest.mark.e2e

HOST = "e2e-vtpm"
FLAVOR = FlavorSpec("m1.tiny", vcpus=1, memory_mb=256, root_gb=1)


@pytest.fixture(scope="module")
def tiny_guest() -> TinyGuest:
    return tiny_guest_with("swtpm", "swtpm_setup")  # Debian's swtpm and swtpm-tools


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vtpm-state")


async def started_driver(tiny: TinyGuest, state_dir: Path) -> QemuDriver:
    """The host's driver as its agent starts it (again, after a restart)."""
    driver = QemuDriver(state_dir, HOST, probe_kernel=tiny.kernel, vnc=False)
    await driver.init_host(HOST)
    assert driver.supports_vtpm
    return driver


def tpm_guest(tiny: TinyGuest, version: str, model: str, security: str) -> GuestSpec:
    guest_uuid = str(uuid.uuid4())
    passphrase = base64.b64encode(secrets.token_bytes(384)).decode()
    return GuestSpec(
        uuid=guest_uuid,
        name=f"vtpm-{version}",
        hostname=f"vtpm-{version.replace('.', '-')}",
        flavor=FLAVOR,
        image=ImageSpec(
            id="tiny",
            disk_format="aki",
            kernel_path=str(tiny.kernel),
            ramdisk_path=str(tiny.initramfs),
            properties={"os_command_line": tiny.command_line},
        ),
        vtpm=VirtualTPM(version, model, security, str(uuid.uuid4()), passphrase),
    )


async def tpm_lines(driver: QemuDriver, guest: str, count: int, timeout: float = 90) -> list[str]:
    """The guest's `tpm0` lines once its `count`-th boot printed one."""
    deadline = time.monotonic() + timeout
    while True:
        console = await driver.get_console_output(guest)
        lines = [line for line in console.splitlines() if f"{MARK} tpm0 version" in line]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"no tpm0 line #{count} on the console of {guest}:\n{console}")
        await asyncio.sleep(0.3)


def argv_of(pid: int | None) -> bytes:
    assert pid, "no process"
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_a_tpm_1_2_keeps_its_state_across_power_cycles_and_a_host_restart(
    tiny_guest, state_dir
):
    driver = await started_driver(tiny_guest, state_dir)
    spec = tpm_guest(tiny_guest, "1.2", "tpm-tis", "host")
    await driver.spawn(spec)
    directory = state_dir / "compute" / HOST / "instances" / spec.uuid
    try:
        first = (await tpm_lines(driver, spec.uuid, 1))[-1]
        assert " tpm0 version 1 ek " in first
        ek = first.rsplit(" ek ", 1)[1].strip()
        # The digest of an EK, not of nothing: swtpm_setup manufactured it.
        assert ek and ek != "e3b0c44298fc1c14"

        # QEMU's TPM is the emulator on the swtpm's socket; neither process has the
        # passphrase on its command line; the state is swtpm's encrypted file.
        qemu_argv = argv_of(qemu_process.read_pid(directory))
        assert (
            b"emulator,id=tpm0,chardev=chrtpm" in qemu_argv and b"tpm-tis,tpmdev=tpm0" in qemu_argv
        )
        swtpm_argv = argv_of(qemu_tpm.pid(directory))
        assert b"pwdfd=" in swtpm_argv and b"mode=aes-256-cbc" in swtpm_argv
        for argv in (qemu_argv, swtpm_argv):
            assert spec.vtpm.passphrase.encode() not in argv
        state = directory / "tpm" / "tpm-00.permall"
        assert state.is_file()
        holding = [
            p.name
            for p in directory.rglob("*")
            if p.is_file() and spec.vtpm.passphrase.encode() in p.read_bytes()
        ]
        assert holding == ["secrets.json"]  # a `host` TPM's passphrase, kept as libvirt does
        assert (directory / "secrets.json").stat().st_mode & 0o777 == 0o600

        await driver.power_off(spec.uuid, timeout=20)
        assert not qemu_tpm.running(directory)  # the TPM goes down with its guest
        await driver.power_on(spec.uuid)
        again = (await tpm_lines(driver, spec.uuid, 2))[-1]
        assert again.rsplit(" ek ", 1)[1].strip() == ek

        # The agent restarts: a `host` TPM's passphrase is still on the host.
        restarted = await started_driver(tiny_guest, state_dir)
        await restarted.power_off(spec.uuid, timeout=20)
        await restarted.power_on(spec.uuid)
        third = (await tpm_lines(restarted, spec.uuid, 3))[-1]
        assert third.rsplit(" ek ", 1)[1].strip() == ek
    finally:
        await driver.destroy(spec.uuid)
    assert not directory.exists()
    assert not qemu_tpm.running(directory)


async def test_a_user_tpm_needs_its_passphrase_again_after_a_restart(tiny_guest, state_dir):
    driver = await started_driver(tiny_guest, state_dir)
    spec = tpm_guest(tiny_guest, "2.0", "tpm-crb", "user")
    await driver.spawn(spec)
    directory = state_dir / "compute" / HOST / "instances" / spec.uuid
    try:
        assert " tpm0 version 2 " in (await tpm_lines(driver, spec.uuid, 1))[-1]
        assert b"tpm-crb,tpmdev=tpm0" in argv_of(qemu_process.read_pid(directory))
        assert (directory / "tpm" / "tpm2-00.permall").is_file()
        # Held in memory only: no file of the guest has it.
        for path in directory.rglob("*"):
            if path.is_file():
                assert spec.vtpm.passphrase.encode() not in path.read_bytes(), path
        await driver.power_off(spec.uuid, timeout=20)

        restarted = await started_driver(tiny_guest, state_dir)
        assert await restarted.vtpm_passphrase(spec.uuid) is None
        with pytest.raises(DriverError, match="vTPM secret .* is not on this host"):
            await restarted.power_on(spec.uuid)
        # A wrong passphrase cannot open the state: the guest does not start.
        await restarted.keep_vtpm_passphrase(spec.uuid, "not-the-" + spec.vtpm.passphrase)
        with pytest.raises(DriverError):
            await restarted.power_on(spec.uuid)
        assert not qemu_process.process_alive(qemu_process.read_pid(directory), spec.uuid)
        # The Key Manager's passphrase (what the compute manager reads again) does.
        await restarted.keep_vtpm_passphrase(spec.uuid, spec.vtpm.passphrase)
        await restarted.power_on(spec.uuid)
        assert " tpm0 version 2 " in (await tpm_lines(restarted, spec.uuid, 2))[-1]
    finally:
        await driver.destroy(spec.uuid)
    assert not directory.exists()
    assert os.path.exists(state_dir)


def ek_of(line: str) -> str:
    return line.rsplit(" ek ", 1)[1].strip()


async def test_cold_and_live_migration_take_the_tpm_state_along(hosts, tiny_guest):
    src, dst = hosts
    spec = tpm_guest(tiny_guest, "1.2", "tpm-tis", "host")
    await src.spawn(spec)
    ek = ek_of((await tpm_lines(src, spec.uuid, 1))[-1])

    # Cold: the state files go with the disks; the destination boots the same TPM.
    disk_info = await src.migrate_disk_and_power_off(spec.uuid)
    assert disk_info["tpm"]["version"] == "1.2" and disk_info["tpm"]["state"]
    try:
        await dst.finish_migration(spec, disk_info, power_on=True)
    finally:
        await src.end_disk_export(spec.uuid)
    assert ek_of((await tpm_lines(dst, spec.uuid, 1))[-1]) == ek
    await src.destroy(spec.uuid)

    # Live, back: QEMU carries the TPM's state in its migration stream to a swtpm that
    # starts with none; the guest keeps running (no boot) and boots the same TPM later.
    data = await src.pre_live_migration(spec, block_migration=True)
    result = await dst.live_migrate(spec.uuid, data, True, _no_progress)
    await src.post_live_migration_at_destination(spec.uuid, result)
    await dst.post_live_migration_at_source(spec.uuid)
    assert spec.uuid not in await dst.list_guests()
    assert not qemu_tpm.running(dst.instances_dir / spec.uuid)
    await asyncio.sleep(2)
    assert f"{MARK} tpm0" not in await src.get_console_output(spec.uuid)  # no boot on arrival
    await src.reboot(spec.uuid, hard=False)
    assert ek_of((await tpm_lines(src, spec.uuid, 1))[-1]) == ek
    await src.destroy(spec.uuid)


async def test_resize_in_place_keeps_or_renews_the_tpm_and_revert_restores_it(
    tiny_guest, state_dir
):
    driver = await started_driver(tiny_guest, state_dir)
    spec = tpm_guest(tiny_guest, "1.2", "tpm-tis", "user")
    await driver.spawn(spec)
    directory = driver.instances_dir / spec.uuid
    try:
        ek = ek_of((await tpm_lines(driver, spec.uuid, 1))[-1])
        # To a `host` policy (Tempest's opt-in to live migration): the same TPM, now kept.
        await driver.power_off(spec.uuid, timeout=20)
        host_tpm = replace(spec.vtpm, security="host")
        await driver.resize(spec.uuid, replace(FLAVOR, name="m1.host"), host_tpm)
        assert spec.vtpm.passphrase in (directory / "secrets.json").read_text()
        await driver.power_on(spec.uuid)
        assert ek_of((await tpm_lines(driver, spec.uuid, 2))[-1]) == ek
        await driver.power_off(spec.uuid, timeout=20)
        await driver.revert_resize(spec.uuid)
        assert not (directory / "secrets.json").exists()  # `user` again: in memory only
        await driver.power_on(spec.uuid)
        assert ek_of((await tpm_lines(driver, spec.uuid, 3))[-1]) == ek

        # To a TPM 2.0: a new TPM; reverted, the 1.2 with its state comes back.
        await driver.power_off(spec.uuid, timeout=20)
        tpm2 = replace(spec.vtpm, version="2.0", model="tpm-crb")
        await driver.resize(spec.uuid, replace(FLAVOR, name="m1.tpm2"), tpm2)
        await driver.power_on(spec.uuid)
        assert " tpm0 version 2 " in (await tpm_lines(driver, spec.uuid, 4))[-1]
        await driver.power_off(spec.uuid, timeout=20)
        await driver.revert_resize(spec.uuid)
        await driver.power_on(spec.uuid)
        assert ek_of((await tpm_lines(driver, spec.uuid, 5))[-1]) == ek
    finally:
        await driver.destroy(spec.uuid)
