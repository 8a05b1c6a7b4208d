"""The tiny test guest: Debian's cloud kernel and a busybox initramfs, built from .deb files.

Nothing but the Debian package registry is needed (`apt-get download`); the result is
cached (~/.cache/cumulo/guest, or $CUMULO_GUEST_CACHE) so every later build is instant.

The guest's /init loads the virtio modules, takes an address on eth0 with DHCP, reads
the config drive (label config-2) and the metadata service (169.254.169.254), runs the
user data when it is a shell script, and reports each step on the serial console as a
line starting with MARK, which is what tests (and `openstack console log show`) read:

    cumulo-guest: booted 6.1.0-...-cloud-amd64
    cumulo-guest: eth0 mac fa:16:3e:..  / eth0 ip 10.0.0.5/24 / eth0 dhcp failed
    cumulo-guest: config-drive hostname=vm1 uuid=...
    cumulo-guest: config-drive key mykey ssh-ed25519 AAAA...
    cumulo-guest: metadata hostname=vm1 uuid=...   / metadata unreachable
    cumulo-guest: user-data start ... user-data exit=0
    cumulo-guest: disks vda vdb
    cumulo-guest: ready after 2.41s
    cumulo-guest: power button, powering off

After `ready` the list of block devices is printed again whenever it changes (hot-plug).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARK = "cumulo-guest:"
KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# Loaded in this order (each needs the ones before it); the kernel package has no modules.dep.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "cdrom",
    "isofs",
    "evdev",
    "button",
)
COMMAND_LINE = "console=ttyS0 panic=-1 quiet"

# busybox 1.35's `wget -T` crashes: wget is bounded with `timeout` instead.
INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/log /var/run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "cumulo-guest: $*"; }
say "booted $(uname -r)"
for m in @MODULES@; do
    insmod /lib/modules/$m.ko 2>/dev/null || say "insmod $m failed"
done
mdev -s 2>/dev/null
ip link set lo up

json_str() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$2" | head -n 1; }
report_metadata() {  # $1 = where it came from, $2 = meta_data.json
    say "$1 hostname=$(json_str hostname "$2") uuid=$(json_str uuid "$2")"
    tr -d '\n' < "$2" | sed -n 's/.*"public_keys": *{\([^}]*\)}.*/\1/p' \
        | awk -F'"' '{for (i = 2; i + 2 <= NF; i += 4) print $i, $(i + 2)}' \
        | while read -r name key; do say "$1 key $name $key"; done
}

got_ip=
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    say "eth0 mac $(cat /sys/class/net/eth0/address)"
    if udhcpc -i eth0 -n -q -t 4 -T 1 -O staticroutes -s /etc/udhcpc/default.script \
            >/dev/null 2>&1; then
        got_ip=1
        say "eth0 ip $(ip -4 -o addr show eth0 | awk '{print $4}')"
    else
        say "eth0 dhcp failed"
    fi
else
    say "no network device"
fi

drive=
for dev in $(findfs LABEL=config-2 2>/dev/null) /dev/sr0 /dev/vd?; do
    [ -b "$dev" ] || continue
    if mount -t iso9660 -o ro "$dev" /mnt/config 2>/dev/null; then
        if [ -f /mnt/config/openstack/latest/meta_data.json ]; then drive=$dev; break; fi
        umount /mnt/config
    fi
done
user_data=
if [ -n "$drive" ]; then
    say "config-drive on $drive"
    latest=/mnt/config/openstack/latest
    report_metadata config-drive $latest/meta_data.json
    hostname "$(json_str hostname $latest/meta_data.json)"
    [ -f $latest/user_data ] && user_data=$latest/user_data
else
    say "no config drive"
fi

if [ -n "$got_ip" ]; then
    base=http://169.254.169.254/openstack/latest
    if timeout 5 wget -q -O /tmp/meta_data.json $base/meta_data.json 2>/dev/null; then
        report_metadata metadata /tmp/meta_data.json
        if [ -z "$user_data" ] && timeout 5 wget -q -O /tmp/user_data.md $base/user_data 2>/dev/null
        then user_data=/tmp/user_data.md; fi
    else
        say "metadata unreachable"
    fi
fi

if [ -n "$user_data" ] && [ "$(head -c 2 "$user_data")" = "#!" ]; then
    cp "$user_data" /tmp/user_data && chmod +x /tmp/user_data
    say "user-data start"
    /tmp/user_data
    say "user-data exit=$?"
fi

# Started late: acpid exits when the input devices (the power button) are not there yet.
acpid -f -c /etc/acpi -a /etc/acpid.conf >/dev/null 2>&1 &
disks() { ls /sys/block | grep -v -e '^loop' -e '^ram' | tr '\n' ' '; }
seen="$(disks)"
say "disks $seen"
say "ready after $(cut -d " " -f 1 /proc/uptime)s"
(while true; do setsid cttyhack sh; sleep 1; done) &
while true; do
    sleep 1
    now="$(disks)"
    [ "$now" != "$seen" ] && { seen="$now"; say "disks $now"; }
done
"""

DHCP_SCRIPT = r"""#!/bin/sh
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = 0.0.0.0 ]; then ip route add "$1" dev "$interface"
            else ip route add "$1" via "$2" dev "$interface"; fi
            shift 2
        done
    elif [ -n "$router" ]; then
        for gw in $router; do ip route add default via "$gw" dev "$interface"; break; done
    fi
    [ -n "$dns" ] && for ns in $dns; do echo "nameserver $ns"; done > /etc/resolv.conf
    ;;
esac
exit 0
"""

POWER_BUTTON = """#!/bin/sh
echo "cumulo-guest: power button, powering off" > /dev/console
sync
poweroff -f
"""


