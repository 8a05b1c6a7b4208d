"""`cumulo image build debian`: a Debian cloud image built on this machine.

mmdebstrap installs Debian from the archive the machine's apt is configured with (no
other download) into a directory: the cloud kernel, cloud-init (ConfigDrive and
OpenStack datasources), an SSH server, qemu-guest-agent, growpart and the Puppet agent.
`mke2fs -d` makes the root filesystem image from that directory (no loop device or
mount needed), labelled `cloudimg-rootfs`; the kernel and initrd are taken out beside
it. The result is registered AMI-style, as the QEMU driver boots it: a kernel (aki), a
ramdisk (ari) and the qcow2 root disk (ami) whose kernel_id/ramdisk_id name them.
cloud-init grows the filesystem to the flavor's disk at first boot.

A whole-disk image (partition table and boot loader) is not made: installing GRUB on
a disk image needs its partitions as block devices (loop partitions or
device-mapper), which this kind of host does not have.

Builds are cached by what they contain (release, packages, recipe version): a second
build of the same image only registers it. A build that fails (the archive is
unreachable, a package is missing) leaves nothing behind and says why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = "1"
RELEASES = {"bookworm": "12", "trixie": "13"}
PACKAGES = (
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "cloud-init",
    "openssh-server",
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
ROOT_LABEL = "cloudimg-rootfs"
ROOT_SIZE = "2G"
COMMAND_LINE = f"root=LABEL={ROOT_LABEL} ro console=ttyS0"
CLOUD_CFG = """\
# cumulo: the datasources a cumulo cloud offers (config drive, metadata service).
datasource_list: [ConfigDrive, OpenStack, None]
"""


class ImageBuildError(Exception):
    """The image could not be built; the message says why."""


@dataclass
class BuiltImage:
    name: str
    release: str
    version: str
    key: str  # what the build is cached under
    kernel: Path
    initrd: Path
    disk: Path  # qcow2

    @property
    def properties(self) -> dict[str, str]:
        return {
            "os_distro": "debian",
            "os_version": self.version,
            "os_command_line": COMMAND_LINE,
            "hw_qemu_guest_agent": "yes",
            "os_admin_user": "debian",  # cloud-init's default user: changePassword sets it
            "hw_disk_bus": "virtio",
            "hw_architecture": "x86_64",
            "cumulo_build": self.key,
        }


def build_key(release: str, packages: list[str]) -> str:
    recipe = json.dumps([RECIPE_VERSION, release, sorted(set(packages))])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_debian(
    cache_dir: Path,
    release: str = "bookworm",
    extra_packages: list[str] | None = None,
    name: str | None = None,
    log=print,
    mirror: str | None = None,
) -> BuiltImage:
    """The image, from the cache or built now; `mirror`: a Debian archive URL instead of
    the machine's apt sources."""
    if release not in RELEASES:
        raise ImageBuildError(f"unknown Debian release {release!r}: one of {', '.join(RELEASES)}")
    for tool in ("mmdebstrap", "mke2fs", "qemu-img"):
        if shutil.which(tool) is None:
            raise ImageBuildError(
                f"{tool} is missing: install it with `cumulo host-packages --install`"
            )
    packages = [*PACKAGES, *(extra_packages or [])]
    key = build_key(release, packages)
    version = RELEASES[release]
    folder = cache_dir / f"debian-{version}-{key}"
    image = BuiltImage(
        name or f"debian-{version}",
        release,
        version,
        key,
        folder / "vmlinuz",
        folder / "initrd.img",
        folder / "disk.qcow2",
    )
    if (folder / "done").exists():
        log(f"cached: {folder}")
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        _build(work, release, packages, log, mirror)
        (work / "done").write_text(json.dumps({"release": release, "packages": packages}))
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)  # all or nothing: a half-built image is never in the cache
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _build(work: Path, release: str, packages: list[str], log, mirror: str | None) -> None:
    root = work / "root"
    log(f"installing Debian {release} and {len(packages)} packages with mmdebstrap...")
    _run(
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
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ImageBuildError("the root filesystem has no kernel or initrd in /boot")
    shutil.copyfile(kernels[-1], work / "vmlinuz")
    shutil.copyfile(initrds[-1], work / "initrd.img")
    log(f"making the {ROOT_SIZE} root filesystem and the qcow2 disk...")
    raw = work / "root.raw"
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            ROOT_LABEL,
            "-d",
            str(root),
            str(raw),
            ROOT_SIZE,
        ],
        "mke2fs",
    )
    shutil.rmtree(root)
    _run(
        ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")],
        "qemu-img convert",
    )
    raw.unlink()


def _customize(root: Path) -> None:
    """What makes the installed system a cloud image."""
    (root / "etc/fstab").write_text(f"LABEL={ROOT_LABEL} / ext4 defaults,discard 0 1\n")
    (root / "etc/cloud/cloud.cfg.d/90-cumulo.cfg").write_text(CLOUD_CFG)
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
    `<name>-kernel` (aki), `<name>-ramdisk` (ari) and `<name>` (qcow2 root disk).
    An image of the same build already there is reused."""
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
        for part, suffix, fmt, path, props in (
            ("kernel", "-kernel", "aki", image.kernel, {}),
            ("ramdisk", "-ramdisk", "ari", image.initrd, {}),
            ("disk", "", "qcow2", image.disk, image.properties),
        ):
            if part == "disk":
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
