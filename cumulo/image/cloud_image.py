"""`cumulo image build debian`: a Debian cloud image built on this machine.

mmdebstrap installs Debian from the archive the machine's apt is configured with (no
other download) into a directory: the cloud kernel, cloud-init (ConfigDrive and
OpenStack datasources), an SSH server, qemu-guest-agent, growpart and the Puppet agent,
and a per-instance script that posts a password to the metadata service when the
server's metadata asks (`post_password=true`; guest_post_password.py).
`mke2fs -d` makes the ext4 root filesystem, labelled `cloudimg-rootfs`, from that
directory. Nothing is mounted and no loop device is used, in either format:

- `disk` (the default): a whole-disk image, as real cloud images are. A raw file gets an
  MBR partition table from `sfdisk` (partition 1 from sector 2048 to the end, bootable),
  `mke2fs -E offset=` writes the filesystem straight into the partition's place, and
  GRUB for BIOS is installed the way grub-install would, without it: the guest's own
  `grub-mkimage -O i386-pc` (run in the root by chroot) makes a core.img with every
  module it needs built in and an early config that finds the root by its label;
  boot.img's boot code goes into the MBR and core.img into sectors 1..2047 (diskboot's
  blocklist, filled in by grub-mkimage, reads the rest of core.img from sector 2 on).
  /boot/grub/grub.cfg boots /vmlinuz and /initrd.img (the symlinks kernel updates keep
  current) with `root=LABEL=cloudimg-rootfs`. Registered as one qcow2 image without
  kernel_id/ramdisk_id: the QEMU driver boots it with SeaBIOS from its own boot loader,
  and cloud-init's growpart grows partition 1 and the filesystem to the flavor's disk.
- `disk` with `firmware="uefi"` (`--firmware uefi`): the same disk for UEFI firmware
  (boot_disk.py): a GPT with an EFI System Partition (partition 15, FAT made by mtools in
  place) holding the guest's GRUB for x86-64 EFI (`grub-mkimage -O x86_64-efi`, the
  same modules and early config) as /EFI/BOOT/BOOTX64.EFI, and the ext4 root in
  partition 1; registered with hw_firmware_type=uefi, which the QEMU driver boots with
  OVMF.
- `ami`: the root filesystem alone, registered AMI-style with the kernel (aki) and the
  ramdisk (ari) taken out of it, which the QEMU driver boots directly (`-kernel`).

Builds are cached by what they contain (format, release, packages, recipe version): a
second build of the same image only registers it. A build that fails (the archive is
unreachable, a package is missing) leaves nothing behind and says why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cumulo.image.boot_disk import (
    EFI_BOOT_FILE,
    FS_BLOCK,
    GRUB_EFI_DIR,
    SECTOR,
    GptLayout,
    ImageBuildError,
    grub_efi_argv,
    partition_disk,
    run_tool,
    write_esp,
)

RECIPE_VERSION = "3"
FORMATS = ("disk", "ami")
FIRMWARES = ("bios", "uefi")  # what boots a `disk`: SeaBIOS or OVMF
RELEASES = {"bookworm": "12", "trixie": "13"}
PACKAGES = (
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "cloud-init",
    "openssh-server",
    "openssh-client",  # ssh-keygen and openssl encrypt the posted password
    "openssl",
    "qemu-guest-agent",
    "cloud-guest-utils",
    "ifupdown",
    "isc-dhcp-client",
    "sudo",
    "e2fsprogs",
    "puppet-agent",
    "netbase",
    "iproute2",
    "ca-certificates",
    "acpid",
)
DISK_PACKAGES = ("grub-pc-bin",)  # grub-mkimage, boot.img and the i386-pc modules
UEFI_DISK_PACKAGES = ("grub-efi-amd64-bin",)  # grub-mkimage and the x86_64-efi modules
ROOT_LABEL = "cloudimg-rootfs"
IMAGE_BYTES = 2 << 30  # the root filesystem (ami) or the whole disk (disk): min_disk 2 GB
COMMAND_LINE = f"root=LABEL={ROOT_LABEL} ro console=ttyS0"
CLOUD_CFG = """\
# cumulo: the datasources a cumulo cloud offers (config drive, metadata service).
datasource_list: [ConfigDrive, OpenStack, None]
"""

MBR_BOOT_CODE = 440  # then the disk signature, the partition table and 0x55AA
# GRUB's i386-pc boot.img and diskboot.img (grub-core/boot/i386/pc/{boot,diskboot}.S).
BOOT_KERNEL_SECTOR = 0x5C  # where boot.img loads core.img's first sector from
BOOT_DRIVE_CHECK = 0x66  # a jmp grub-install turns into nops on hard disks
BLOCKLIST = SECTOR - 12  # diskboot's first blocklist: start sector, count, segment
GRUB_MODULES = (
    "biosdisk",
    "part_msdos",
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
)
GRUB_EARLY_CFG = f"""\
set root=(hd0,msdos1)
search --no-floppy --label {ROOT_LABEL} --set=root
set prefix=($root)/boot/grub
"""
GRUB_EFI_EARLY_CFG = GRUB_EARLY_CFG.replace("(hd0,msdos1)", "(hd0,gpt1)")
GRUB_CFG = f"""\
# cumulo: written by `cumulo image build debian`; /vmlinuz and /initrd.img follow the
# installed kernel.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=0
menuentry 'Debian GNU/Linux' {{
    search --no-floppy --label {ROOT_LABEL} --set=root
    linux /vmlinuz {COMMAND_LINE}
    initrd /initrd.img
}}
"""


@dataclass(frozen=True)
class DiskLayout:
    """A whole-disk image: the MBR in sector 0, GRUB's core.img in the gap up to the
    first partition, the root filesystem in partition 1 from there to the disk's end."""

    disk_bytes: int
    first_sector: int = 2048  # 1 MiB, where partitioning tools start partition 1

    def __post_init__(self) -> None:
        if self.disk_bytes % FS_BLOCK or (self.first_sector * SECTOR) % FS_BLOCK:
            raise ValueError("the disk and its partition must be whole filesystem blocks")
        if self.partition_sectors <= 0 or self.disk_bytes // SECTOR >= 1 << 32:
            raise ValueError(f"no MBR partition fits a disk of {self.disk_bytes} bytes")

    @property
    def partition_sectors(self) -> int:
        return self.disk_bytes // SECTOR - self.first_sector

    @property
    def partition_offset(self) -> int:
        return self.first_sector * SECTOR

    @property
    def partition_bytes(self) -> int:
        return self.partition_sectors * SECTOR

    @property
    def core_image_room(self) -> int:
        """Bytes between the MBR and partition 1."""
        return (self.first_sector - 1) * SECTOR

    def sfdisk_script(self) -> str:
        return (
            "label: dos\n"
            f"start={self.first_sector}, size={self.partition_sectors}, type=83, bootable\n"
        )


