"""The fake driver behaves like a hypervisor the control plane can rely on."""

from __future__ import annotations

import pytest

from cumulo.compute.states import PowerState
from cumulo.compute.virt.driver import BlockDevice, DriverError, FlavorSpec, GuestSpec, Vif
from cumulo.compute.virt.fake import FakeDriver

FLAVOR = FlavorSpec("m1.tiny", vcpus=1, memory_mb=512, root_gb=1)


def spec(uuid: str = "u1") -> GuestSpec:
    return GuestSpec(
        uuid=uuid,
        name="vm",
        hostname="vm",
        flavor=FLAVOR,
        image=None,
        vifs=(Vif("p1", "fa:16:3e:00:00:01", "net1", ("10.0.0.5",)),),
    )


async def test_spawn_then_power_cycle():
    driver = FakeDriver()
    await driver.spawn(spec())
    assert (await driver.get_info("u1")).state == PowerState.RUNNING
    await driver.pause("u1")
    assert (await driver.get_info("u1")).state == PowerState.PAUSED
    with pytest.raises(DriverError):
        await driver.pause("u1")
    await driver.unpause("u1")
    await driver.power_off("u1")
    assert (await driver.get_info("u1")).state == PowerState.SHUTDOWN
    await driver.power_on("u1")
    await driver.reboot("u1", hard=False)
    assert (await driver.get_info("u1")).state == PowerState.RUNNING
    assert "10.0.0.5" in await driver.get_console_output("u1")
    await driver.destroy("u1")
    await driver.destroy("u1")  # idempotent
    assert await driver.list_guests() == []


async def test_soft_reboot_needs_a_running_guest():
    driver = FakeDriver()
    await driver.spawn(spec())
    await driver.power_off("u1")
    with pytest.raises(DriverError):
        await driver.reboot("u1", hard=False)
    await driver.reboot("u1", hard=True)
    assert (await driver.get_info("u1")).state == PowerState.RUNNING


async def test_failing_host_refuses_spawn():
    driver = FakeDriver(fail_spawn=True)
    with pytest.raises(DriverError):
        await driver.spawn(spec())
    assert await driver.list_guests() == []


async def test_volumes_attach_once():
    driver = FakeDriver()
    await driver.spawn(spec())
    dev = BlockDevice("vol1", "/dev/vdb", {"driver_volume_type": "file"})
    await driver.attach_volume("u1", dev)
    with pytest.raises(DriverError):
        await driver.attach_volume("u1", dev)
    await driver.detach_volume("u1", "vol1")
    with pytest.raises(DriverError):
        await driver.detach_volume("u1", "vol1")


async def test_snapshot_writes_a_file(tmp_path):
    driver = FakeDriver()
    await driver.spawn(spec())
    target = tmp_path / "snap"
    assert await driver.snapshot("u1", str(target)) == "raw"
    assert target.read_bytes().startswith(b"fake snapshot of u1")


async def test_capacity_is_reported():
    res = await FakeDriver("h1", vcpus=4, memory_mb=8192, local_gb=100).get_available_resource()
    assert (res.hypervisor_hostname, res.vcpus, res.memory_mb, res.local_gb) == ("h1", 4, 8192, 100)
    assert res.hypervisor_type == "fake"
