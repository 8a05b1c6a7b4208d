"""The QEMU driver's machine types and Secure Boot, as Nova's libvirt driver takes them:
an image's hw_machine_type (else [compute] qemu_machine_type), and os_secure_boot (the
flavor's os:secure_boot too). q35 keeps the pc layout's slots for the fixed devices and
puts each volume and NIC slot behind a PCIe root port of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import DriverError, FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.qemu import QemuDriver

QEMU_HAS = frozenset({"pc", "pc-i440fx-7.2", "q35", "pc-q35-7.2", "microvm"})


@pytest.fixture
def ovmf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An OVMF installation of this test's own, Secure Boot build included."""
    files = {}
    for name in ("OVMF_CODE", "OVMF_VARS", "OVMF_SECBOOT_CODE", "OVMF_MS_VARS"):
        files[name] = tmp_path / f"{name}.fd"
        files[name].write_bytes(name.encode() * 64)
        monkeypatch.setattr(qp, name, files[name])
    return files


def choose(firmware="uefi", default="pc", flavor=None, **properties):
    return qp.choose_machine(firmware, properties, flavor or {}, default, QEMU_HAS)


def test_the_machine_type_is_the_images_else_the_hosts_default(ovmf):
    assert choose() == ("pc", False)
    assert choose(default="q35") == ("q35", False)
    assert choose(hw_machine_type="q35") == ("q35", False)
    assert choose(hw_machine_type="pc-q35-7.2", default="q35") == ("pc-q35-7.2", False)
    assert choose(firmware="bios", hw_machine_type="pc-i440fx-7.2") == ("pc-i440fx-7.2", False)


@pytest.mark.parametrize("machine_type", ["virt", "microvm", "pc-q35-1.0", "isapc", ""])
def test_a_machine_type_of_another_family_or_that_qemu_lacks_is_refused(ovmf, machine_type):
    default = machine_type or "bogus"
    with pytest.raises(DriverError, match=f"Machine type '{default}' is not supported"):
        choose(default=default, **({"hw_machine_type": machine_type} if machine_type else {}))


def test_secure_boot_required_moves_a_uefi_guest_onto_q35_with_smm(ovmf):
    assert choose(os_secure_boot="required") == ("q35", True)
    assert choose(flavor={"os:secure_boot": "required"}) == ("q35", True)
    assert choose(os_secure_boot="required", hw_machine_type="pc-q35-7.2") == ("pc-q35-7.2", True)
    assert choose(os_secure_boot="disabled", default="q35") == ("q35", False)


def test_secure_boot_cannot_be_had_on_bios_or_on_a_pc_machine_the_image_names(ovmf):
    with pytest.raises(DriverError, match="Secure Boot needs UEFI firmware"):
        choose(firmware="bios", os_secure_boot="required")
    with pytest.raises(DriverError, match="Secure Boot needs the q35 machine type"):
        choose(os_secure_boot="required", hw_machine_type="pc")


def test_optional_secure_boot_is_on_where_it_can_be(ovmf):
    assert choose(os_secure_boot="optional") == ("q35", True)
    assert choose(os_secure_boot="optional", hw_machine_type="pc") == ("pc", False)
    assert choose(firmware="bios", os_secure_boot="optional") == ("pc", False)
    ovmf["OVMF_SECBOOT_CODE"].unlink()
    assert choose(os_secure_boot="optional") == ("pc", False)


def test_flavor_and_image_policies_must_agree_and_be_known(ovmf):
    with pytest.raises(DriverError, match="conflicts with image os_secure_boot 'disabled'"):
        choose(flavor={"os:secure_boot": "required"}, os_secure_boot="disabled")
    assert choose(flavor={"os:secure_boot": "required"}, os_secure_boot="required")[1]
    with pytest.raises(DriverError, match="os_secure_boot 'maybe' is not one of"):
        choose(os_secure_boot="maybe")


