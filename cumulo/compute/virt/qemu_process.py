"""One QEMU process: its command line, its QMP socket, whether it lives, and the accelerator.

Kept apart from the driver so that qemu.py reads as the ComputeDriver story (what each
action does to a guest) and this file as the mechanics (how QEMU is started and spoken to).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qemu.qmp import QMPClient, QMPError
from qemu.qmp.qmp_client import NegotiationError

from cumulo.common import limits
from cumulo.compute.virt.driver import DriverError
from cumulo.compute.virt.qemu_tpm import qemu_arguments as tpm_arguments

LOG = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"

# Slots on the pc machine's PCI bus 0, each device's own, so a device is where the device
# metadata (device role tags) says across restarts, hot-plugs and unplugs. Slot 0 is the
# host bridge, 1 the PIIX3 (ISA, IDE, ACPI), 2 the VGA card of -vga (its first free slot).
SLOT_GUEST_AGENT = 0x03  # virtio-serial
SLOT_SCSI = 0x04  # virtio-scsi, for a stable rescue's SCSI disk
SLOT_USB = 0x05  # xHCI, for a stable rescue's USB disk
# The local disks, in the order the guest names them (vda, vdb, ...): a rescue disk that
# boots in the guest's place before its root disk.
DISK_SLOTS = {"rescue": 0x06, "root": 0x07, "eph0": 0x08, "swap": 0x09, "config": 0x0A}
# Volumes and NICs take the lowest free slot from here (at spawn: volumes, then NICs).
FIRST_FREE_SLOT = 0x0B
LAST_SLOT = 0x1F

# The q35 machine (an image's hw_machine_type=q35) keeps those slots for the same devices
# on its root complex (pcie.0: the guest finds them at 0000:00:SS.0), but pcie.0 takes no
# hot-plug: each volume and NIC slot is a PCIe root port of its own (libvirt's layout of a
# q35 guest: a pcie-root-port per device, hot-plug capable), made at boot for every slot
# from FIRST_FREE_SLOT, packed as the functions of pcie.0 slots from ROOT_PORT_SLOT. The
# firmware numbers the ports' buses in that order (1, 2, ...): the device in slot s is
# at 0000:BB:00.0, BB = s - FIRST_FREE_SLOT + 1.
ROOT_PORT_SLOT = 0x0B
# QEMU's machine types by family (Nova's hw_machine_type), the versioned names included.
MACHINE_FAMILIES = {"pc": "pc-i440fx-", "q35": "pc-q35-"}

# UEFI (an image's hw_firmware_type=uefi): OVMF from the Debian package ovmf, as libvirt
# uses it: the code read-only and shared, and each guest's own copy of the variable
# store (libvirt's nvram) in its instance directory, made from the package's template.
FIRMWARE_TYPES = ("bios", "uefi")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot (os_secure_boot): the build that keeps its variables behind SMM (q35 with
# smm=on and a secure pflash only), and a template with Microsoft's keys enrolled and
# Secure Boot on (what Debian's shim, signed by Microsoft's UEFI CA, is verified by).
OVMF_SECBOOT_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
SECURE_BOOT_POLICIES = ("required", "disabled", "optional")
NVRAM = "nvram.fd"


@dataclass
class Drive:
    """A disk of the guest, in the order the guest names them (vda, vdb, ...). Disks are on
    the virtio bus; a stable rescue's disk may be on another bus, or a CD-ROM."""

    node: str
    path: str
    format: str
    read_only: bool = False
    serial: str | None = None
    # Where the bytes are: a local file (path), an NBD export (nbd://host:port/export) or
    # an iSCSI LUN (iscsi://portal/target-iqn/lun, QEMU's own initiator, libiscsi).
    protocol: str = "file"
    bus: str = "virtio"  # virtio, scsi, usb or ide (driver.RESCUE_BUSES)
    # disk, cdrom, or lun: a SCSI disk whose commands go through to the iSCSI LUN
    # (scsi-block, Nova's device_type lun: SCSI reservations of clustered multiattach).
    media: str = "disk"
    bootindex: int | None = None  # the firmware boots this one first
    slot: int | None = None  # a virtio disk's PCI slot (None: QEMU's choice)
    # The guest device's id when it is not the node's name (a swapped volume's device
    # keeps its id while it reads another node).
    device_id: str | None = None
    # An encrypted volume (format `luks`): the id of the QEMU secret object holding its
    # passphrase (never the passphrase: guest.json is not where secrets are kept).
    key_secret: str | None = None
    # An iSCSI drive: the initiator name QEMU logs in with, the CHAP user, and the id of
    # the secret object holding the CHAP password.
    initiator: str | None = None
    chap_user: str | None = None
    chap_secret: str | None = None
    # The port inside the guest's network namespace that relays to the portal (QEMU in
    # a namespace does not reach the host's portal address itself), None: no relay.
    relay_port: int | None = None

    def secret_ids(self) -> list[str]:
        """The secret objects the drive is opened with."""
        return [s for s in (self.key_secret, self.chap_secret) if s]