def boot_code(boot_img: bytes, core_img: bytes, layout: DiskLayout) -> tuple[bytes, bytes]:
    """What goes into the MBR's boot code area and into sectors 1.. for GRUB to start
    from a BIOS: boot.img loads core.img's first sector (diskboot) from sector 1, and
    diskboot loads the rest by the blocklist grub-mkimage wrote for sector 2 on."""
    if len(boot_img) != SECTOR or boot_img[-2:] != b"\x55\xaa":
        raise ImageBuildError(f"boot.img is not a boot sector ({len(boot_img)} bytes)")
    if struct.unpack_from("<Q", boot_img, BOOT_KERNEL_SECTOR)[0] != 1:
        raise ImageBuildError("boot.img does not load core.img from sector 1")
    sectors = -(-len(core_img) // SECTOR)
    if len(core_img) > layout.core_image_room:
        raise ImageBuildError(
            f"core.img ({len(core_img)} bytes) does not fit before partition 1 "
            f"({layout.core_image_room} bytes)"
        )
    start, count, _segment = struct.unpack_from("<QHH", core_img, BLOCKLIST)
    if (start, count) != (2, sectors - 1):
        raise ImageBuildError(
            f"core.img's blocklist reads {count} sectors from sector {start}, "
            f"not {sectors - 1} from sector 2"
        )
    mbr = bytearray(boot_img[:MBR_BOOT_CODE])
    if mbr[BOOT_DRIVE_CHECK] == 0xEB:  # as grub-install: trust DL only if it is a disk
        mbr[BOOT_DRIVE_CHECK : BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(mbr), core_img


@dataclass
class BuiltImage:
    name: str
    release: str
    version: str
    format: str  # "disk" or "ami"
    key: str  # what the build is cached under
    disk: Path  # qcow2: the whole disk, or the root filesystem of an ami
    kernel: Path | None = None  # ami only
    initrd: Path | None = None
    firmware: str = "bios"  # a disk's: "bios" or "uefi"

    @property
    def properties(self) -> dict[str, str]:
        props = {
            "os_distro": "debian",
            "os_version": self.version,
            "hw_qemu_guest_agent": "yes",
            "os_admin_user": "debian",  # cloud-init's default user: changePassword sets it
            "hw_disk_bus": "virtio",
            "hw_architecture": "x86_64",
            "cumulo_build": self.key,
        }
        if self.format == "ami":  # a whole disk's command line is in its grub.cfg
            props["os_command_line"] = COMMAND_LINE
        if self.firmware == "uefi":  # Nova's property: the hypervisor boots it with UEFI
            props["hw_firmware_type"] = "uefi"
        return props


def build_key(release: str, packages: list[str], image_format: str = "disk") -> str:
    recipe = json.dumps([RECIPE_VERSION, image_format, release, sorted(set(packages))])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_debian(
    cache_dir: Path,
    release: str = "bookworm",
    extra_packages: list[str] | None = None,
    name: str | None = None,
    log=print,
    mirror: str | None = None,
    image_format: str = "disk",
    firmware: str = "bios",
) -> BuiltImage:
    """The image, from the cache or built now; `mirror`: a Debian archive URL instead of
    the machine's apt sources; `image_format`: "disk" (whole disk) or "ami"; `firmware`:
    what boots a disk, "bios" or "uefi"."""
    if release not in RELEASES:
        raise ImageBuildError(f"unknown Debian release {release!r}: one of {', '.join(RELEASES)}")
    if image_format not in FORMATS:
        raise ImageBuildError(f"unknown image format {image_format!r}: one of {', '.join(FORMATS)}")
    if firmware not in FIRMWARES:
        raise ImageBuildError(f"unknown firmware {firmware!r}: one of {', '.join(FIRMWARES)}")
    if firmware == "uefi" and image_format != "disk":
        raise ImageBuildError("a UEFI image is a whole disk: --firmware uefi needs --format disk")
    uefi = firmware == "uefi"
    tools = ["mmdebstrap", "mke2fs", "qemu-img"]
    if image_format == "disk":
        tools += ["sfdisk", "chroot", *(("mformat", "mmd", "mcopy") if uefi else ())]
    for tool in tools:
        if shutil.which(tool) is None:
            raise ImageBuildError(
                f"{tool} is missing: install it with `cumulo host-packages --install`"
            )
    packages = [
        *PACKAGES,
        *((UEFI_DISK_PACKAGES if uefi else DISK_PACKAGES) if image_format == "disk" else ()),
        *(extra_packages or []),
    ]
    kind = f"{image_format}-uefi" if uefi else image_format
    key = build_key(release, packages, kind)
    version = RELEASES[release]
    folder = cache_dir / f"debian-{version}-{kind}-{key}"
    image = BuiltImage(
        name or f"debian-{version}{'-uefi' if uefi else ''}",
        release,
        version,
        image_format,
        key,
        folder / "disk.qcow2",
        firmware=firmware,
    )
    if image_format == "ami":
        image.kernel, image.initrd = folder / "vmlinuz", folder / "initrd.img"
    if (folder / "done").exists():
        log(f"cached: {folder}")
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        root = _install(work, release, packages, log, mirror)
        if uefi:
            _make_uefi_disk(work, root, log)
        elif image_format == "disk":
            _make_whole_disk(work, root, log)
        else:
            _make_ami(work, root, log)
        (work / "done").write_text(
            json.dumps(
                {
                    "format": image_format,
                    "firmware": firmware,
                    "release": release,
                    "packages": packages,
                }
            )
        )
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)  # all or nothing: a half-built image is never in the cache
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image


def _install(work: Path, release: str, packages: list[str], log, mirror: str | None) -> Path:
    root = work / "root"
    log(f"installing Debian {release} and {len(packages)} packages with mmdebstrap...")
    run_tool(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            '--customize-hook=chroot "$1" systemctl disable puppet.service || true',
            release,
            str(root),
            *([mirror] if mirror else []),
        ],
        "mmdebstrap (is the Debian archive reachable through apt?)",
    )
    _customize(root)
    return root