class GuestBuildError(Exception):
    """The guest could not be built (no apt-get, no registry, a package missing)."""


@dataclass(frozen=True)
class TinyGuest:
    kernel: Path
    initramfs: Path
    kernel_version: str
    command_line: str = COMMAND_LINE


def default_cache_dir() -> Path:
    env = os.environ.get("CUMULO_GUEST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "cumulo" / "guest"


def build_guest(cache_dir: Path | None = None) -> TinyGuest:
    """Kernel and initramfs of the tiny guest, built once and then read from the cache."""
    cache = cache_dir or default_cache_dir()
    init = INIT.replace("@MODULES@", " ".join(MODULES))
    digest = hashlib.sha256((init + DHCP_SCRIPT + POWER_BUTTON).encode()).hexdigest()[:12]
    built = _cached_kernel(cache)
    if built is None:
        built = _unpack_packages(cache)
    version, root = built
    kernel = root / "vmlinuz"
    initramfs = root / f"initramfs-{digest}.img"
    if not initramfs.exists():
        data = _initramfs(root / "tree", version, init)
        tmp = initramfs.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(initramfs)
    return TinyGuest(kernel=kernel, initramfs=initramfs, kernel_version=version)


def _cached_kernel(cache: Path) -> tuple[str, Path] | None:
    done = [p.parent for p in cache.glob("*/vmlinuz") if (p.parent / "tree").is_dir()]
    if not done:
        return None
    newest = max(done, key=lambda p: p.stat().st_mtime)
    return newest.name, newest


def _unpack_packages(cache: Path) -> tuple[str, Path]:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise GuestBuildError("apt-get and dpkg-deb are needed to build the test guest")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    meta = _download(debs, KERNEL_PACKAGE)
    depends = _run(["dpkg-deb", "-f", str(meta), "Depends"]).strip()
    kernel_pkg = next(
        (d.split()[0] for d in depends.split(",") if d.strip().startswith("linux-image-")),
        None,
    )
    if kernel_pkg is None:
        raise GuestBuildError(f"{KERNEL_PACKAGE} depends on no linux-image package: {depends}")
    kernel_deb = _download(debs, kernel_pkg)
    busybox_deb = _download(debs, BUSYBOX_PACKAGE)
    version = kernel_pkg.removeprefix("linux-image-")
    root = cache / version
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        _run(["dpkg-deb", "-x", str(kernel_deb), str(work / "k")])
        _run(["dpkg-deb", "-x", str(busybox_deb), str(work / "b")])
        tree = work / "tree"
        (tree / "bin").mkdir(parents=True)
        (tree / "lib" / "modules").mkdir(parents=True)
        shutil.copy2(work / "b" / "bin" / "busybox", tree / "bin" / "busybox")
        modules = work / "k" / "lib" / "modules" / version / "kernel"
        for name in MODULES:
            _copy_module(modules, name, tree / "lib" / "modules" / f"{name}.ko")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        shutil.move(str(tree), root / "tree")
        shutil.copy2(work / "k" / "boot" / f"vmlinuz-{version}", root / "vmlinuz")
    return version, root


def _copy_module(modules: Path, name: str, target: Path) -> None:
    for suffix, opener in ((".ko", None), (".ko.xz", "xz"), (".ko.zst", "zstd")):
        found = next(modules.rglob(name + suffix), None)
        if found is None:
            continue
        if opener is None:
            shutil.copy2(found, target)
        else:
            target.write_bytes(
                subprocess.run([opener, "-dc", str(found)], check=True, capture_output=True).stdout
            )
        return
    raise GuestBuildError(f"kernel module {name} is not in the kernel package")


def _download(directory: Path, package: str) -> Path:
    """`apt-get download`, running `apt-get update` once if the package is unknown."""
    existing = sorted(directory.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    for attempt in range(2):
        proc = subprocess.run(
            ["apt-get", "download", "-q", package], cwd=directory, capture_output=True, text=True
        )
        found = sorted(directory.glob(f"{package}_*.deb"))
        if proc.returncode == 0 and found:
            return found[-1]
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
    raise GuestBuildError(f"apt-get download {package} failed: {proc.stderr.strip()[-300:]}")


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GuestBuildError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def _initramfs(tree: Path, version: str, init: str) -> bytes:
    archive = _Cpio()
    for d in (
        "bin",
        "dev",
        "etc",
        "etc/udhcpc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
        "mnt",
        "mnt/config",
    ):
        archive.add(d, stat.S_IFDIR | 0o755)
    # The kernel opens /dev/console for init before anything is mounted.
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.add("init", stat.S_IFREG | 0o755, init.encode())
    archive.add("bin/busybox", stat.S_IFREG | 0o755, (tree / "bin" / "busybox").read_bytes())
    archive.add("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    archive.add("etc/udhcpc/default.script", stat.S_IFREG | 0o755, DHCP_SCRIPT.encode())
    archive.add("etc/acpid.conf", stat.S_IFREG | 0o644, b"PWRF PWRF/00000080\n")
    archive.add("etc/acpi/PWRF/00000080", stat.S_IFREG | 0o755, POWER_BUTTON.encode())
    archive.add("etc/hostname", stat.S_IFREG | 0o644, b"cumulo-guest\n")
    for ko in sorted((tree / "lib" / "modules").glob("*.ko")):
        archive.add(f"lib/modules/{ko.name}", stat.S_IFREG | 0o644, ko.read_bytes())
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


class _Cpio:
    """The "newc" cpio format the kernel unpacks as its initramfs."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.out.write(encoded)
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self) -> None:
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.out.getvalue()