@dataclass
class Nic:
    tap: str
    mac: str
    slot: int | None = None  # PCI slot (None: QEMU's choice)
    # False: the guest completes its own checksums (virtio-net `csum=off`), for a tap on
    # Open vSwitch's userspace datapath, which drops partial-checksum frames it tunnels.
    checksum_offload: bool = True


def free_slot(used: set[int], start: int = FIRST_FREE_SLOT) -> int:
    """The lowest PCI slot from `start` for a volume or NIC that no device holds."""
    for slot in range(start, LAST_SLOT + 1):
        if slot not in used:
            return slot
    raise DriverError("the guest has no free PCI slot left for another device")


def used_slots(record: dict[str, Any]) -> set[int]:
    """The PCI slots the guest's disks, volumes and NICs hold (in guest.json)."""
    machine = record["machine"]
    devices = [*machine["drives"], *record["volumes"].values(), *machine["nics"]]
    return {d["slot"] for d in devices if d.get("slot") is not None}


def slot_after_disks(record: dict[str, Any]) -> int:
    """A free PCI slot after every virtio disk of the guest (guest.json): a disk put
    there is named after them (a stable rescue's disk comes last)."""
    machine = record["machine"]
    slots = [
        d["slot"]
        for d in [*machine["drives"], *record["volumes"].values()]
        if d.get("bus", "virtio") == "virtio" and d.get("slot") is not None
    ]
    return free_slot(used_slots(record), max([FIRST_FREE_SLOT - 1, *slots]) + 1)


def _addr(slot: int) -> str:
    return f"{slot:02x}.0"  # QEMU's addr property: slot.function, in hex


def machine_family(machine_type: str) -> str | None:
    """`pc` or `q35` for a machine type of that family (`pc-q35-7.2` too), else None."""
    for family, versioned in MACHINE_FAMILIES.items():
        if machine_type == family or machine_type.startswith(versioned):
            return family
    return None


def on_root_port(slot: int | None, machine_type: str) -> bool:
    """Whether the device in `slot` sits behind its own PCIe root port (q35's hot-plug slots)."""
    return slot is not None and slot >= FIRST_FREE_SLOT and machine_family(machine_type) == "q35"


def root_port(slot: int) -> str:
    return f"rp{slot:02x}"


def guest_pci_address(slot: int, machine_type: str = "pc") -> str:
    """Where the guest finds the device in `slot` (domain:bus:slot.function)."""
    if on_root_port(slot, machine_type):
        return f"0000:{slot - FIRST_FREE_SLOT + 1:02x}:00.0"
    return f"0000:00:{slot:02x}.0"


def root_port_args(slot: int) -> dict[str, Any]:
    """The pcie-root-port of a q35 guest's volume or NIC slot."""
    index = slot - FIRST_FREE_SLOT
    where, function = divmod(index, 8)
    args: dict[str, Any] = {
        "driver": "pcie-root-port",
        "id": root_port(slot),
        "bus": "pcie.0",
        "addr": f"{ROOT_PORT_SLOT + where:02x}.{function}",
        "chassis": index + 1,
        "port": 0x10 + index,
        # virtio devices on PCIe have no I/O BARs; 21 ports' default 4 KiB I/O windows
        # would not fit the 64 KiB I/O space.
        "io-reserve": 0,
    }
    if function == 0:
        args["multifunction"] = True
    return args