def _make_ami(work: Path, root: Path, log) -> None:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ImageBuildError("the root filesystem has no kernel or initrd in /boot")
    shutil.copyfile(kernels[-1], work / "vmlinuz")
    shutil.copyfile(initrds[-1], work / "initrd.img")
    log(f"making the {IMAGE_BYTES >> 30} GB root filesystem and the qcow2 disk...")
    raw = work / "root.raw"
    _mke2fs(root, raw, IMAGE_BYTES)
    shutil.rmtree(root)
    _convert(raw, work / "disk.qcow2")


def _check_kernel_links(root: Path) -> None:
    for link in ("vmlinuz", "initrd.img"):  # what grub.cfg boots (GRUB follows symlinks)
        if not (root / link).is_symlink() and not (root / link).is_file():
            raise ImageBuildError(f"the root filesystem has no /{link} (the kernel's symlink)")


def _write_grub_cfg(root: Path) -> None:
    (root / "boot/grub").mkdir(parents=True, exist_ok=True)
    (root / "boot/grub/grub.cfg").write_text(GRUB_CFG)


def _make_whole_disk(work: Path, root: Path, log) -> None:
    layout = DiskLayout(IMAGE_BYTES)
    _check_kernel_links(root)
    log("making GRUB's core.img with the guest's grub-mkimage...")
    early = root / "tmp/cumulo-grub-early.cfg"
    early.write_text(GRUB_EARLY_CFG)
    run_tool(
        [
            "chroot",
            str(root),
            "grub-mkimage",
            "-O",
            "i386-pc",
            "-d",
            "/usr/lib/grub/i386-pc",
            "-p",
            "(hd0,msdos1)/boot/grub",
            "-c",
            "/tmp/cumulo-grub-early.cfg",
            "-o",
            "/tmp/cumulo-core.img",
            *GRUB_MODULES,
        ],
        "grub-mkimage (in the guest's root)",
    )
    core_file = root / "tmp/cumulo-core.img"
    mbr, core = boot_code(
        (root / "usr/lib/grub/i386-pc/boot.img").read_bytes(), core_file.read_bytes(), layout
    )
    early.unlink()
    core_file.unlink()
    _write_grub_cfg(root)

    log(f"making the {IMAGE_BYTES >> 30} GB disk: MBR, GRUB, ext4 root in partition 1...")
    raw = work / "disk.raw"
    with raw.open("wb") as sparse:
        sparse.truncate(layout.disk_bytes)
    run_tool(["sfdisk", "--quiet", str(raw)], "sfdisk", stdin=layout.sfdisk_script())
    _mke2fs(root, raw, layout.partition_bytes, offset=layout.partition_offset)
    shutil.rmtree(root)
    with raw.open("r+b") as disk:  # the partition table after the boot code stays as is
        disk.write(mbr)
        disk.seek(SECTOR)
        disk.write(core)
    _convert(raw, work / "disk.qcow2")


