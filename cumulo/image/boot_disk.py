"""Whole disks that boot with UEFI, made on a raw file with no loop device and no mount.

- `sfdisk` writes a GPT onto the file: the EFI System Partition (ESP) as partition 15
  from sector 2048 (the number Debian's and Ubuntu's cloud images give it), and the root
  filesystem, when there is one, as partition 1 after it up to the end of the disk (the
  backup GPT's last 33 sectors left free).
- mtools make the ESP's FAT filesystem in place (`mformat -i disk.raw@@<offset>`) and
  copy files into it (`mmd`, `mcopy`): GRUB's EFI image goes to /EFI/BOOT/BOOTX64.EFI,
  the path a UEFI firmware boots on a disk it has no boot entry for (OVMF with a fresh
  variable store).
- `grub-mkimage -O x86_64-efi` makes that image with every module it needs built in and
  an early config: the guest's own grub-mkimage for `cumulo image build debian
  --firmware uefi`, the host's for the tests' tiny UEFI disk.

The BIOS disks (MBR, GRUB's i386-pc boot code) are made in cloud_image.py with the same
tools and helpers.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SECTOR = 512
FS_BLOCK = 4096
MiB = 1 << 20
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # Linux filesystem data
ESP_PARTITION, ROOT_PARTITION = 15, 1
ESP_LABEL = "EFI"
GPT_BACKUP_SECTORS = 33  # the backup partition entries (32 sectors) and header
EFI_BOOT_FILE = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path of x86-64 UEFI
GRUB_EFI_DIR = "/usr/lib/grub/x86_64-efi"  # Debian's grub-efi-amd64-bin
# Built into GRUB's EFI image: what finds grub.cfg and boots Linux from a GPT disk.
GRUB_EFI_MODULES = (
    "part_gpt",
    "fat",
    "ext2",
    "search",
    "configfile",
    "normal",
    "linux",
    "boot",
    "echo",
    "test",
    "serial",
    "terminal",
    "efi_gop",
)


class ImageBuildError(Exception):
    """The image could not be built; the message says why."""


def run_tool(
    argv: list[str], what: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> None:
    """`argv` run to completion; ImageBuildError with the end of its output if it fails."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, input=stdin, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


@dataclass(frozen=True)
class GptLayout:
    """A GPT disk: the ESP from `first_sector`, then the root partition (when `root`) up
    to the backup GPT at the disk's end, whole filesystem blocks."""

    disk_bytes: int
    esp_bytes: int = 64 * MiB
    root: bool = True
    first_sector: int = 2048  # 1 MiB, where partitioning tools start

    def __post_init__(self) -> None:
        if self.disk_bytes % FS_BLOCK or self.esp_bytes % FS_BLOCK:
            raise ValueError("the disk and the ESP must be whole filesystem blocks")
        room = self.last_usable_sector - self.first_sector + 1
        if self.esp_sectors > room or (self.root and self.root_sectors <= 0):
            raise ValueError(f"the partitions do not fit a disk of {self.disk_bytes} bytes")

    @property
    def last_usable_sector(self) -> int:
        return self.disk_bytes // SECTOR - GPT_BACKUP_SECTORS - 1

    @property
    def esp_sectors(self) -> int:
        return self.esp_bytes // SECTOR

    @property
    def esp_offset(self) -> int:
        return self.first_sector * SECTOR

    @property
    def root_first_sector(self) -> int:
        return self.first_sector + self.esp_sectors

    @property
    def root_sectors(self) -> int:
        sectors = self.last_usable_sector - self.root_first_sector + 1
        per_block = FS_BLOCK // SECTOR
        return sectors // per_block * per_block

    @property
    def root_offset(self) -> int:
        return self.root_first_sector * SECTOR

    @property
    def root_bytes(self) -> int:
        return self.root_sectors * SECTOR

    def sfdisk_script(self, disk: Path) -> str:
        """sfdisk's input for the file `disk`: partitions named as sfdisk names them
        (`disk.raw15`; `disk0p15` when the name ends in a digit) keep their numbers."""
        stem = disk.name + ("p" if disk.name[-1:].isdigit() else "")
        lines = [
            "label: gpt",
            f"{stem}{ESP_PARTITION} : start={self.first_sector}, size={self.esp_sectors}, "
            f'type={ESP_TYPE}, name="EFI System"',
        ]
        if self.root:
            lines.append(
                f"{stem}{ROOT_PARTITION} : start={self.root_first_sector}, "
                f"size={self.root_sectors}, type={LINUX_TYPE}"
            )
        return "\n".join(lines) + "\n"


def partition_disk(raw: Path, layout: GptLayout) -> None:
    """A sparse raw file of the layout's size with its GPT."""
    with raw.open("wb") as sparse:
        sparse.truncate(layout.disk_bytes)
    run_tool(["sfdisk", "--quiet", str(raw)], "sfdisk", stdin=layout.sfdisk_script(raw))


def write_esp(raw: Path, layout: GptLayout, files: dict[str, Path]) -> None:
    """The ESP's FAT filesystem (label EFI) made in its partition of `raw`, holding
    `files` (path in the ESP, `/`-separated -> the file to copy there)."""
    image = f"{raw}@@{layout.esp_offset}"
    env = {"MTOOLS_SKIP_CHECK": "1"}  # a partition's geometry is not a floppy's
    run_tool(
        ["mformat", "-i", image, "-T", str(layout.esp_sectors), "-H", str(layout.first_sector),
         "-v", ESP_LABEL, "::"],
        "mformat (the EFI System Partition)",
        env=env,
    )  # fmt: skip
    folders = sorted({str(p) for name in files for p in PurePosixPath(name).parents} - {"."})
    for folder in folders:
        run_tool(["mmd", "-i", image, f"::/{folder}"], f"mmd {folder}", env=env)
    for name, source in files.items():
        run_tool(["mcopy", "-i", image, str(source), f"::/{name}"], f"mcopy {name}", env=env)


def grub_efi_argv(output: str, early_config: str, prefix: str, modules_dir: str) -> list[str]:
    """grub-mkimage's command for GRUB's x86-64 EFI image: the modules built in, the early
    config run first, then `prefix`/grub.cfg."""
    return [
        "grub-mkimage",
        "-O", "x86_64-efi",
        "-d", modules_dir,
        "-p", prefix,
        "-c", early_config,
        "-o", output,
        *GRUB_EFI_MODULES,
    ]  # fmt: skip
