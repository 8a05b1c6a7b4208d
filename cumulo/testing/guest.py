"""The tiny test guest: Debian's cloud kernel and a busybox initramfs, built from .deb files.

Nothing but the Debian package registry is needed (`apt-get download`); the result is
cached (~/.cache/cumulo/guest, or $CUMULO_GUEST_CACHE) so every later build is instant.

The guest's /init loads the virtio modules, takes an address on eth0 with DHCP, reads
the config drive (label config-2) and the metadata service (169.254.169.254), installs
the key pair's public keys (and `admin_pass`, when given, as the password) for `root`,
starts an SSH server (Debian's dropbear, with the shared libraries it needs, from their
.debs), runs the user data when it is a shell script, and reports each step on the serial
console as a line starting with MARK, which is what tests (and `openstack console log
show`) read:

    cumulo-guest: booted 6.1.0-...-cloud-amd64
    cumulo-guest: eth0 mac fa:16:3e:..  / eth0 ip 10.0.0.5/24 / eth0 dhcp failed
    cumulo-guest: config-drive hostname=vm1 uuid=...
    cumulo-guest: config-drive key mykey ssh-ed25519 AAAA...
    cumulo-guest: metadata hostname=vm1 uuid=...   / metadata unreachable
    cumulo-guest: guest agent on /dev/vport1p1   (images with hw_qemu_guest_agent=yes)
    cumulo-guest: user-data start ... user-data exit=0
    cumulo-guest: disks vda vdb
    cumulo-guest: ready after 2.41s
    cumulo-guest: sshd started keys=1 password=no  / sshd failed: ...   (any time after
        the metadata step: the host key is made in the background)
    cumulo-guest: power button, powering off

After `ready` the list of block devices is printed again whenever it changes (hot-plug).

A guest with the agent channel (hw_qemu_guest_agent=yes) answers the qemu-guest-agent
commands cumulo sends (guest-sync, guest-ping, guest-set-user-password: changePassword)
from a shell loop; others get qemu-ga's CommandNotFound error.

What Tempest's RemoteClient runs over SSH works in busybox: `sudo`, `curl`, `lsblk` and
`blkid -L` are small shims (GUEST_TOOLS) over busybox's applets; the login user is root.
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
SSH_USER = "root"  # Tempest's [validation] image_ssh_user for this guest
# dropbear and what it loads (ldd of dropbear, dropbearkey and libtomcrypt): package ->
# the files taken from it (symlinks followed), at the same paths in the guest.
SSH_PACKAGES = {
    "dropbear-bin": ("usr/sbin/dropbear", "usr/bin/dropbearkey"),
    "libc6": ("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6"),
    "libcrypt1": ("lib/x86_64-linux-gnu/libcrypt.so.1",),
    "zlib1g": ("lib/x86_64-linux-gnu/libz.so.1",),
    "libtomcrypt1": ("usr/lib/x86_64-linux-gnu/libtomcrypt.so.1",),
    "libtommath1": ("usr/lib/x86_64-linux-gnu/libtommath.so.1",),
    "libgmp10": ("usr/lib/x86_64-linux-gnu/libgmp.so.10",),
}
# Where the x86-64 ELF interpreter is looked for (a symlink, as in Debian).
LOADER_LINK = ("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
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
    "scsi_common",
    "scsi_mod",
    "sd_mod",
    "virtio_scsi",
    "virtio_console",
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
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
say() { echo "cumulo-guest: $*"; }
say "booted $(uname -r)"
for m in @MODULES@; do
    insmod /lib/modules/$m.ko 2>/dev/null || say "insmod $m failed"
done
mdev -s 2>/dev/null
ip link set lo up
# An emulated TPM (Nova's vTPM; TIS and CRB are built into the kernel): its version, and
# a TPM 1.2's endorsement key's digest (the same after a restart when its state is kept).
if [ -e /sys/class/tpm/tpm0 ]; then
    ek=$(cat /sys/class/tpm/tpm0/pubek /sys/class/tpm/tpm0/device/pubek 2>/dev/null \
        | sha256sum | cut -c1-16)
    say "tpm0 version $(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null) ek $ek"
fi

json_str() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$2" | head -n 1; }
report_metadata() {  # $1 = where it came from, $2 = meta_data.json
    say "$1 hostname=$(json_str hostname "$2") uuid=$(json_str uuid "$2")"
    tr -d '\n' < "$2" | sed -n 's/.*"public_keys": *{\([^}]*\)}.*/\1/p' \
        | awk -F'"' '{for (i = 2; i + 2 <= NF; i += 4) print $i, $(i + 2)}' \
        | while read -r name key; do
            say "$1 key $name $key"
            echo "$key" >> /tmp/authorized_keys
        done
    pass="$(json_str admin_pass "$2")"
    [ -n "$pass" ] && admin_pass="$pass"
}
admin_pass=

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
        [ -z "$drive" ] && hostname "$(json_str hostname /tmp/meta_data.json)"
        if [ -z "$user_data" ] && timeout 5 wget -q -O /tmp/user_data.md $base/user_data 2>/dev/null
        then user_data=/tmp/user_data.md; fi
    else
        say "metadata unreachable"
    fi
fi

# SSH for root: the key pair's keys, admin_pass as the password (else none), fresh host key.
mkdir -p /root/.ssh /etc/dropbear && chmod 700 /root /root/.ssh
[ -f /tmp/authorized_keys ] && sort -u /tmp/authorized_keys > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys 2>/dev/null
hash='*'
[ -n "$admin_pass" ] && hash="$(mkpasswd -m sha512 "$admin_pass")"
echo "root:$hash:19000:0:99999:7:::" > /etc/shadow && chmod 600 /etc/shadow
# In the background: the host key takes seconds to make under TCG, and boot goes on.
keys=$(grep -c . /root/.ssh/authorized_keys 2>/dev/null)
password=$([ -n "$admin_pass" ] && echo yes || echo no)
(
    key=/etc/dropbear/dropbear_ed25519_host_key
    dropbearkey -t ed25519 -f $key >/dev/null 2>&1
    if dropbear -r $key -p 22 -E 2>>/var/log/dropbear.log; then
        say "sshd started keys=${keys:-0} password=$password"
    else
        say "sshd failed: $(tail -n 1 /var/log/dropbear.log)"
    fi
) &

set_password() {  # $1 = user, $2 = password (or a crypt(3) hash when $3 = true)
    grep -q "^$1:" /etc/shadow || return 1
    if [ "$3" = true ]; then hash="$2"; else hash="$(mkpasswd -m sha512 "$2")"; fi
    sed -i "s|^$1:[^:]*:|$1:$hash:|" /etc/shadow
}
agent() {  # qemu-guest-agent's protocol: one JSON command a line, one JSON answer a line
    exec 3<>"$1"
    while true; do
        while IFS= read -r request <&3; do
            echo "$request" > /tmp/agent.request
            case "$(json_str execute /tmp/agent.request)" in
            guest-sync)
                echo "{\"return\": $(sed -n 's/.*"id": *\([0-9]*\).*/\1/p' /tmp/agent.request)}" ;;
            guest-ping) echo '{"return": {}}' ;;
            guest-set-user-password)
                crypted=$(sed -n 's/.*"crypted": *\([a-z]*\).*/\1/p' /tmp/agent.request)
                if set_password "$(json_str username /tmp/agent.request)" \
                        "$(json_str password /tmp/agent.request | base64 -d)" "$crypted"
                then echo '{"return": {}}'
                else echo '{"error": {"class": "GenericError", "desc": "no such user"}}'
                fi ;;
            *) echo '{"error": {"class": "CommandNotFound", "desc": "not supported here"}}' ;;
            esac >&3
        done
        sleep 1  # the host end is not connected: read again
    done
}
for port in /sys/class/virtio-ports/*; do
    [ "$(cat "$port/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    say "guest agent on /dev/${port##*/}"
    agent "/dev/${port##*/}" &
done

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


# What Tempest's RemoteClient runs that busybox lacks, as shell scripts over its applets.
SUDO = """#!/bin/sh
# The login user is root: sudo runs the command as it is.
[ "$(id -u)" = 0 ] || { echo "sudo: only root can run commands in this guest" >&2; exit 1; }
exec "$@"
"""

CURL = """#!/bin/sh
# curl [-s] [-f] [-V] URL: busybox wget, bounded with timeout (its -T crashes).
url=
for arg in "$@"; do
    case "$arg" in
    -V|--version) echo "curl 8.0.0 (busybox wget shim)"; exit 0 ;;
    -*) ;;
    *) url="$arg" ;;
    esac