def _make_uefi_disk(work: Path, root: Path, log) -> None:
    layout = GptLayout(IMAGE_BYTES)
    _check_kernel_links(root)
    log("making GRUB's EFI image with the guest's grub-mkimage...")
    (root / "tmp/cumulo-grub-early.cfg").write_text(GRUB_EFI_EARLY_CFG)
    run_tool(
        [
            "chroot",
            str(root),
            *grub_efi_argv(
                "/tmp/cumulo-bootx64.efi",
                "/tmp/cumulo-grub-early.cfg",
                "(hd0,gpt1)/boot/grub",
                GRUB_EFI_DIR,
            ),
        ],
        "grub-mkimage (in the guest's root)",
    )
    efi = work / "BOOTX64.EFI"
    shutil.move(root / "tmp/cumulo-bootx64.efi", efi)
    (root / "tmp/cumulo-grub-early.cfg").unlink()
    _write_grub_cfg(root)

    log(f"making the {IMAGE_BYTES >> 30} GB disk: GPT, ESP with GRUB, ext4 root in partition 1...")
    raw = work / "disk.raw"
    partition_disk(raw, layout)
    write_esp(raw, layout, {EFI_BOOT_FILE: efi})
    _mke2fs(root, raw, layout.root_bytes, offset=layout.root_offset)
    shutil.rmtree(root)
    efi.unlink()
    _convert(raw, work / "disk.qcow2")


