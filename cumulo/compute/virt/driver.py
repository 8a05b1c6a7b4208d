"""The hypervisor interface the compute manager calls.

What a driver gets is plain data (GuestSpec and friends) prepared by the manager:
ports are allocated, the image is in the host's image cache, volumes are
connected, and the config-drive content is decided. The driver only turns that
into a running guest and reports what the hypervisor sees.
"""

from __future__ import annotations

import abc
import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cumulo.compute.states import PowerState

if TYPE_CHECKING:  # console_relay needs qemu_process, which needs this module
    from cumulo.compute.virt.console_relay import ConsoleRelays


def host_uptime() -> str:
    """The host's `uptime` line (what Nova's libvirt driver runs `uptime` for): the
    guests of every driver here run on this host."""
    with open("/proc/uptime") as f:
        seconds = int(float(f.read().split()[0]))
    with open("/proc/loadavg") as f:
        loads = f.read().split()[:3]
    days, rest = divmod(seconds, 86400)
    hours, minutes = divmod(rest // 60, 60)
    up = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    up += f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    now = time.strftime("%H:%M:%S")
    return f" {now} up {up},  0 users,  load average: {', '.join(loads)}"


def own_address() -> str:
    """This machine's address as its name resolves (other hosts reach it there)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass(frozen=True)
class FlavorSpec:
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSpec:
    id: str
    disk_format: str
    container_format: str = "bare"
    # Local path of the image in the host's image cache (None for boot-from-volume).
    path: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    # Direct kernel boot: paths of the kernel and ramdisk images in the cache.
    kernel_path: str | None = None
    ramdisk_path: str | None = None


@dataclass(frozen=True)
class Vif:
    """One port of the guest, as the network driver plugged it on this host."""

    port_id: str
    mac: str
    network_id: str
    fixed_ips: tuple[str, ...] = ()
    mtu: int = 1500
    # The host-side device the tap must join (a bridge name), set by the network driver,
    # and the network namespace that bridge lives in (None: the host's own).
    bridge: str | None = None
    netns: str | None = None
    # An Open vSwitch bridge's database (binding:vif_type `ovs`): the tap is added to
    # `bridge` as an OVS port there rather than enslaved to a Linux bridge.
    ovsdb: str | None = None
    # That switch's datapath (`binding:vif_details` `datapath_type`): `netdev`, the
    # userspace one, cannot tunnel frames whose checksum the guest left to the host.
    datapath_type: str | None = None


# Encryption providers of Block Storage's encryption types (Cinder's short names, and
# the os-brick encryptor classes older volume types name), as the provider they mean.
ENCRYPTION_PROVIDERS = {
    "luks": "luks",
    "LuksEncryptor": "luks",
    "nova.volume.encryptors.luks.LuksEncryptor": "luks",
    "os_brick.encryptors.luks.LuksEncryptor": "luks",
    "luks2": "luks2",
    "Luks2Encryptor": "luks2",
    "os_brick.encryptors.luks.Luks2Encryptor": "luks2",
    "plain": "plain",
    "CryptsetupEncryptor": "plain",
    "nova.volume.encryptors.cryptsetup.CryptsetupEncryptor": "plain",
    "os_brick.encryptors.cryptsetup.CryptsetupEncryptor": "plain",
}


@dataclass(frozen=True)
class VolumeEncryption:
    """How an encrypted volume's data is opened (a front-end encryption type): its
    provider (`luks`, `luks2` or `plain`) and the passphrase, the hex of its key in the
    Key Manager (as Nova and os-brick make it: binascii.hexlify(key)). The passphrase is
    never shown (repr, logs)."""

    provider: str
    passphrase: str = field(repr=False)
    cipher: str | None = None
    key_size: int | None = None


def encryption_provider(name: str | None) -> str:
    """The provider an encryption type names (`luks`, `luks2`, `plain`); ValueError for
    one unknown."""
    provider = ENCRYPTION_PROVIDERS.get(str(name or "").strip())
    if provider is None:
        raise ValueError(f"unknown volume encryption provider {name!r}")
    return provider


@dataclass(frozen=True)
class BlockDevice:
    """An attached volume: how the guest reaches it (connection_info from Block Storage),
    and for an encrypted volume (connection_info data `encrypted`) how to open it."""

    volume_id: str
    device_name: str
    connection_info: dict[str, Any]
    boot_index: int | None = None
    encryption: VolumeEncryption | None = None
    # The mapping's disk_bus and device_type (None: the driver's default, a virtio disk);
    # device_type lun passes the guest's SCSI commands through to the volume's LUN.
    disk_bus: str | None = None
    device_type: str | None = None

    @property
    def encrypted(self) -> bool:
        return is_encrypted(self.connection_info)


def initiator_name(host: str) -> str:
    """The iSCSI initiator name of a compute host: QEMU's own initiator's prefix (libiscsi's
    iqn.2008-11.org.linux-kvm) and the host's name, in the characters an IQN may have."""
    return "iqn.2008-11.org.linux-kvm:" + (re.sub(r"[^a-z0-9.-]+", "-", host.lower()) or "host")


def is_encrypted(connection_info: dict[str, Any] | None) -> bool:
    """Whether Block Storage says the volume holds encrypted data (`data.encrypted`)."""
    return bool(((connection_info or {}).get("data") or {}).get("encrypted"))


def require_encryption(device: BlockDevice) -> VolumeEncryption | None:
    """The encryption of an encrypted volume (None for a plain one); DriverError when an
    encrypted volume came without it: it is never attached as if it were plain."""
    if device.encrypted and device.encryption is None:
        raise DriverError(
            f"volume {device.volume_id} is encrypted but no key was given to open it: "
            "it is not attached as if it were plain"
        )
    return device.encryption if device.encrypted else None


@dataclass(frozen=True)
class VirtualTPM:
    """The emulated TPM a guest gets (Nova's vTPM): version 1.2 or 2.0, model tpm-tis
    or tpm-crb, the secret policy (`user`: the host keeps the passphrase in memory only;
    `host`: on its disk too, so the guest starts again after a host restart), the Key
    Manager secret and its passphrase, which encrypts the TPM's state on the host (never
    shown: repr, logs)."""

    version: str
    model: str
    security: str
    secret_uuid: str
    passphrase: str = field(repr=False)


@dataclass(frozen=True)
class GuestSpec:
    uuid: str
    name: str
    hostname: str
    flavor: FlavorSpec
    image: ImageSpec | None
    vifs: tuple[Vif, ...] = ()
    block_devices: tuple[BlockDevice, ...] = ()
    # Files of the config drive (path -> bytes), or None when no drive is wanted.
    config_drive: dict[str, bytes] | None = None
    admin_password: str | None = None
    vtpm: VirtualTPM | None = None


@dataclass(frozen=True)
class DeviceAddress:
    """Where the guest finds one of its NICs (by MAC) or volumes (by volume id): the bus
    and the address on it (Nova's DeviceBus), which device role tags are reported with."""

    kind: str  # "nic" or "disk"
    id: str  # a NIC's MAC address, a disk's volume id
    bus: str  # "pci", "scsi", "ide" or "usb"
    address: str  # on PCI as Linux names it: "0000:00:0b.0"


def pci_address(slot: int) -> str:
    """The address of function 0 of `slot` on the guest's PCI bus 0 (domain:bus:slot.fn)."""
    return f"0000:00:{slot:02x}.0"


@dataclass(frozen=True)
class GuestInfo:
    state: PowerState
    max_mem_kb: int
    mem_kb: int
    num_cpu: int
    cpu_time_ns: int = 0


@dataclass(frozen=True)
class HostResources:
    """What the host has, reported to the scheduler (before allocation ratios)."""

    hypervisor_hostname: str
    hypervisor_type: str
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    local_gb: int
    cpu_arch: str = "x86_64"
    cpu_info: dict[str, Any] = field(default_factory=dict)


class DriverError(Exception):
    """The hypervisor could not do what was asked; the message says why."""


class GuestNotFound(DriverError):
    pass


class ConsoleTypeUnavailable(DriverError):
    """The guest has no console of that kind (Nova's ConsoleTypeUnavailable: 400)."""


def volume_location(info: dict[str, Any]) -> tuple[str, str] | None:
    """Where a volume's bytes are, from its connection info: (file path or NBD URI,
    image format), or None for a kind of connection read only by a hypervisor."""
    kind, data = info.get("driver_volume_type"), info.get("data") or {}
    if kind in ("file", "local") and (data.get("path") or data.get("device_path")):
        return data.get("path") or data["device_path"], data.get("format") or "raw"
    if kind == "nbd":
        uri = data.get("uri")
        if not uri and data.get("host"):
            uri = f"nbd://{data['host']}:{data.get('port', 10809)}/{data.get('export', '')}"
        return (uri, "raw") if uri else None
    return None


async def copy_volume_data(src: tuple[str, str], dst: tuple[str, str]) -> None:
    """Every block of one volume written into another (each a volume_location), with
    qemu-img, off the event loop: a swap where no guest runs to mirror it."""
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "convert", "-U", "-n", "-f", src[1], "-O", dst[1], src[0], dst[0],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise DriverError(f"qemu-img convert failed: {err.decode(errors='replace').strip()}")


# The capability trait of a host whose driver rescues volume-backed guests (2.87).
RESCUE_BFV_TRAIT = "COMPUTE_RESCUE_BFV"
# The server's system metadata key keeping the machine type its guest was first spawned
# with (Nova's, since Wallaby; `nova-manage libvirt get_machine_type` reads it): every
# later spawn, on any host, gives it that one, not that host's default.
MACHINE_TYPE_KEY = "image_hw_machine_type"
# Nova's stable device rescue: the rescue image's `hw_rescue_bus` / `hw_rescue_device`.
RESCUE_BUSES = ("virtio", "scsi", "usb", "ide")
RESCUE_DEVICES = ("disk", "cdrom")


def stable_rescue_device(properties: dict[str, Any]) -> tuple[str, str] | None:
    """(bus, device) of a stable device rescue when the rescue image names either
    property, else None (the rescue disk goes first). A disk defaults to virtio, a CD-ROM
    to IDE (no CD-ROM is a virtio device). ValueError for what cannot be attached."""
    bus, device = properties.get("hw_rescue_bus"), properties.get("hw_rescue_device")
    if bus is None and device is None:
        return None
    device = device or "disk"
    bus = bus or ("ide" if device == "cdrom" else "virtio")
    if bus not in RESCUE_BUSES:
        raise ValueError(f"hw_rescue_bus {bus!r} is not one of {', '.join(RESCUE_BUSES)}")
    if device not in RESCUE_DEVICES:
        raise ValueError(f"hw_rescue_device {device!r} is not one of {', '.join(RESCUE_DEVICES)}")
    if bus == "virtio" and device == "cdrom":
        raise ValueError("hw_rescue_device cdrom cannot be on the virtio bus")
    return bus, device


class ComputeDriver(abc.ABC):
    """One hypervisor host. Every method is a coroutine: drivers do blocking work in threads."""

    hypervisor_type: str = "unknown"
    # Whether a volume-backed guest can be rescued (its root volume attached after the
    # rescue disk); the host reports it as Nova's COMPUTE_RESCUE_BFV trait.
    supports_bfv_rescue: bool = False
    # Whether guests can have an emulated TPM (GuestSpec.vtpm); the host then reports
    # Nova's COMPUTE_SECURITY_TPM_* traits.
    supports_vtpm: bool = False
    # TCP relays to the guests' consoles for proxies on other hosts (console_relay.py),
    # on the host's console address; each driver closes a guest's with the guest.
    console_relays: ConsoleRelays

    async def init_host(self, host: str) -> None:
        """Called once when the compute agent starts (reconnect to running guests here)."""
        return None

    def volume_connector(self, host: str) -> dict[str, Any]:
        """What Block Storage is told of this host when it connects a volume (Nova's
        get_volume_connector, os-brick's connector properties): its name and the iSCSI
        initiator name its guests log in to iSCSI targets with."""
        return {"host": host, "initiator": initiator_name(host)}

    async def cleanup_host(self) -> None:
        """Called when the agent stops; guests keep running."""
        return None

    @abc.abstractmethod
    async def list_guests(self) -> list[str]:
        """UUIDs of every guest this host runs (running or not)."""

    @abc.abstractmethod
    async def spawn(
        self, guest: GuestSpec, network_ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Make the guest and start it. `network_ready`, when given, is awaited before
        the guest runs (its ports wired, as Nova's libvirt driver waits for
        network-vif-plugged with the domain paused): the driver prepares disks and starts
        the machine meanwhile; whatever it raises fails the spawn, nothing left behind."""

    @abc.abstractmethod
    async def destroy(self, uuid: str) -> None:
        """Stop the guest and remove everything it had on the host. Idempotent."""

    @abc.abstractmethod
    async def get_info(self, uuid: str) -> GuestInfo: ...

    @abc.abstractmethod
    async def reboot(self, uuid: str, hard: bool) -> None: ...

    @abc.abstractmethod
    async def power_off(self, uuid: str, timeout: float = 60) -> None: ...

    @abc.abstractmethod
    async def power_on(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def pause(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def unpause(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def suspend(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def resume(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def get_console_output(self, uuid: str) -> str: ...

    @abc.abstractmethod
    async def snapshot(self, uuid: str, target_path: str) -> str:
        """Write the guest's root disk as an image file; returns its disk format."""

    @abc.abstractmethod
    async def attach_volume(self, uuid: str, device: BlockDevice) -> None: ...

    @abc.abstractmethod
    async def detach_volume(self, uuid: str, volume_id: str) -> None: ...

    async def extend_volume(self, uuid: str, volume_id: str) -> None:
        """An attached volume grew (Block Storage's volume-extended event): let the guest
        see its new size."""
        raise DriverError(f"{type(self).__name__} cannot resize attached volumes")

    async def swap_volume(
        self, uuid: str, old_volume_id: str, new: BlockDevice, new_size_gb: int = 0
    ) -> None:
        """Nova's swap volume: copy the attached volume's data into `new` (connected to
        this host, at least as large) while the guest runs, and move the guest's device
        onto it; the guest knows the volume as `new.volume_id` from then on. A non-zero
        `new_size_gb` (Nova's resize_to: the new volume is larger) grows the guest's
        device to the new volume's size. Raises only while the guest still reads the
        old volume."""
        raise DriverError(f"{type(self).__name__} cannot swap a guest's volumes")

    async def update_volume_connection(
        self, uuid: str, device: BlockDevice, previous_volume_id: str | None = None
    ) -> None:
        """The attached volume is reached by this connection info from now on (Block
        Storage renamed its data under the guest, which keeps it open): what a start of
        the guest opens; known until now as `previous_volume_id` when that is given.
        Nothing to do for a driver that keeps no record of it."""
        return None

    async def volume_snapshot_create(
        self, uuid: str, volume_id: str, create_info: dict[str, Any]
    ) -> None:
        """An assisted snapshot: the attached volume's file gets a qcow2 overlay
        (`new_file`) the guest writes to from now on (Nova's libvirt driver, for volumes
        that are files it opens)."""
        raise DriverError(
            f"{type(self).__name__} does not snapshot attached volumes for Block Storage: "
            "its volumes are the volume service's exports, which that service snapshots"
        )

    async def volume_snapshot_delete(
        self, uuid: str, volume_id: str, snapshot_id: str, delete_info: dict[str, Any]
    ) -> None:
        """Merge an assisted snapshot's overlay away again."""
        raise DriverError(f"{type(self).__name__} does not delete assisted volume snapshots")

    @abc.abstractmethod
    async def get_available_resource(self) -> HostResources: ...

    async def resize(self, uuid: str, flavor: FlavorSpec, vtpm: VirtualTPM | None = None) -> None:
        """Give a stopped guest the flavor's vCPUs, memory and (growing only) root disk,
        and `vtpm`, the TPM it has with that flavor (None: none), keeping what
        revert_resize needs to undo it until confirm_resize."""
        raise DriverError(f"{type(self).__name__} cannot resize guests")

    async def confirm_resize(self, uuid: str) -> None:
        """Forget what a resize kept for reverting."""
        return None

    async def revert_resize(self, uuid: str) -> None:
        """Put a stopped guest back as it was before the last resize."""
        raise DriverError(f"{type(self).__name__} cannot resize guests")

    async def attach_interface(self, uuid: str, vif: Vif) -> None:
        """Plug one more port into the guest (hot-plug when it runs)."""
        raise DriverError(f"{type(self).__name__} cannot attach interfaces")

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        raise DriverError(f"{type(self).__name__} cannot detach interfaces")

    async def set_admin_password(self, uuid: str, password: str) -> None:
        """Change the guest's administrator password (needs an agent in the guest)."""
        raise NotImplementedError(f"{type(self).__name__} cannot set a guest's password")

    async def get_vnc_console(self, uuid: str) -> dict[str, Any]:
        raise DriverError("this driver has no graphical console")

    async def get_spice_console(self, uuid: str) -> dict[str, Any]:
        """Where the guest's SPICE server is: host and port for a SPICE client (the
        spice-direct console), tls_port, and internal_access_path (a unix socket on the
        guest's host for the spice-html5 proxy, or None: host:port)."""
        raise ConsoleTypeUnavailable("Unavailable console type spice.")

    async def get_serial_console(self, uuid: str) -> dict[str, Any]:
        """Where the guest's interactive serial port is: host, port, internal_access_path
        (a unix socket path on the guest's host, or None for host:port)."""
        raise ConsoleTypeUnavailable("Unavailable console type serial.")

    async def relay_console(self, uuid: str, kind: str, ttl: float) -> dict[str, Any]:
        """The guest's `kind` console (vnc, spice, serial) for a proxy on another host:
        a TCP port on this host's console address relayed to it, listening `ttl` seconds
        (the console token's life)."""
        console = await getattr(self, f"get_{kind}_console")(uuid)
        port = await self.console_relays.open(uuid, kind, console, ttl)
        address = self.console_relays.address
        return {**console, "host": address, "port": port, "internal_access_path": None}

    # -- emulated TPM --------------------------------------------------------------------

    async def vtpm_passphrase(self, uuid: str) -> str | None:
        """The passphrase of the guest's TPM state as this host keeps it (None: the guest
        has no TPM or the host no longer holds it, e.g. a `user` one after a restart)."""
        return None

    async def vtpm_passphrase_missing(self, uuid: str) -> bool:
        """Whether the guest has a TPM whose passphrase this host no longer holds (what
        its next start needs given again: keep_vtpm_passphrase)."""
        return False

    async def keep_vtpm_passphrase(self, uuid: str, passphrase: str) -> None:
        """The passphrase of the guest's TPM, read again from the Key Manager: what the
        next start of the guest opens its TPM state with."""
        return None

    # -- device role tagging -----------------------------------------------------------

    def device_layout(self, guest: GuestSpec) -> tuple[DeviceAddress, ...]:
        """Where spawn will put the guest's volumes and NICs: the config drive, written
        before the guest exists, tells it (spawn keeps to this layout). A driver that
        cannot say reports nothing, and tagged devices are then left out of the metadata."""
        return ()

    async def get_device_addresses(self, uuid: str) -> tuple[DeviceAddress, ...]:
        """Where the guest's volumes and NICs are now (after hot-plugs and unplugs)."""
        return ()

    async def guest_machine_type(self, uuid: str) -> str | None:
        """The machine type the guest was given (the image's hw_machine_type, else this
        host's default): the manager records it on the server after its first spawn so
        every later one, on any host, keeps it (Nova's image_hw_machine_type). None: this
        driver's guests have no machine type."""
        return None

    # -- rescue ----------------------------------------------------------------------

    async def rescue(self, uuid: str, rescue: GuestSpec) -> None:
        """Boot `rescue.image` (its admin password, its config drive) with the guest's
        own root disk attached second, until unrescue."""
        raise DriverError(f"{type(self).__name__} cannot rescue guests")

    async def unrescue(self, uuid: str) -> None:
        raise DriverError(f"{type(self).__name__} cannot rescue guests")

    # -- cold migration (the source exports, the destination copies) -----------------

    async def migrate_disk_and_power_off(self, uuid: str) -> dict[str, Any]:
        """On the source: stop the guest and export its local disks; what the
        destination's finish_migration needs to copy them (JSON-safe)."""
        raise DriverError(f"{type(self).__name__} cannot migrate guests")

    async def end_disk_export(self, uuid: str) -> None:
        """On the source: the destination is done with the export (or failed)."""
        return None

    async def finish_migration(
        self, guest: GuestSpec, disk_info: dict[str, Any], power_on: bool
    ) -> None:
        """On the destination: the guest from the source's disks, with guest.flavor."""
        raise DriverError(f"{type(self).__name__} cannot migrate guests")

    # -- live migration ----------------------------------------------------------------

    async def live_migration_source(self, uuid: str) -> dict[str, Any]:
        """On the source, before the destination prepares: what the destination's
        pre_live_migration needs to know of the guest as it runs here (JSON-safe)."""
        return {}

    async def pre_live_migration(
        self, guest: GuestSpec, block_migration: bool, source: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """On the destination: be ready to receive the guest (`source`: what the source's
        live_migration_source said); what the source needs."""
        raise DriverError(f"{type(self).__name__} cannot live-migrate guests")

    async def live_migrate(
        self,
        uuid: str,
        migrate_data: dict[str, Any],
        block_migration: bool,
        progress: Callable[[dict[str, int]], Awaitable[None]],
    ) -> dict[str, Any]:
        """On the source: move the running guest; returns what the destination's
        post_live_migration_at_destination needs. `progress` gets the migration's
        memory_/disk_ total/processed/remaining figures."""
        raise DriverError(f"{type(self).__name__} cannot live-migrate guests")

    async def post_live_migration_at_destination(self, uuid: str, result: dict[str, Any]) -> None:
        return None

    async def post_live_migration_at_source(self, uuid: str) -> None:
        """The guest runs elsewhere now: forget it here (without touching the other host)."""
        await self.destroy(uuid)

    async def live_migration_force_complete(self, uuid: str) -> None:
        raise DriverError(f"{type(self).__name__} cannot force a live migration to complete")

    async def live_migration_abort(self, uuid: str) -> None:
        raise DriverError(f"{type(self).__name__} cannot abort a live migration")