@dataclass
class MachineConfig:
    """Everything QEMU's command line is made of; stored with the guest to start it again."""

    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    accel: str
    drives: list[Drive] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    kernel: str | None = None
    initrd: str | None = None
    command_line: str | None = None
    vnc: bool = True
    # A virtio-serial channel to qemu-guest-agent (images with hw_qemu_guest_agent=yes),
    # and the account changePassword sets (the image's os_admin_user, Nova's default root).
    guest_agent: bool = False
    admin_user: str = "root"
    # The network namespace QEMU runs in: where its taps and their bridges are.
    netns: str | None = None
    # The image's os_require_quiesce: a live snapshot fails when the filesystems cannot
    # be frozen (else it is taken unfrozen).
    require_quiesce: bool = False
    # An emulated TPM (Nova's vTPM): its version (1.2, 2.0) and QEMU's front end
    # (tpm-tis, tpm-crb), run by a swtpm beside QEMU (qemu_tpm); None: no TPM.
    tpm_version: str | None = None
    tpm_model: str | None = None
    # "bios" (SeaBIOS) or "uefi" (OVMF with the guest's variable store in its directory).
    firmware: str = "bios"
    # QEMU's machine type (hw_machine_type): the pc family or the q35 one.
    machine_type: str = "pc"
    # UEFI Secure Boot (os_secure_boot): q35 with SMM, OVMF's secboot build, MS keys.
    secure_boot: bool = False
    # The image's hw_scsi_model (virtio-scsi): the guest has that SCSI controller from
    # its start (SCSI volumes and LUNs plug into it), with or without SCSI disks.
    scsi_model: str | None = None