def _mke2fs(root: Path, target: Path, size: int, offset: int = 0) -> None:
    """An ext4 filesystem of `size` bytes holding `root`, written `offset` bytes into
    `target` (nodiscard: punching holes in the file must not reach the MBR)."""
    run_tool(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            ROOT_LABEL,
            "-E",
            f"nodiscard,offset={offset}",
            "-d",
            str(root),
            str(target),
            f"{size // 1024}k",
        ],
        "mke2fs",
    )


def _convert(raw: Path, qcow2: Path) -> None:
    run_tool(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        "qemu-img convert",
    )
    raw.unlink()


def _customize(root: Path) -> None:
    """What makes the installed system a cloud image."""
    (root / "etc/fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 defaults,discard 0 1\n")
    (root / "etc/cloud/cloud.cfg.d/90-cumulo.cfg").write_text(CLOUD_CFG)
    # The password posted to the metadata service when the server's metadata asks.
    scripts = root / "var/lib/cloud/scripts/per-instance"
    scripts.mkdir(parents=True, exist_ok=True)
    poster = scripts / "cumulo-post-password"
    shutil.copyfile(Path(__file__).with_name("guest_post_password.py"), poster)
    poster.chmod(0o755)
    (root / "etc/network/interfaces").write_text(
        "auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n"
    )
    # Per-instance identity is made at first boot, not shared by every guest.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def register(image: BuiltImage, config, log=print) -> dict[str, str]:
    """The built image in the Image service of a running cloud (as its admin, public):
    `<name>` (qcow2), and for an ami `<name>-kernel` (aki) and `<name>-ramdisk` (ari)
    that it names. An image of the same build already there is reused."""
    import httpx

    from cumulo.common.identity_client import password_auth
    from cumulo.common.tls import verify_option

    verify = verify_option(config)
    identity = config.public_url(config.ports.identity)
    r = httpx.post(
        f"{identity}/v3/auth/tokens?nocatalog",
        verify=verify,
        timeout=60,
        json=password_auth("admin", config.identity.admin_password, "admin"),
    )
    if r.status_code != 201:
        raise ImageBuildError(f"cannot sign in to the cloud as admin ({r.status_code}): is it up?")
    headers = {"X-Auth-Token": r.headers["X-Subject-Token"]}
    with httpx.Client(
        base_url=config.public_url(config.ports.image), headers=headers, verify=verify, timeout=600
    ) as glance:
        found = glance.get("/v2/images", params={"name": image.name}).json()["images"]
        for existing in found:
            if existing.get("cumulo_build") == image.key and existing["status"] == "active":
                log(f"already registered: {image.name} ({existing['id']})")
                return {
                    "disk": existing["id"],
                    "kernel": existing.get("kernel_id", ""),
                    "ramdisk": existing.get("ramdisk_id", ""),
                }
        ids: dict[str, str] = {}
        parts: list[tuple[str, str, str, Path, dict[str, str]]] = []
        if image.kernel and image.initrd:
            parts += [
                ("kernel", "-kernel", "aki", image.kernel, {}),
                ("ramdisk", "-ramdisk", "ari", image.initrd, {}),
            ]
        parts.append(("disk", "", "qcow2", image.disk, image.properties))
        for part, suffix, fmt, path, props in parts:
            if part == "disk" and "kernel" in ids:
                props = {**props, "kernel_id": ids["kernel"], "ramdisk_id": ids["ramdisk"]}
            body = {
                "name": image.name + suffix,
                "disk_format": fmt,
                "visibility": "public",
                "container_format": "bare" if fmt == "qcow2" else fmt,
                **props,
            }
            if part == "disk":
                body["min_disk"] = 2
            made = glance.post("/v2/images", json=body)
            if made.status_code != 201:
                raise ImageBuildError(
                    f"the Image service refused {body['name']}: {made.text[:300]}"
                )
            ids[part] = made.json()["id"]
            with path.open("rb") as data:
                put = glance.put(
                    f"/v2/images/{ids[part]}/file",
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
            if put.status_code != 204:
                for made_id in ids.values():  # nothing half-registered
                    glance.delete(f"/v2/images/{made_id}")
                raise ImageBuildError(f"uploading {body['name']} failed: {put.text[:300]}")
            log(f"registered {body['name']} ({ids[part]})")
        return ids
