"""The whole-disk layout of `cumulo image build debian`: where the MBR, GRUB's core.img
and the root filesystem go, and the checks on GRUB's images before they are written."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from cumulo.image.cloud_image import (
    IMAGE_BYTES,
    DiskLayout,
    ImageBuildError,
    boot_code,
    build_key,
)


def fake_boot_img() -> bytes:
    """GRUB's i386-pc boot.img as far as the build looks at it."""
    boot = bytearray(512)
    boot[0x5C:0x64] = struct.pack("<Q", 1)  # kernel_sector: core.img starts at sector 1
    boot[0x66:0x68] = b"\xeb\x04"  # boot_drive_check: the jmp grub-install turns into nops
    boot[510:512] = b"\x55\xaa"
    return bytes(boot)


def fake_core_img(sectors: int, start: int = 2, count: int | None = None) -> bytes:
    """A core.img of `sectors` sectors whose diskboot blocklist reads the rest."""
    core = bytearray(b"\x01" * (sectors * 512 - 100))  # the last sector partly used
    count = sectors - 1 if count is None else count
    core[500:512] = struct.pack("<QHH", start, count, 0x820)
    return bytes(core)


def test_partition_1_starts_at_1_mib_and_runs_to_the_end_of_the_disk():
    layout = DiskLayout(IMAGE_BYTES)
    assert layout.partition_offset == 1 << 20
    assert layout.partition_sectors == (2 << 30) // 512 - 2048
    assert layout.partition_bytes + layout.partition_offset == IMAGE_BYTES
    assert layout.partition_bytes % 4096 == 0  # whole ext4 blocks
    assert layout.core_image_room == 2047 * 512
    assert layout.sfdisk_script() == ("label: dos\nstart=2048, size=4192256, type=83, bootable\n")


@pytest.mark.parametrize("size", [(2 << 30) + 512, 1 << 20, 1 << 41])
def test_a_disk_that_is_not_whole_blocks_or_does_not_fit_an_mbr_is_refused(size):
    with pytest.raises(ValueError):
        DiskLayout(size)


def test_sfdisk_makes_the_partition_table_the_layout_says(tmp_path):
    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk (package fdisk) is not installed")
    layout = DiskLayout(64 << 20)
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as sparse:
        sparse.truncate(layout.disk_bytes)
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)], input=layout.sfdisk_script(), text=True, check=True
    )
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True).stdout
    )
    (partition,) = table["partitiontable"]["partitions"]
    assert table["partitiontable"]["label"] == "dos"
    assert (partition["start"], partition["size"]) == (2048, layout.partition_sectors)
    assert partition["type"] == "83" and partition["bootable"] is True
    assert disk.read_bytes()[510:512] == b"\x55\xaa"


def test_grub_boot_code_goes_before_the_partition_table_and_trusts_the_bios_drive():
    layout = DiskLayout(IMAGE_BYTES)
    core = fake_core_img(60)
    mbr, sectors = boot_code(fake_boot_img(), core, layout)
    assert len(mbr) == 440  # the disk signature and partition table are not touched
    assert mbr[0x66:0x68] == b"\x90\x90"
    assert sectors == core


def test_a_core_img_whose_blocklist_does_not_follow_sector_1_is_refused():
    layout = DiskLayout(IMAGE_BYTES)
    with pytest.raises(ImageBuildError, match="blocklist"):
        boot_code(fake_boot_img(), fake_core_img(60, start=3), layout)
    with pytest.raises(ImageBuildError, match="blocklist"):
        boot_code(fake_boot_img(), fake_core_img(60, count=10), layout)


def test_a_core_img_bigger_than_the_gap_before_partition_1_is_refused():
    layout = DiskLayout(64 << 20, first_sector=64)
    with pytest.raises(ImageBuildError, match="does not fit"):
        boot_code(fake_boot_img(), fake_core_img(64), layout)


def test_a_boot_img_that_does_not_load_sector_1_is_refused():
    boot = bytearray(fake_boot_img())
    boot[0x5C] = 5
    with pytest.raises(ImageBuildError, match="sector 1"):
        boot_code(bytes(boot), fake_core_img(60), DiskLayout(IMAGE_BYTES))


def test_disk_and_ami_builds_are_cached_apart():
    packages = ["cloud-init", "openssh-server"]
    assert build_key("bookworm", packages, "disk") != build_key("bookworm", packages, "ami")
    assert build_key("bookworm", packages) == build_key("bookworm", list(reversed(packages)))