def command_line(
    config: MachineConfig,
    directory: Path,
    qmp_fd: int,
    incoming: str | None = None,
    nbd_fds: dict[str, int] | None = None,
    secret_files: dict[str, Path] | None = None,
) -> list[str]:
    """QEMU's argv; `nbd_fds` are the connected sockets of the NBD drives, by node name;
    `secret_files` the files QEMU reads the encrypted drives' passphrases from, by secret
    id (a passphrase is never in argv: anyone on the host reads that in `ps`)."""
    machine = config.machine_type
    secure_boot = config.secure_boot and config.firmware == "uefi"
    if secure_boot:
        machine += ",smm=on"
    if config.firmware == "uefi":
        machine += ",pflash0=ovmf-code,pflash1=ovmf-vars"
    argv = [
        QEMU,
        "-name", f"guest={config.uuid},process=qemu-{config.uuid[:8]}",
        "-machine", machine,
        "-accel", config.accel,
        "-cpu", "host" if config.accel == "kvm" else "max",
        "-smp", str(config.vcpus),
        "-m", str(config.memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-daemonize",
        "-pidfile", str(directory / "qemu.pid"),
        "-D", str(directory / "qemu.log"),
        "-chardev", f"socket,id=qmp,fd={qmp_fd},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        # The serial port both logs to console.log and listens on serial.sock (relative:
        # QEMU starts in the instance directory) for the serial console proxy.
        "-chardev", f"socket,id=serial0,path={SERIAL_SOCKET},server=on,wait=off,"
        f"logfile={_option_value(directory / 'console.log')},logappend=on",
        "-serial", "chardev:serial0",
        "-display", "none",
    ]  # fmt: skip
    if config.firmware == "uefi":
        code = OVMF_SECBOOT_CODE if secure_boot else OVMF_CODE
        argv += [
            "-blockdev", json.dumps(_pflash_args("ovmf-code", code, read_only=True)),
            "-blockdev", json.dumps(_pflash_args("ovmf-vars", directory / NVRAM)),
        ]  # fmt: skip
    if secure_boot:  # the variable store only SMM code may write
        argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    if machine_family(config.machine_type) == "q35":
        for slot in range(FIRST_FREE_SLOT, LAST_SLOT + 1):
            argv += ["-device", json.dumps(root_port_args(slot))]
    if config.vnc:
        # A unix socket in the instance directory, not a TCP port: the guest's QEMU may
        # run in the data plane's namespace, whose loopback nobody else reaches. The path
        # is relative (AF_UNIX paths end at 108 bytes): QEMU is started in the instance
        # directory and binds it before -daemonize leaves that directory.
        argv += ["-vga", "std", "-vnc", f"unix:{VNC_SOCKET}"]
        # SPICE beside VNC, on a unix socket too (the spice-html5 proxy and the host's
        # spice-direct port reach it there); no password: the console tokens guard it.
        argv += ["-spice", f"unix=on,addr={SPICE_SOCKET},disable-ticketing=on"]
    else:
        argv += ["-vga", "none"]
    if config.guest_agent:
        # QEMU listens on qga.sock in the instance directory (its working directory).
        argv += [
            "-chardev", f"socket,id=qga0,path={QGA_SOCKET},server=on,wait=off",
            "-device", f"virtio-serial-pci,id=virtio-serial0,addr={_addr(SLOT_GUEST_AGENT)}",
            "-device", "virtserialport,bus=virtio-serial0.0,chardev=qga0,"
            "name=org.qemu.guest_agent.0",
        ]  # fmt: skip
    if config.kernel:
        argv += ["-kernel", config.kernel]
        if config.initrd:
            argv += ["-initrd", config.initrd]
        if config.command_line:
            argv += ["-append", config.command_line]
    buses = {drive.bus for drive in config.drives}
    if "scsi" in buses or config.scsi_model:
        argv += ["-device", f"virtio-scsi-pci,id=scsi0,addr={_addr(SLOT_SCSI)}"]
    if "usb" in buses:
        argv += ["-device", f"qemu-xhci,id=usb0,addr={_addr(SLOT_USB)}"]
    for drive in config.drives:
        fd = (nbd_fds or {}).get(drive.node)
        for secret_id in drive.secret_ids():
            path = (secret_files or {}).get(secret_id)
            if path is None:
                what = "passphrase" if secret_id == drive.key_secret else "CHAP password"
                raise DriverError(f"no {what} for the drive {drive.node} (secret {secret_id})")
            argv += ["-object", secret_object_option(secret_id, path)]
        argv += [
            "-blockdev", json.dumps(blockdev_args(drive, None if fd is None else str(fd))),
            "-device", json.dumps(device_args(drive, config.machine_type)),
        ]  # fmt: skip
    for nic in config.nics:
        # Ids follow the tap (so the port): a NIC plugged later is found by the same name.
        argv += [
            "-netdev", f"tap,id=net-{nic.tap},ifname={nic.tap},script=no,downscript=no",
            "-device", json.dumps(nic_args(nic, config.machine_type)),
        ]  # fmt: skip
    if config.tpm_version:
        argv += tpm_arguments(config.tpm_model or "tpm-tis")
    if incoming:
        argv += ["-incoming", incoming]
    return argv


def _pflash_args(node: str, path: Path, read_only: bool = False) -> dict[str, Any]:
    file = {"driver": "file", "filename": str(path), "read-only": read_only}
    return {"node-name": node, "driver": "raw", "read-only": read_only, "file": file}


def firmware_type(properties: dict[str, Any]) -> str:
    """An image's firmware, Nova's hw_firmware_type (bios when unset), checked against
    what this host has."""
    firmware = str(properties.get("hw_firmware_type") or "bios").lower()
    check_firmware(firmware)
    return firmware


def check_firmware(firmware: str, secure_boot: bool = False) -> None:
    """DriverError unless this host has what boots a guest with `firmware`."""
    if firmware not in FIRMWARE_TYPES:
        raise DriverError(f"unknown firmware type {firmware!r} (hw_firmware_type): bios or uefi")
    if firmware == "uefi":
        missing = [str(p) for p in firmware_files(secure_boot) if not p.is_file()]
        if missing:
            raise DriverError(
                f"UEFI firmware is missing on this host: {', '.join(missing)} "
                "(install the Debian package ovmf: `cumulo host-packages --install`)"
            )


def firmware_files(secure_boot: bool = False) -> tuple[Path, Path]:
    """OVMF's code and the template of a guest's variable store."""
    return (OVMF_SECBOOT_CODE, OVMF_MS_VARS) if secure_boot else (OVMF_CODE, OVMF_VARS)


def make_nvram(directory: Path, secure_boot: bool = False) -> Path:
    """The guest's UEFI variable store, a copy of OVMF's template unless it has one
    (kept across power cycles, as libvirt keeps a domain's nvram)."""
    nvram = directory / NVRAM
    if not nvram.exists():
        tmp = nvram.with_suffix(".part")
        shutil.copyfile(firmware_files(secure_boot)[1], tmp)
        tmp.replace(nvram)
    return nvram


def secure_boot_policy(properties: dict[str, Any], extra_specs: dict[str, Any]) -> str | None:
    """Nova's get_secure_boot_constraint: the flavor's os:secure_boot or the image's
    os_secure_boot; DriverError when a value is unknown or the two disagree."""
    flavor = extra_specs.get("os:secure_boot")
    image = properties.get("os_secure_boot")
    for name, value in (("os:secure_boot", flavor), ("os_secure_boot", image)):
        if value is not None and value not in SECURE_BOOT_POLICIES:
            raise DriverError(f"{name} {value!r} is not one of {', '.join(SECURE_BOOT_POLICIES)}")
    if flavor and image and flavor != image:
        raise DriverError(
            f"Flavor os:secure_boot {flavor!r} conflicts with image os_secure_boot {image!r}"
        )
    return flavor or image


def choose_machine(
    firmware: str,
    properties: dict[str, Any],
    extra_specs: dict[str, Any],
    default: str = "pc",
    supported: frozenset[str] = frozenset(),
) -> tuple[str, bool]:
    """The machine type and whether Secure Boot is on, for a guest of `firmware` from
    an image with these properties and a flavor with these extra specs: the image's
    hw_machine_type (else `default`, [compute] qemu_machine_type) if QEMU has it
    (`supported`: what `-machine help` lists; empty: not checked). Secure Boot
    `required` needs UEFI and moves an image that names no machine type onto q35;
    `optional` is on for a UEFI guest that may be q35 on a host with the firmware."""
    policy = secure_boot_policy(properties, extra_specs)
    named = properties.get("hw_machine_type")
    machine_type = str(named or default)
    family = machine_family(machine_type)
    if family is None or (supported and machine_type not in supported):
        raise DriverError(
            f"Machine type {machine_type!r} is not supported (hw_machine_type): this host's "
            "QEMU boots pc and q35 guests and their versioned types (pc-i440fx-*, pc-q35-*)"
        )
    secure = False
    if policy == "required":
        if firmware != "uefi":
            raise DriverError(
                "Secure Boot is required (os_secure_boot / os:secure_boot) but the image "
                "boots with BIOS: Secure Boot needs UEFI firmware (hw_firmware_type=uefi)"
            )
        secure = True
    elif policy == "optional":
        secure = (
            firmware == "uefi"
            and (family == "q35" or not named)
            and all(p.is_file() for p in firmware_files(True))
        )
    if secure and family != "q35":
        if named:
            raise DriverError(
                f"Secure Boot needs the q35 machine type (with SMM), not {machine_type!r} "
                "(hw_machine_type)"
            )
        machine_type = "q35"
    return machine_type, secure


async def machine_types() -> frozenset[str]:
    """The machine types this host's QEMU has (`-machine help`: names and aliases)."""
    proc = await asyncio.create_subprocess_exec(
        QEMU, "-machine", "help",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    lines = out.decode(errors="replace").splitlines()[1:]  # "Supported machines are:"
    return frozenset(line.split()[0] for line in lines if line.strip())


def blockdev_args(drive: Drive, nbd_fd: str | None = None) -> dict[str, Any]:
    """`nbd_fd`: an NBD drive reads through this connected socket (a number on the command
    line, a getfd name over QMP) instead of connecting itself. A `luks` drive is QEMU's
    LUKS driver over the protocol node, opened with its secret object's passphrase. A
    `lun` drive is the iSCSI node itself: scsi-block sends its SCSI commands there."""
    if drive.media == "lun":
        if drive.protocol != "iscsi":
            raise DriverError(f"the SCSI LUN drive {drive.node} is not an iSCSI volume")
        return {**_protocol_args(drive, None), "node-name": drive.node}
    args: dict[str, Any] = {
        "node-name": drive.node,
        "driver": drive.format,
        "read-only": drive.read_only,
        "file": _protocol_args(drive, nbd_fd),
    }
    if drive.format == "luks":
        if drive.key_secret is None:
            raise DriverError(f"the encrypted drive {drive.node} has no secret to open it")
        args["key-secret"] = drive.key_secret
    return args


def secret_object_option(secret_id: str, path: Path) -> str:
    """`-object` of a secret QEMU reads from a file (raw bytes: the passphrase)."""
    return f"secret,id={secret_id},file={_option_value(path)},format=raw"


def secret_object_args(secret_id: str, path: Path) -> dict[str, Any]:
    """QMP `object-add` of the same secret (a hot-plugged encrypted volume's)."""
    return {"qom-type": "secret", "id": secret_id, "file": str(path), "format": "raw"}


def _protocol_args(drive: Drive, nbd_fd: str | None) -> dict[str, Any]:
    if drive.protocol == "iscsi":
        return iscsi_args(drive)
    if drive.protocol == "nbd":
        where = urlsplit(drive.path)
        server = (
            {"type": "fd", "str": nbd_fd}
            if nbd_fd is not None
            else {"type": "inet", "host": where.hostname, "port": str(where.port or 10809)}
        )
        return {
            "driver": "nbd",
            "server": server,
            "export": where.path.lstrip("/"),
            "read-only": drive.read_only,
        }
    return {"driver": "file", "filename": drive.path, "read-only": drive.read_only}


def iscsi_location(portal: str, target: str, lun: int) -> str:
    return f"iscsi://{portal}/{target}/{lun}"


def iscsi_args(drive: Drive) -> dict[str, Any]:
    """QEMU's iscsi block driver (libiscsi) logging in to the drive's target over TCP
    with its initiator name and CHAP (the password from a secret object, never here)."""
    where = urlsplit(drive.path)
    target, _, lun = where.path.lstrip("/").rpartition("/")
    if not where.netloc or not target or not lun.isdigit():
        raise DriverError(f"the iSCSI drive {drive.node} has no target: {drive.path}")
    args: dict[str, Any] = {
        "driver": "iscsi",
        "transport": "tcp",
        "portal": f"127.0.0.1:{drive.relay_port}" if drive.relay_port else where.netloc,
        "target": target,
        "lun": int(lun),
        "read-only": drive.read_only,
    }
    if drive.initiator:
        args["initiator-name"] = drive.initiator
    if drive.chap_user:
        if drive.chap_secret is None:
            raise DriverError(f"the iSCSI drive {drive.node} has no CHAP secret")
        args |= {"user": drive.chap_user, "password-secret": drive.chap_secret}
    return args


async def connect_nbd(drive: Drive, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the drive's NBD server, made from the agent's own namespace.

    QEMU runs in the guest network's namespace, where Block Storage's address (often
    127.0.0.1) means something else: it is handed this socket instead of an address.
    """
    where = urlsplit(drive.path)
    try:
        return await asyncio.to_thread(
            socket.create_connection, (where.hostname, where.port or 10809), timeout
        )
    except OSError as exc:
        raise DriverError(f"the NBD server of {drive.node} does not answer: {exc}") from exc


def device_args(drive: Drive, machine_type: str = "pc") -> dict[str, Any]:
    cdrom = drive.media == "cdrom"
    args: dict[str, Any] = {"drive": drive.node, "id": drive.device_id or drive.node}
    if drive.bus == "scsi":
        kind = {"cdrom": "scsi-cd", "lun": "scsi-block"}.get(drive.media, "scsi-hd")
        args |= {"driver": kind, "bus": "scsi0.0"}
    elif drive.bus == "usb":
        args |= {"driver": "usb-storage", "bus": "usb0.0", "removable": cdrom}
    elif drive.bus == "ide":  # the pc machine's own IDE controller
        args |= {"driver": "ide-cd" if cdrom else "ide-hd"}
    else:
        args["driver"] = "virtio-blk-pci"
        if on_root_port(drive.slot, machine_type):
            args["bus"] = root_port(drive.slot)
        elif drive.slot is not None:
            args["addr"] = _addr(drive.slot)
    if drive.serial and drive.media != "lun":  # a LUN's serial is its target's own
        args["serial"] = drive.serial
    if drive.bootindex is not None:
        args["bootindex"] = drive.bootindex
    return args


def nic_args(nic: Nic, machine_type: str = "pc") -> dict[str, Any]:
    """A NIC's -device (and device_add) arguments: virtio-net on its tap's netdev."""
    args: dict[str, Any] = {
        "driver": "virtio-net-pci",
        "netdev": f"net-{nic.tap}",
        "mac": nic.mac,
        "id": f"nic-{nic.tap}",
    }
    if on_root_port(nic.slot, machine_type):
        args["bus"] = root_port(nic.slot)
    elif nic.slot is not None:
        args["addr"] = _addr(nic.slot)
    if not nic.checksum_offload:
        args["csum"] = False
    return args


def _option_value(path: Path | str) -> str:
    # In QEMU's key=value option strings a comma is written twice.
    return str(path).replace(",", ",,")


# -- the process ------------------------------------------------------------------------


VNC_SOCKET = "vnc.sock"
SPICE_SOCKET = "spice.sock"
SERIAL_SOCKET = "serial.sock"
QGA_SOCKET = "qga.sock"


def short_unix_path(directory: Path, name: str) -> tuple[str, int]:
    """A path to `directory/name` short enough for AF_UNIX (108 bytes), via /proc/self/fd.

    Returns the path and the directory fd that keeps it valid (close it when done).
    """
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{name}", fd


async def open_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the unix socket at `path`, however long the path is."""
    short, directory = short_unix_path(path.parent, path.name)
    try:
        return await asyncio.open_unix_connection(short)
    finally:
        os.close(directory)


async def join_streams(
    one: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    other: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    pipes: set[asyncio.Task],
) -> None:
    """Each side's bytes carried to the other until one side ends; both closed then
    (the copying tasks are in `pipes` meanwhile, for their owner to cancel)."""
    both = [
        asyncio.create_task(_pipe(one[0], other[1])),
        asyncio.create_task(_pipe(other[0], one[1])),
    ]
    pipes.update(both)
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in both:
            task.cancel()
            pipes.discard(task)
        for writer in (one[1], other[1]):
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def listening_socket(directory: Path, name: str) -> socket.socket:
    path, fd = short_unix_path(directory, name)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(1)
        return sock
    finally:
        os.close(fd)


async def launch(argv: Sequence[str], directory: Path, pass_fds: Sequence[int] = ()) -> None:
    """Start QEMU; it daemonizes once the guest is set up, so errors come back here.

    Its output goes to a temporary file, not a pipe: the daemon child inherits the
    parent's descriptors for a while, and a pipe reader (uvloop's especially) would
    wait for that child instead of the parent that exits.
    """
    with tempfile.TemporaryFile() as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=tuple(pass_fds),
            cwd=directory,  # relative paths in argv (the VNC socket) are the instance's
            start_new_session=True,  # a Ctrl-C of the agent must not reach its guests
        )
        returncode = await proc.wait()
        if returncode != 0:
            out.seek(0)
            err = out.read().decode(errors="replace").strip()[-500:]
            raise DriverError(f"QEMU failed to start: {err}")


def read_pid(directory: Path) -> int | None:
    try:
        return int((directory / "qemu.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(pid: int | None, uuid: str) -> bool:
    """True when `pid` is a live (not zombie) QEMU of this guest (pids get reused)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X") and f"guest={uuid}".encode() in cmdline


async def kill(pid: int | None, uuid: str, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
    if not process_alive(pid, uuid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if await wait_dead(pid, uuid, grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not await wait_dead(pid, uuid, 5.0):
        raise DriverError(f"QEMU {pid} of {uuid} did not die")


async def wait_dead(pid: int | None, uuid: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid, uuid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class GuestMonitor(QMPClient):
    """A QMP client that can hand QEMU a file descriptor (SCM_RIGHTS on its own socket:
    the transport's socket is not reachable under uvloop)."""

    def __init__(self, name: str, sock: socket.socket) -> None:
        super().__init__(name)
        self.sock = sock

    async def pass_fd(self, fd: int, name: str) -> None:
        self.sock.sendmsg([b" "], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("@i", fd))])
        await self.execute("getfd", {"fdname": name})

    async def _negotiate(self) -> None:
        """QMPClient's negotiation, but an event QEMU broadcasts as this session leaves
        negotiation mode (a live migration's MIGRATION events) may come before the
        `qmp_capabilities` reply: events are passed over, not taken for the reply."""
        arguments: dict[str, list[str]] = {}
        if self._greeting and "oob" in self._greeting.QMP.capabilities:
            arguments["enable"] = ["oob"]
        await self._send(self.make_execute_msg("qmp_capabilities", arguments=arguments))
        reply = await self._recv()
        while "event" in reply:
            reply = await self._recv()
        if "return" not in reply or "error" in reply:
            raise NegotiationError("Negotiation failed", ValueError(str(dict(reply))))


@contextlib.asynccontextmanager
async def qmp_session(
    directory: Path, uuid: str, timeout: float = 10.0
) -> AsyncIterator[GuestMonitor]:
    """A QMP connection to the guest's monitor (one client at a time per guest)."""
    path, fd = short_unix_path(directory, "qmp.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise DriverError(f"the QMP socket of {uuid} does not answer: {exc}") from exc
    finally:
        os.close(fd)
    client = GuestMonitor(f"cumulo-{uuid[:8]}", sock)
    try:
        await asyncio.wait_for(client.connect(sock), timeout)
        yield client
    except (QMPError, EOFError, OSError, TimeoutError) as exc:
        # A QEMU that is dying, or a command QEMU refused: the caller sees one error type.
        raise DriverError(f"QMP of {uuid}: {exc}") from exc
    finally:
        # After `quit` or a guest power-off QEMU is gone: the closed connection is expected.
        with contextlib.suppress(Exception):
            await client.disconnect()


# -- accelerator ----------------------------------------------------------------------------


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


async def probe_kvm(kernel: Path | None, timeout: float = 6.0) -> bool:
    """Whether a guest kernel makes progress under KVM (an openable /dev/kvm is not enough:
    nested or broken KVM can start the firmware and then hang in the kernel)."""
    if not kvm_usable() or shutil.which(QEMU) is None:
        return False
    if kernel is None or not kernel.exists():
        LOG.info("no kernel to probe KVM with; using TCG")
        return False
    with tempfile.TemporaryDirectory(prefix="cumulo-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        proc = await asyncio.create_subprocess_exec(
            QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "128",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
            "-serial", f"file:{log}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.returncode is None:
                await asyncio.sleep(0.2)
                if log.exists() and b"Linux version" in log.read_bytes():
                    return True
            return False
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def qemu_version() -> int:
    """QEMU's version as Nova reports it (major * 1000000 + minor * 1000 + micro)."""
    proc = await asyncio.create_subprocess_exec(
        QEMU, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    words = out.decode().split()
    try:
        numbers = words[words.index("version") + 1].split(".")
        major, minor, micro = (int("".join(c for c in n if c.isdigit()) or 0) for n in numbers[:3])
    except (ValueError, IndexError):
        return 0
    return major * 1_000_000 + minor * 1000 + micro


async def run(*argv: str) -> str:
    """A helper command's output; DriverError with its stderr when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise DriverError(f"{argv[0]} {argv[1]} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def qemu_img(*args: str) -> str:
    if args[:1] == ("convert",):
        async with limits.conversion_slot():  # [limits] conversions at once
            return await run("qemu-img", *args)
    return await run("qemu-img", *args)


async def guest_agent(
    directory: Path, command: str, args: dict[str, Any], timeout: float = 30.0
) -> Any:
    """One qemu-guest-agent command over the guest's channel: guest-sync first (a reply
    left from an earlier, timed-out exchange must not be taken for this one's)."""
    path, fd = short_unix_path(directory, QGA_SOCKET)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    finally:
        os.close(fd)
    try:
        marker = int.from_bytes(os.urandom(4), "big")

        async def exchange(request: dict[str, Any], wanted: Any = None) -> Any:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            while True:
                line = await asyncio.wait_for(reader.readline(), timeout)
                if not line:
                    raise ConnectionError("the guest agent channel closed")
                reply = json.loads(line)
                if "error" in reply:
                    raise RuntimeError(reply["error"].get("desc", str(reply["error"])))
                if wanted is None or reply.get("return") == wanted:
                    return reply.get("return")

        await exchange({"execute": "guest-sync", "arguments": {"id": marker}}, marker)
        return await exchange({"execute": command, "arguments": args})
    finally:
        writer.close()


# What can go wrong talking to the agent: no channel, no answer, an error answer, garbage.
AGENT_ERRORS = (OSError, TimeoutError, RuntimeError, ValueError)


@contextlib.asynccontextmanager
async def quiesced(
    directory: Path, config: MachineConfig, timeout: float = 30.0
) -> AsyncIterator[int | None]:
    """Nova's quiesce around a live snapshot: the guest's filesystems frozen by
    qemu-guest-agent (guest-fsfreeze-freeze; yields how many), and always thawed after.

    Without an agent channel, or when the freeze fails, the body runs on an unfrozen guest
    (yields None) unless the image requires quiescing (os_require_quiesce): then it
    fails, as Nova's QemuGuestAgentNotEnabled / InstanceQuiesceFailed."""
    frozen: int | None = None
    if not config.guest_agent:
        if config.require_quiesce:
            raise DriverError(
                "the image requires quiescing but has no guest agent (hw_qemu_guest_agent)"
            )
    else:
        try:
            frozen = int(await guest_agent(directory, "guest-fsfreeze-freeze", {}, timeout))
        except AGENT_ERRORS as exc:
            # A freeze that timed out may still happen in the guest: thaw what it did.
            with contextlib.suppress(DriverError):
                await thaw(directory, timeout=5, attempts=1)
            if config.require_quiesce:
                raise DriverError(f"the guest's filesystems could not be frozen: {exc}") from None
            LOG.info("guest %s: snapshot taken unquiesced (%s)", config.uuid, exc)
    if frozen is None:
        yield None
        return
    LOG.info("guest %s: %d filesystems frozen for the snapshot", config.uuid, frozen)
    try:
        yield frozen
    finally:
        thawed = await thaw(directory, timeout)
        LOG.info("guest %s: %d filesystems thawed", config.uuid, thawed)


async def thaw(directory: Path, timeout: float = 30.0, attempts: int = 3) -> int:
    """guest-fsfreeze-thaw, tried again before giving up (a guest left frozen hangs)."""
    for attempt in range(1, attempts + 1):
        try:
            return int(await guest_agent(directory, "guest-fsfreeze-thaw", {}, timeout))
        except AGENT_ERRORS as exc:
            failure = exc
            LOG.warning("thawing the guest's filesystems failed (%s), attempt %d", exc, attempt)
            if attempt < attempts:
                await asyncio.sleep(1)
    raise DriverError(f"the guest's filesystems could not be thawed: {failure}")
