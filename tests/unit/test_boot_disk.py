"""The UEFI whole disk of `cumulo image build debian --firmware uefi`: where the GPT puts
the EFI System Partition and the root filesystem, the ESP's FAT made in place by mtools
(nothing mounted, nothing outside the partition touched), and what the image is
registered with."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from cumulo.image.boot_disk import (
    EFI_BOOT_FILE,
    ESP_TYPE,
    LINUX_TYPE,
    GptLayout,
    ImageBuildError,
    MiB,
    partition_disk,
    write_esp,
)
from cumulo.image.cloud_image import IMAGE_BYTES, BuiltImage, build_debian, build_key


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def test_the_esp_starts_at_1_mib_and_the_root_runs_to_the_backup_gpt():
    layout = GptLayout(IMAGE_BYTES)
    assert (layout.first_sector, layout.esp_offset) == (2048, 1 << 20)
    assert layout.esp_sectors == 64 * MiB // 512
    assert layout.root_first_sector == 2048 + layout.esp_sectors
    assert layout.root_offset == layout.root_first_sector * 512
    total = IMAGE_BYTES // 512
    last = layout.root_first_sector + layout.root_sectors - 1
    assert last <= total - 34  # the backup GPT: 32 sectors of entries and the header
    assert total - 34 - last < 8  # less than a filesystem block left unused
    assert layout.root_bytes % 4096 == 0


@pytest.mark.parametrize(
    "size,esp", [(IMAGE_BYTES + 512, 64 * MiB), (IMAGE_BYTES, 64 * MiB + 512), (64 * MiB, 64 * MiB)]
)
def test_a_disk_the_partitions_do_not_fit_or_not_whole_blocks_is_refused(size, esp):
    with pytest.raises(ValueError):
        GptLayout(size, esp_bytes=esp)


def test_sfdisk_writes_the_gpt_the_layout_says(tmp_path):
    need("sfdisk")
    layout = GptLayout(96 * MiB, esp_bytes=32 * MiB)
    raw = tmp_path / "disk.raw"
    partition_disk(raw, layout)
    table = json.loads(subprocess.check_output(["sfdisk", "--json", str(raw)]))
    table = table["partitiontable"]
    assert table["label"] == "gpt"
    parts = {p["node"][len(str(raw)) :]: p for p in table["partitions"]}
    assert parts["15"]["start"] == 2048 and parts["15"]["size"] == layout.esp_sectors
    assert parts["15"]["type"] == ESP_TYPE
    assert parts["1"]["start"] == layout.root_first_sector
    assert parts["1"]["size"] == layout.root_sectors
    assert parts["1"]["type"] == LINUX_TYPE


def test_a_disk_of_the_esp_alone_for_the_tests_tiny_uefi_image(tmp_path):
    need("sfdisk")
    layout = GptLayout(48 * MiB, esp_bytes=40 * MiB, root=False)
    raw = tmp_path / "disk0"  # a name ending in a digit: sfdisk calls it disk0p15
    partition_disk(raw, layout)
    table = json.loads(subprocess.check_output(["sfdisk", "--json", str(raw)]))
    [esp] = table["partitiontable"]["partitions"]
    assert esp["node"].endswith("disk0p15") and esp["type"] == ESP_TYPE


def test_the_esp_is_a_fat_filesystem_made_in_place_holding_grub(tmp_path):
    need("sfdisk", "mformat", "mmd", "mcopy", "mtype")
    layout = GptLayout(96 * MiB, esp_bytes=32 * MiB)
    raw = tmp_path / "disk.raw"
    partition_disk(raw, layout)
    grub, cfg = tmp_path / "grub.efi", tmp_path / "grub.cfg"
    grub.write_bytes(b"MZ" + b"\x00" * 4000)
    cfg.write_text("linux /vmlinuz\n")
    before = raw.read_bytes()

    write_esp(raw, layout, {EFI_BOOT_FILE: grub, "EFI/BOOT/grub.cfg": cfg})

    after = raw.read_bytes()
    esp = slice(layout.esp_offset, layout.esp_offset + layout.esp_bytes)
    assert after[: esp.start] == before[: esp.start], "the GPT before the ESP was touched"
    assert after[esp.stop :] == before[esp.stop :], "the root partition was touched"
    boot_sector = after[esp.start : esp.start + 512]
    assert boot_sector[510:512] == b"\x55\xaa" and b"FAT" in boot_sector
    image = f"{raw}@@{layout.esp_offset}"
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    read = subprocess.run(
        ["mtype", "-i", image, "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True, env=env
    )
    assert read.stdout == grub.read_bytes()
    label = subprocess.run(["mlabel", "-s", "-i", image, "::"], capture_output=True, env=env)
    assert b"EFI" in label.stdout


def test_a_failed_tool_says_what_failed(tmp_path):
    need("mformat")
    layout = GptLayout(48 * MiB, esp_bytes=40 * MiB, root=False)
    with pytest.raises(ImageBuildError, match="mformat"):
        write_esp(tmp_path / "no-such-dir" / "disk.raw", layout, {})


def test_a_uefi_image_is_registered_for_uefi_and_cached_apart(tmp_path):
    image = BuiltImage("debian-12-uefi", "bookworm", "12", "disk", "k", tmp_path, firmware="uefi")
    assert image.properties["hw_firmware_type"] == "uefi"
    bios = BuiltImage("debian-12", "bookworm", "12", "disk", "k", tmp_path)
    assert "hw_firmware_type" not in bios.properties
    assert build_key("bookworm", ["a"], "disk-uefi") != build_key("bookworm", ["a"], "disk")


def test_a_uefi_build_must_be_a_whole_disk(tmp_path):
    with pytest.raises(ImageBuildError, match="--firmware uefi needs --format disk"):
        build_debian(tmp_path, image_format="ami", firmware="uefi")
    with pytest.raises(ImageBuildError, match="unknown firmware 'coreboot'"):
        build_debian(tmp_path, firmware="coreboot")
