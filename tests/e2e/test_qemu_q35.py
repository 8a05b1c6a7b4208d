"""q35 guests (an image's hw_machine_type=q35, as on Nova's libvirt driver): the tiny
test guest boots on QEMU's q35 machine, whose root complex takes no hot-plug, so its
volumes and NICs sit behind PCIe root ports of their own. A volume and a NIC plugged
into the running guest appear there and leave again, and the device metadata's
addresses are where the guest's firmware put them: the bus numbers below are read
back from the root ports' configuration space (QMP query-pci), which the guest
programmed, not computed from the driver's layout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import BlockDevice, DriverError, Vif
from cumulo.compute.virt.qemu import QemuDriver, tap_name
from cumulo.testing.guest import MARK
from tests.e2e.test_qemu_driver import disks_seen, guest_spec, tiny_guest, wait_console

pytestmark = pytest.mark.e2e
HOST = "e2e-q35"
__all__ = ["tiny_guest"]  # the fixture, used by name


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("q35-state")


@pytest.fixture(scope="module")
async def driver(tiny_guest, state_dir: Path):
    driver = QemuDriver(state_dir, HOST, probe_kernel=tiny_guest.kernel)
    await driver.init_host(HOST)
    yield driver
    for guest in await driver.list_guests():
        await driver.destroy(guest)


def q35_spec(tiny, name: str, *, vifs: tuple[Vif, ...] = (), **properties: str):
    spec = guest_spec(tiny, name, vifs=vifs)
    props = {**spec.image.properties, "hw_machine_type": "q35", **properties}
    image = type(spec.image)(**{**spec.image.__dict__, "properties": props})
    return type(spec)(**{**spec.__dict__, "image": image})


async def guest_addresses(state_dir: Path, guest: str) -> dict[str, str]:
    """Device id -> the address the guest finds it at: on bus 0, or on the bus number
    the firmware gave the root port (bridge) it sits behind."""
    directory = state_dir / "compute" / HOST / "instances" / guest
    async with qp.qmp_session(directory, guest) as qmp:
        buses = await qmp.execute("query-pci")
    found: dict[str, str] = {}

    def walk(number: int, devices: list[dict[str, Any]]) -> None:
        for dev in devices:
            if dev.get("qdev_id") and dev["function"] == 0:
                found[dev["qdev_id"]] = f"0000:{number:02x}:{dev['slot']:02x}.0"
            bridge = dev.get("pci_bridge")
            if bridge:
                walk(bridge["bus"]["secondary"], bridge.get("devices", []))

    for bus in buses:
        walk(bus["bus"], bus["devices"])
    return found


def machine_option(state_dir: Path, guest: str) -> str:
    pid = qp.read_pid(state_dir / "compute" / HOST / "instances" / guest)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index("-machine") + 1]


async def wait_disks(driver: QemuDriver, guest: str, count: int, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while len(disks := disks_seen(await driver.get_console_output(guest))) != count:
        assert time.monotonic() < deadline, (
            f"the guest never saw {count} disks: "
            + (await driver.get_console_output(guest))[-1500:]
        )
        await asyncio.sleep(0.2)
    return disks


async def test_a_q35_guest_hot_plugs_a_volume_and_a_nic_where_its_metadata_says(
    driver, tiny_guest, state_dir
):
    if os.geteuid() != 0:
        pytest.skip("creating tap devices needs root")
    vif = Vif(port_id=str(uuid.uuid4()), mac="fa:16:3e:35:00:01", network_id="net")
    spec = q35_spec(tiny_guest, "vm-q35", vifs=(vif,))
    await driver.spawn(spec)
    try:
        await wait_console(driver, spec.uuid, f"{MARK} ready", timeout=120)
        assert machine_option(state_dir, spec.uuid) == "q35"
        console = await driver.get_console_output(spec.uuid)
        assert f"{MARK} eth0 mac {vif.mac}" in console
        before = disks_seen(console)

        volume = state_dir / "q35-volume.raw"
        subprocess.run(["truncate", "-s", "64M", str(volume)], check=True)
        device = BlockDevice(
            volume_id=str(uuid.uuid4()),
            device_name="/dev/vdc",
            connection_info={"driver_volume_type": "file", "data": {"path": str(volume)}},
        )
        await driver.attach_volume(spec.uuid, device)
        await wait_disks(driver, spec.uuid, len(before) + 1)
        second = Vif(port_id=str(uuid.uuid4()), mac="fa:16:3e:35:00:02", network_id="net")
        await driver.attach_interface(spec.uuid, second)

        seen = await guest_addresses(state_dir, spec.uuid)
        reported = {a.id: a.address for a in await driver.get_device_addresses(spec.uuid)}
        # The boot NIC, then the volume and the second NIC in the next hot-plug slots:
        # behind the first three root ports, whose buses the firmware numbered 1, 2, 3.
        assert reported == {
            vif.mac: "0000:01:00.0",
            device.volume_id: "0000:02:00.0",
            second.mac: "0000:03:00.0",
        }
        assert seen[f"nic-{tap_name(vif.port_id)}"] == reported[vif.mac]
        assert seen[f"vol-{device.volume_id[:12]}"] == reported[device.volume_id]
        assert seen[f"nic-{tap_name(second.port_id)}"] == reported[second.mac]
        # The fixed devices keep their pc slots, on the root complex.
        assert (seen["root"], seen["config"]) == ("0000:00:07.0", "0000:00:0a.0")

        # Unplugged, the guest lets them go (the driver waits for its acknowledgement).
        await driver.detach_interface(spec.uuid, second.port_id)
        await driver.detach_volume(spec.uuid, device.volume_id)
        assert await wait_disks(driver, spec.uuid, len(before)) == before
        seen = await guest_addresses(state_dir, spec.uuid)
        assert f"vol-{device.volume_id[:12]}" not in seen
        assert f"nic-{tap_name(second.port_id)}" not in seen
        # Hard reboot: the same root ports, the same bus numbers.
        await driver.reboot(spec.uuid, hard=True)
        await wait_console(driver, spec.uuid, f"{MARK} ready", count=2, timeout=120)
        seen = await guest_addresses(state_dir, spec.uuid)
        assert seen[f"nic-{tap_name(vif.port_id)}"] == "0000:01:00.0"
    finally:
        await driver.destroy(spec.uuid)


async def test_a_machine_type_qemu_does_not_have_fails_the_spawn(driver, tiny_guest):
    for machine_type in ("virt", "pc-q35-0.1"):
        spec = q35_spec(tiny_guest, "vm-bad", hw_machine_type=machine_type)
        with pytest.raises(DriverError, match=f"Machine type '{machine_type}' is not supported"):
            await driver.spawn(spec)
        assert spec.uuid not in await driver.list_guests()