done
[ -n "$url" ] || { echo "curl: no URL given" >&2; exit 2; }
exec timeout 30 wget -q -O - "$url"
"""

LSBLK = """#!/bin/sh
# lsblk [-l] [-b] [--nodeps] [--fs] [--ascii]: the block devices from /sys/block, with the
# columns util-linux prints (TYPE where Tempest's get_disks looks for it). lsblk -S
# (--scsi): the SCSI devices only, with util-linux's columns NAME HCTL TYPE VENDOR MODEL
# REV SERIAL TRAN (the values from sysfs; SERIAL is udev's, and there is no udev here;
# util-linux names no transport for virtio-scsi either).
nodeps= scsi=
for arg in "$@"; do
    case "$arg" in --nodeps|-d) nodeps=1 ;; --scsi|-S) scsi=1 ;; esac
done
if [ -n "$scsi" ]; then
    srow() { printf '%-4s %-10s %-4s %-8s %-16s %-4s %-20s %s\\n' "$@"; }
    srow NAME HCTL TYPE VENDOR MODEL REV SERIAL TRAN
    for dir in /sys/block/*; do
        [ -d "$dir/device/scsi_device" ] || continue
        hctl=$(ls "$dir/device/scsi_device")
        case "${dir##*/}" in sr*) type=rom ;; *) type=disk ;; esac
        attr() { sed 's/ *$//' "$dir/device/$1" 2>/dev/null; }
        srow "${dir##*/}" "$hctl" $type "$(attr vendor)" "$(attr model)" "$(attr rev)" "" ""
    done
    exit 0
