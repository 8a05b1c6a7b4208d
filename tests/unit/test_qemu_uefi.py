"""UEFI guests (an image with hw_firmware_type=uefi, as on Nova's libvirt driver): QEMU
gets OVMF's code read-only and the guest's own variable store from its instance
directory as pflash; a host without OVMF refuses the boot with a message that names
the missing firmware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import DriverError, FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.qemu import QemuDriver


@pytest.fixture
def ovmf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An OVMF installation of this test's own (code and variable template)."""
    code, template = tmp_path / "OVMF_CODE_4M.fd", tmp_path / "OVMF_VARS_4M.fd"
    code.write_bytes(b"code" * 1024)
    template.write_bytes(b"vars" * 1024)
    monkeypatch.setattr(qp, "OVMF_CODE", code)
    monkeypatch.setattr(qp, "OVMF_VARS", template)
    return code, template


def machine(firmware: str) -> qp.MachineConfig:
    return qp.MachineConfig(
        uuid="0e5b1c9e-0000-4000-8000-000000000001",
        name="vm",
        vcpus=1,
        memory_mb=256,
        accel="tcg",
        firmware=firmware,
    )


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_a_uefi_guest_boots_ovmf_with_its_own_variable_store(tmp_path, ovmf):
    code, _template = ovmf
    argv = qp.command_line(machine("uefi"), tmp_path, qmp_fd=3)

    assert option_values(argv, "-machine") == ["pc,pflash0=ovmf-code,pflash1=ovmf-vars"]
    blockdevs = {b["node-name"]: b for b in map(json.loads, option_values(argv, "-blockdev"))}
    assert blockdevs["ovmf-code"] == {
        "node-name": "ovmf-code",
        "driver": "raw",
        "read-only": True,
        "file": {"driver": "file", "filename": str(code), "read-only": True},
    }
    assert blockdevs["ovmf-vars"] == {
        "node-name": "ovmf-vars",
        "driver": "raw",
        "read-only": False,
        "file": {"driver": "file", "filename": str(tmp_path / "nvram.fd"), "read-only": False},
    }


def test_a_bios_guest_has_no_pflash(tmp_path):
    argv = qp.command_line(machine("bios"), tmp_path, qmp_fd=3)

    assert option_values(argv, "-machine") == ["pc"]
    assert not [b for b in option_values(argv, "-blockdev") if "ovmf" in b]


def test_the_firmware_type_is_the_images_and_bios_without_one(ovmf):
    assert qp.firmware_type({}) == "bios"
    assert qp.firmware_type({"hw_firmware_type": "bios"}) == "bios"
    assert qp.firmware_type({"hw_firmware_type": "uefi"}) == "uefi"
    with pytest.raises(DriverError, match="unknown firmware type 'coreboot'"):
        qp.firmware_type({"hw_firmware_type": "coreboot"})


def test_a_host_without_ovmf_says_which_firmware_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(qp, "OVMF_CODE", tmp_path / "no" / "OVMF_CODE_4M.fd")
    with pytest.raises(DriverError) as failure:
        qp.firmware_type({"hw_firmware_type": "uefi"})
    assert "UEFI firmware is missing" in str(failure.value)
    assert str(tmp_path / "no" / "OVMF_CODE_4M.fd") in str(failure.value)
    assert "ovmf" in str(failure.value)
    assert qp.firmware_type({}) == "bios"  # BIOS guests still boot


def test_the_variable_store_is_made_once_and_then_kept(tmp_path, ovmf):
    _code, template = ovmf
    nvram = qp.make_nvram(tmp_path)
    assert nvram == tmp_path / "nvram.fd"
    assert nvram.read_bytes() == template.read_bytes()

    nvram.write_bytes(b"BootOrder changed by the guest")
    assert qp.make_nvram(tmp_path).read_bytes() == b"BootOrder changed by the guest"


async def test_spawning_a_uefi_guest_on_a_host_without_ovmf_fails_and_leaves_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(qp, "OVMF_VARS", tmp_path / "no" / "OVMF_VARS_4M.fd")
    driver = QemuDriver(tmp_path / "state", "host1", accel="tcg")
    image = ImageSpec("img", "qcow2", properties={"hw_firmware_type": "uefi"})
    guest = GuestSpec(
        uuid="0e5b1c9e-0000-4000-8000-000000000002",
        name="vm",
        hostname="vm",
        flavor=FlavorSpec("m1.tiny", vcpus=1, memory_mb=256, root_gb=1),
        image=image,
    )

    with pytest.raises(DriverError, match=r"UEFI firmware is missing .*OVMF_VARS_4M\.fd"):
        await driver.spawn(guest)
    assert not (driver.instances_dir / guest.uuid).exists()
