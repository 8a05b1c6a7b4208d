"""A guest cold-migrated between two QEMU hosts whose default machine types differ
([compute] qemu_machine_type pc on the source, q35 on the destination) keeps its
machine: the destination is given the spec the compute manager builds, which names the
machine type recorded at the first spawn (Nova's image_hw_machine_type), and its QEMU
runs `-machine pc`, not its own q35 default.

Skipped with the reason when QEMU or the guest's packages are unavailable (failed
under CI)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cumulo.compute.manager import with_recorded_machine_type
from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import MACHINE_TYPE_KEY
from cumulo.compute.virt.qemu import QemuDriver
from tests.e2e.test_qemu_moves import base_image, console_has, spec, tiny_guest

pytestmark = pytest.mark.e2e
__all__ = ["base_image", "tiny_guest"]  # the fixtures, used by name


@pytest.fixture(scope="module")
async def hosts(tiny_guest, tmp_path_factory):
    state = tmp_path_factory.mktemp("qemu-mtype")
    pair = []
    for name, machine_type in (("mtype-pc", "pc"), ("mtype-q35", "q35")):
        driver = QemuDriver(
            state,
            name,
            accel="tcg",
            vnc=False,
            migration_address="127.0.0.1",
            machine_type=machine_type,
        )
        await driver.init_host(name)
        pair.append(driver)
    yield pair
    for driver in pair:
        for guest in await driver.list_guests():
            await driver.destroy(guest)


def machine_option(driver: QemuDriver, guest: str) -> str:
    """The `-machine` argument of the guest's running QEMU."""
    pid = qp.read_pid(driver.instances_dir / guest)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index("-machine") + 1]


async def test_a_cold_migrated_guest_keeps_its_machine_type_on_a_q35_host(
    hosts, tiny_guest, base_image
):
    src, dst = hosts
    guest = spec(tiny_guest, base_image)
    await src.spawn(guest)
    assert machine_option(src, guest.uuid) == "pc"
    recorded = {MACHINE_TYPE_KEY: await src.guest_machine_type(guest.uuid)}
    assert recorded == {MACHINE_TYPE_KEY: "pc"}
    # Without the record the destination would make it a q35 guest.
    assert dst._machine_choice(guest) == ("q35", False)

    disk_info = await src.migrate_disk_and_power_off(guest.uuid)
    try:
        moved = replace(guest, image=with_recorded_machine_type(guest.image, recorded))
        await dst.finish_migration(moved, disk_info, power_on=True)
    finally:
        await src.end_disk_export(guest.uuid)
    assert machine_option(dst, guest.uuid) == "pc"
    assert await dst.guest_machine_type(guest.uuid) == "pc"
    await console_has(dst, guest.uuid, r"tick 1\b")  # it boots there, on its own machine
    await src.destroy(guest.uuid)
    await dst.destroy(guest.uuid)