fi
row() { printf '%-8s %-7s %2s %12s %2s %-4s %s\\n' "$@"; }
row NAME MAJ:MIN RM SIZE RO TYPE MOUNTPOINT
device() {  # $1 = sysfs dir, $2 = type
    name=${1##*/}
    mnt=$(awk -v d=/dev/$name '$1 == d {print $2; exit}' /proc/mounts)
    row "$name" "$(cat $1/dev)" "$(cat $1/removable 2>/dev/null || echo 0)" \\
        "$(( $(cat $1/size) * 512 ))" "$(cat $1/ro)" "$2" "$mnt"
}
for dir in /sys/block/*; do
    case "${dir##*/}" in loop*|ram*) continue ;; sr*) type=rom ;; *) type=disk ;; esac
    device "$dir" $type
    [ -n "$nodeps" ] && continue
    for part in "$dir"/"${dir##*/}"*; do [ -f "$part/partition" ] && device "$part" part; done
done
"""

BLKID = """#!/bin/sh
# blkid -L LABEL | -U UUID [-o device]: the device, as busybox findfs finds it.
case "$1" in
-L) exec findfs "LABEL=$2" ;;
-U) exec findfs "UUID=$2" ;;
*) echo "blkid: only -L LABEL and -U UUID are supported here" >&2; exit 2 ;;
esac
"""

# Path in the guest -> script (the login PATH has /usr/sbin and /usr/bin before busybox's).
GUEST_TOOLS = {
    "usr/bin/sudo": SUDO,
    "usr/bin/curl": CURL,
    "usr/bin/lsblk": LSBLK,
    "usr/sbin/blkid": BLKID,
}
ACCOUNTS = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shells": "/bin/sh\n",
}


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
    scripts = [init, DHCP_SCRIPT, POWER_BUTTON, *GUEST_TOOLS.values(), *ACCOUNTS.values()]
    scripts += [f"{name}={files}" for name, files in SSH_PACKAGES.items()]
    digest = hashlib.sha256("".join(scripts).encode()).hexdigest()[:12]
    built = _cached_kernel(cache)
    if built is None:
        built = _unpack_packages(cache)
    version, root = built
    kernel = root / "vmlinuz"
    initramfs = root / f"initramfs-{digest}.img"
    if not initramfs.exists():
        ssh = _unpack_ssh(cache)
        data = _initramfs(root / "tree", ssh, init)
        tmp = initramfs.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(initramfs)
    return TinyGuest(kernel=kernel, initramfs=initramfs, kernel_version=version)


def _cached_kernel(cache: Path) -> tuple[str, Path] | None:
    """The newest unpacked kernel that has every module of MODULES (else None)."""
    done = [
        p.parent
        for p in cache.glob("*/vmlinuz")
        if all((p.parent / "tree" / "lib" / "modules" / f"{m}.ko").exists() for m in MODULES)
    ]
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


def _unpack_ssh(cache: Path) -> Path:
    """The tree of dropbear and its libraries (SSH_PACKAGES), unpacked once per set of
    package versions."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = {name: _download(debs, name) for name in SSH_PACKAGES}
    key = hashlib.sha256(" ".join(sorted(p.name for p in found.values())).encode())
    root = cache / f"ssh-{key.hexdigest()[:12]}"
    if root.is_dir():
        return root
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        tree = work / "tree"
        for name, deb in found.items():
            _run(["dpkg-deb", "-x", str(deb), str(work / name)])
            for path in SSH_PACKAGES[name]:
                source = work / name / path
                if not source.exists():
                    raise GuestBuildError(f"{path} is not in the package {deb.name}")
                (tree / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, tree / path)  # follows the .so.N -> .so.N.M link
        try:
            tree.rename(root)
        except OSError:  # another build got there first
            if not root.is_dir():
                raise
    return root


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


def _initramfs(tree: Path, ssh: Path, init: str) -> bytes:
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
        "lib64",
        "proc",
        "sys",
        "tmp",
        "mnt",
        "mnt/config",
        "usr",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
    ):
        archive.add(d, stat.S_IFDIR | 0o755)
    archive.add("root", stat.S_IFDIR | 0o700)
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
    for files in SSH_PACKAGES.values():
        for path in files:
            archive.add(path, stat.S_IFREG | 0o755, (ssh / path).read_bytes())
    archive.add(LOADER_LINK[0], stat.S_IFLNK | 0o777, LOADER_LINK[1].encode())
    for path, script in GUEST_TOOLS.items():
        archive.add(path, stat.S_IFREG | 0o755, script.encode())
    for path, text in ACCOUNTS.items():
        archive.add(path, stat.S_IFREG | 0o644, text.encode())
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
