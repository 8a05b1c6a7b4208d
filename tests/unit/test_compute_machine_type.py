"""A server keeps the machine type of its first spawn (Nova's image_hw_machine_type
system metadata): the manager records what the driver chose, and every later guest spec
of the server names it, whatever the host's default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cumulo.compute.manager import ComputeManager, with_recorded_machine_type
from cumulo.compute.virt.driver import MACHINE_TYPE_KEY, FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.fake import FakeDriver
from cumulo.compute.virt.qemu import QemuDriver


class ImageCache:
    """The host's image cache, for one image with these properties."""

    def __init__(self, properties: dict[str, Any]) -> None:
        self.properties = properties

    async def fetch(self, token: str, ref: str, meta: dict | None = None, trusted=None):
        return Path("/images") / ref, {"id": ref, "disk_format": "qcow2", **self.properties}


def manager(driver, image_properties: dict[str, Any] | None = None) -> ComputeManager:
    cache = ImageCache(image_properties or {})
    return ComputeManager("host1", driver, None, cache, None)  # type: ignore[arg-type]


def instance(**system_metadata: str) -> dict[str, Any]:
    return {
        "uuid": "u1",
        "name": "vm",
        "hostname": "vm",
        "image_ref": "img1",
        "flavor": {"name": "m1", "vcpus": 1, "memory_mb": 512, "root_gb": 1},
        "system_metadata": {"boot_roles": "member", **system_metadata},
    }


def image(**properties: str) -> ImageSpec:
    return ImageSpec("img1", "qcow2", path="/i", properties=properties)


def test_the_recorded_machine_type_is_the_images_when_one_is_recorded():
    recorded = {MACHINE_TYPE_KEY: "pc"}
    assert with_recorded_machine_type(image(), recorded).properties == {"hw_machine_type": "pc"}
    # The record wins over what the image says now (Nova's image meta is the record).
    changed = with_recorded_machine_type(image(hw_machine_type="q35", os_type="linux"), recorded)
    assert changed.properties == {"hw_machine_type": "pc", "os_type": "linux"}
    same = image(hw_machine_type="pc")
    assert with_recorded_machine_type(same, recorded) is same
    plain = image(os_type="linux")
    assert with_recorded_machine_type(plain, {}) is plain
    assert with_recorded_machine_type(plain, None) is plain
    assert with_recorded_machine_type(None, recorded) is None


async def test_a_guest_spec_names_the_recorded_machine_type_on_a_q35_host(tmp_path):
    qemu = QemuDriver(tmp_path, "host1", accel="tcg", machine_type="q35")
    host = manager(qemu, {"os_type": "linux"})
    guest = await host._guest_spec("t", instance(**{MACHINE_TYPE_KEY: "pc"}), [])
    assert guest.image is not None
    assert guest.image.properties == {"os_type": "linux", "hw_machine_type": "pc"}
    assert qemu._machine_choice(guest) == ("pc", False)
    # Never recorded (a server older than the record): the host's default, as before.
    fresh = await host._guest_spec("t", instance(), [])
    assert qemu._machine_choice(fresh) == ("q35", False)


async def test_the_machine_type_the_driver_chose_is_recorded_once():
    fake = FakeDriver("host1", machine_type="q35")
    host = manager(fake)
    spec = await host._guest_spec("t", instance(), [])
    await fake.spawn(spec)
    assert await fake.guest_machine_type("u1") == "q35"
    update = await host._machine_type_record("u1", instance()["system_metadata"])
    assert update == {"system_metadata": {"boot_roles": "member", MACHINE_TYPE_KEY: "q35"}}
    # Recorded already, or no guest, or a driver without machine types: nothing to write.
    assert await host._machine_type_record("u1", {MACHINE_TYPE_KEY: "pc"}) == {}
    assert await host._machine_type_record("gone", {}) == {}
    plain = FakeDriver("host2")
    await plain.spawn(spec)
    assert await manager(plain)._machine_type_record("u1", {}) == {}


async def test_the_fake_driver_takes_the_images_machine_type_before_its_default():
    fake = FakeDriver("host1", machine_type="q35")
    flavor = FlavorSpec("m1", 1, 512, 1)
    await fake.spawn(GuestSpec("a", "a", "a", flavor, image(hw_machine_type="pc")))
    await fake.spawn(GuestSpec("b", "b", "b", flavor, None))
    assert await fake.guest_machine_type("a") == "pc"
    assert await fake.guest_machine_type("b") == "q35"


async def test_the_qemu_driver_reports_the_machine_type_of_its_record(tmp_path):
    from cumulo.compute.virt.driver import GuestNotFound

    qemu = QemuDriver(tmp_path, "host1", accel="tcg", machine_type="q35")
    directory = qemu.instances_dir / "u1"
    directory.mkdir(parents=True)
    record = {"machine": {"machine_type": "pc-i440fx-7.2", "nics": []}, "volumes": {}}
    (directory / "guest.json").write_text(json.dumps(record))
    assert await qemu.guest_machine_type("u1") == "pc-i440fx-7.2"
    with pytest.raises(GuestNotFound):
        await qemu.guest_machine_type("u2")


async def test_at_start_the_running_guests_machine_types_are_recorded():
    """Servers made before the record was kept get their guests' machine type when the
    host starts (Nova's init_host), unless an action is in flight."""
    fake = FakeDriver("host1", machine_type="pc")
    flavor = FlavorSpec("m1", 1, 512, 1)
    for uuid in ("old", "recorded", "busy"):
        await fake.spawn(GuestSpec(uuid, uuid, uuid, flavor, None))
    written: list[tuple[str, dict, list]] = []

    class Conductor:
        async def instance_update(self, ctx, uuid, values, expected_task_state=None, **kw):
            written.append((uuid, values, expected_task_state))

    host = manager(fake)
    host.conductor = Conductor()  # type: ignore[assignment]
    instances = [
        {"uuid": "old", "task_state": None, "vm_state": "active", "system_metadata": {}},
        {
            "uuid": "recorded",
            "task_state": None,
            "vm_state": "active",
            "system_metadata": {MACHINE_TYPE_KEY: "q35"},
        },
        {"uuid": "busy", "task_state": "rebooting", "vm_state": "active", "system_metadata": {}},
        {"uuid": "no-guest", "task_state": None, "vm_state": "stopped", "system_metadata": {}},
    ]
    await host._record_machine_types({}, instances)
    assert written == [("old", {"system_metadata": {MACHINE_TYPE_KEY: "pc"}}, [None])]