def machine(**fields) -> qp.MachineConfig:
    return qp.MachineConfig(
        uuid="0e5b1c9e-0000-4000-8000-000000000001",
        name="vm",
        vcpus=1,
        memory_mb=512,
        accel="tcg",
        **fields,
    )


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_secure_boot_gets_smm_a_secure_pflash_and_the_secboot_build(tmp_path, ovmf):
    argv = qp.command_line(
        machine(firmware="uefi", machine_type="q35", secure_boot=True), tmp_path, qmp_fd=3
    )
    assert option_values(argv, "-machine") == ["q35,smm=on,pflash0=ovmf-code,pflash1=ovmf-vars"]
    assert option_values(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    blockdevs = {b["node-name"]: b for b in map(json.loads, option_values(argv, "-blockdev"))}
    assert blockdevs["ovmf-code"]["file"]["filename"] == str(ovmf["OVMF_SECBOOT_CODE"])
    nvram = qp.make_nvram(tmp_path, secure_boot=True)
    assert nvram.read_bytes() == ovmf["OVMF_MS_VARS"].read_bytes()


def test_q35_puts_volumes_and_nics_behind_root_ports_and_fixed_disks_on_pcie0(tmp_path):
    config = machine(machine_type="q35")
    config.drives = [
        qp.Drive("root", "/r", "qcow2", slot=qp.DISK_SLOTS["root"]),
        qp.Drive("vol-1", "/v", "raw", slot=0x0C),
    ]
    config.nics = [qp.Nic("tap1", "fa:16:3e:00:00:01", 0x0B)]
    argv = qp.command_line(config, tmp_path, qmp_fd=3)
    assert option_values(argv, "-machine") == ["q35"]
    devices = [json.loads(d) for d in option_values(argv, "-device") if d.startswith("{")]
    ports = [d for d in devices if d["driver"] == "pcie-root-port"]
    # One hot-plug capable port per volume and NIC slot, as functions of pcie.0 slots.
    assert len(ports) == qp.LAST_SLOT - qp.FIRST_FREE_SLOT + 1
    assert [p["addr"] for p in ports[:9]] == [*(f"0b.{f}" for f in range(8)), "0c.0"]
    assert [p.get("multifunction") for p in ports[:9]] == [True, *[None] * 7, True]
    assert len({p["chassis"] for p in ports}) == len(ports)
    by_id = {d["id"]: d for d in devices}
    assert by_id["root"]["addr"] == "07.0" and "bus" not in by_id["root"]
    assert by_id["vol-1"]["bus"] == "rp0c" and "addr" not in by_id["vol-1"]
    assert by_id["nic-tap1"]["bus"] == "rp0b"
    assert qp.guest_pci_address(0x0B, "q35") == "0000:01:00.0"
    assert qp.guest_pci_address(0x1F, "pc-q35-7.2") == "0000:15:00.0"
    assert qp.guest_pci_address(0x07, "q35") == "0000:00:07.0"
    assert qp.guest_pci_address(0x0B, "pc") == "0000:00:0b.0"


def test_the_device_layout_of_a_q35_guest_is_behind_its_root_ports(tmp_path):
    from cumulo.compute.virt.driver import BlockDevice, Vif

    driver = QemuDriver(tmp_path, "h", accel="tcg")
    image = ImageSpec("i", "qcow2", path="/i", properties={"hw_machine_type": "q35"})
    guest = GuestSpec(
        uuid="u",
        name="vm",
        hostname="vm",
        flavor=FlavorSpec("f", 1, 512, 1),
        image=image,
        vifs=(Vif("p", "fa:16:3e:00:00:01", "n"),),
        block_devices=(BlockDevice("v", "/dev/vda", {}),),
    )
    assert [a.address for a in driver.device_layout(guest)] == ["0000:01:00.0", "0000:02:00.0"]
    pc = GuestSpec(**{**guest.__dict__, "image": ImageSpec("i", "qcow2", path="/i")})
    assert [a.address for a in driver.device_layout(pc)] == ["0000:00:0b.0", "0000:00:0c.0"]


def test_a_live_migrated_guest_keeps_the_slots_its_devices_have_on_its_source():
    from cumulo.compute.virt.driver import BlockDevice, Vif
    from cumulo.compute.virt.qemu import _boot_slots, tap_name

    volume = BlockDevice("vol-2", "/dev/vdc", {"driver_volume_type": "file"})
    vif = Vif(port_id="port-1", mac="fa:16:3e:00:00:01", network_id="net")
    guest = GuestSpec(
        uuid="u", name="g", hostname="g", flavor=FlavorSpec("m1", 1, 64, 1), image=None,
        vifs=(vif,), block_devices=(volume,),
    )  # fmt: skip
    first = qp.FIRST_FREE_SLOT
    assert _boot_slots(guest) == ([first], [first + 1])  # a new guest: volumes first
    # On its source the NIC came first and the volume was hot-plugged after it.
    placed = {tap_name("port-1"): first, "vol-2": first + 2}
    assert _boot_slots(guest, placed) == ([first + 2], [first])
    assert _boot_slots(guest, {"vol-2": first}) == ([first], [first + 1])
