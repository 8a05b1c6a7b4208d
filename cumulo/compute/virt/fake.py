"""The fake driver: a supported backend that keeps guests in memory.

It behaves like a hypervisor where the control plane can see it (power states,
console output, attached volumes, capacity), boots in `spawn_delay` seconds, and
can be told to fail, so the whole control plane (and scale simulations with
thousands of hosts in one process) runs without QEMU.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cumulo.compute.states import PowerState
from cumulo.compute.virt.console_relay import ConsoleRelays
from cumulo.compute.virt.driver import (
    BlockDevice,
    ComputeDriver,
    DeviceAddress,
    DriverError,
    FlavorSpec,
    GuestInfo,
    GuestNotFound,
    GuestSpec,
    HostResources,
    Vif,
    VirtualTPM,
    copy_volume_data,
    pci_address,
    require_encryption,
    stable_rescue_device,
    volume_location,
)
from cumulo.compute.virt.fake_console import FakeScreen, FakeSerialPort, FakeSpice

# The fake guest's PCI bus: its volumes and NICs from slot 4 on (after the host bridge,
# the ISA bridge, the VGA card and the root disk), each keeping its slot until unplugged.
_FIRST_SLOT = 0x04
_LAST_SLOT = 0x1F


@dataclass
class FakeGuest:
    spec: GuestSpec
    state: PowerState = PowerState.RUNNING
    started_at: float = field(default_factory=time.monotonic)
    console: list[str] = field(default_factory=list)
    volumes: dict[str, BlockDevice] = field(default_factory=dict)
    # Assisted snapshots' overlays per volume (create_info as Block Storage gave it).
    volume_overlays: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    before_resize: GuestSpec | None = None
    admin_password: str | None = None
    # The rescue guest booted in its place (its own disk attached second), if any.
    rescue: GuestSpec | None = None
    # PCI slots of its volumes ("disk", volume id) and NICs ("nic", MAC).
    slots: dict[tuple[str, str], int] = field(default_factory=dict)
    # The machine type it was made with (see FakeDriver.machine_type).
    machine_type: str | None = None
    # Its emulated TPM's state: what it was sealed with (a digest of the passphrase the
    # state is encrypted with), and the passphrase this host holds for it (None: not
    # held, a `user` policy TPM after a restart); the state is opened at every start.
    tpm_seal: str | None = None
    tpm_passphrase: str | None = None

    def open_tpm(self) -> None:
        """A start opens the TPM state with the passphrase held: a wrong or missing one
        fails the start, as swtpm cannot decrypt the state."""
        tpm = self.spec.vtpm
        if tpm is None:
            return
        if self.tpm_passphrase is None:
            raise DriverError(f"the vTPM secret of guest {self.spec.uuid} is not on this host")
        if self.tpm_seal is None:
            self.tpm_seal = _seal(self.tpm_passphrase)
            self.log(f"tpm: TPM {tpm.version} ({tpm.model}) state created")
        elif self.tpm_seal != _seal(self.tpm_passphrase):
            raise DriverError(f"the vTPM state of guest {self.spec.uuid} cannot be decrypted")
        else:
            self.log(f"tpm: TPM {tpm.version} ({tpm.model}) state opened")

    def log(self, line: str) -> None:
        self.console.append(line)

    def plug(self, kind: str, key: str) -> int:
        """A hot-plugged device takes the lowest free slot."""
        used = set(self.slots.values())
        slot = next((n for n in range(_FIRST_SLOT, _LAST_SLOT + 1) if n not in used), None)
        if slot is None:
            raise DriverError(f"guest {self.spec.uuid} has no free PCI slot left")
        self.slots[(kind, key)] = slot
        return slot


def _boot_layout(spec: GuestSpec) -> dict[tuple[str, str], int]:
    """The slots a guest boots with: its volumes, then its NICs, in their order."""
    devices = [("disk", d.volume_id) for d in spec.block_devices]
    devices += [("nic", v.mac) for v in spec.vifs]
    if _FIRST_SLOT + len(devices) - 1 > _LAST_SLOT:
        raise DriverError(f"a guest has room for {_LAST_SLOT - _FIRST_SLOT + 1} volumes and NICs")
    return {device: _FIRST_SLOT + n for n, device in enumerate(devices)}


def _chosen_machine_type(spec: GuestSpec, default: str | None) -> str | None:
    """The image's hw_machine_type, else the host's default (as the QEMU driver picks)."""
    named = spec.image.properties.get("hw_machine_type") if spec.image else None
    return str(named) if named else default


def _addresses(slots: dict[tuple[str, str], int]) -> tuple[DeviceAddress, ...]:
    return tuple(
        DeviceAddress(kind, key, "pci", pci_address(slot))
        for (kind, key), slot in sorted(slots.items(), key=lambda item: item[1])
    )


class FakeDriver(ComputeDriver):
    hypervisor_type = "fake"
    supports_bfv_rescue = True
    # A fake emulated TPM: its state sealed with the secret's passphrase (FakeGuest).
    supports_vtpm = True

    def __init__(
        self,
        hostname: str = "fake-host",
        *,
        vcpus: int = 16,
        memory_mb: int = 65536,
        local_gb: int = 1024,
        spawn_delay: float = 0.0,
        fail_spawn: bool = False,
        live_migration_delay: float = 0.0,
        swap_delay: float = 0.0,
        machine_type: str | None = None,
        console_listen: str = "127.0.0.1",
    ) -> None:
        self.hostname = hostname
        # The machine type of guests whose image names none (the QEMU driver's [compute]
        # qemu_machine_type); None: a guest only has the one its image names.
        self.machine_type = machine_type
        self.vcpus, self.memory_mb, self.local_gb = vcpus, memory_mb, local_gb
        self.spawn_delay = spawn_delay
        self.fail_spawn = fail_spawn
        self.guests: dict[str, FakeGuest] = {}
        # How long a live migration takes unless forced to complete (or aborted).
        self.live_migration_delay = live_migration_delay
        # How long a swap volume's copy takes (the guest reads the old volume meanwhile).
        self.swap_delay = swap_delay
        self._incoming: dict[str, GuestSpec] = {}
        self._forced: set[str] = set()
        self._aborted: set[str] = set()
        self.spice = FakeSpice()
        # The guests' screens and serial terminals, opened on their first console
        # request: thousands of simulated hosts in one process hold no idle sockets.
        self.screens: dict[str, FakeScreen] = {}
        self.serial_ports: dict[str, FakeSerialPort] = {}
        self.console_relays = ConsoleRelays(console_listen)

    def _guest(self, uuid: str) -> FakeGuest:
        guest = self.guests.get(uuid)
        if guest is None:
            raise GuestNotFound(f"no guest {uuid} on {self.hostname}")
        return guest

    def _require(self, guest: FakeGuest, *states: PowerState) -> None:
        if guest.state not in states:
            raise DriverError(f"guest {guest.spec.uuid} is {guest.state.name.lower()}")

    async def list_guests(self) -> list[str]:
        return list(self.guests)

    async def spawn(
        self, guest: GuestSpec, network_ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if guest.uuid in self.guests:
            raise DriverError(f"guest {guest.uuid} already exists on {self.hostname}")
        if network_ready is not None:  # the delay (the guest made) goes on meanwhile
            await asyncio.gather(asyncio.sleep(self.spawn_delay), network_ready())
        elif self.spawn_delay:
            await asyncio.sleep(self.spawn_delay)
        if self.fail_spawn:
            raise DriverError(f"fake host {self.hostname} is set to fail every spawn")
        for dev in guest.block_devices:
            require_encryption(dev)
        fake = FakeGuest(
            guest,
            slots=_boot_layout(guest),
            machine_type=_chosen_machine_type(guest, self.machine_type),
            tpm_passphrase=guest.vtpm.passphrase if guest.vtpm else None,
        )
        fake.log(f"fake guest {guest.name} ({guest.uuid}) booting on {self.hostname}")
        fake.open_tpm()
        for vif in guest.vifs:
            fake.log(f"eth: {vif.mac} on network {vif.network_id} ips {','.join(vif.fixed_ips)}")
        for dev in guest.block_devices:
            fake.volumes[dev.volume_id] = dev
            if dev.encryption is not None:
                fake.log(f"virtio disk {dev.device_name} opened with {dev.encryption.provider}")
        fake.log(f"{guest.hostname} login:")
        self.guests[guest.uuid] = fake

    async def destroy(self, uuid: str) -> None:
        self.guests.pop(uuid, None)
        self._incoming.pop(uuid, None)
        self.console_relays.close(uuid)
        if (serial := self.serial_ports.pop(uuid, None)) is not None:
            await serial.close()
        if (screen := self.screens.pop(uuid, None)) is not None:
            await screen.close()

    async def get_info(self, uuid: str) -> GuestInfo:
        guest = self._guest(uuid)
        mem_kb = guest.spec.flavor.memory_mb * 1024
        running = guest.state == PowerState.RUNNING
        cpu_ns = int((time.monotonic() - guest.started_at) * 1e9) if running else 0
        return GuestInfo(guest.state, mem_kb, mem_kb, guest.spec.flavor.vcpus, cpu_ns)

    async def reboot(self, uuid: str, hard: bool) -> None:
        guest = self._guest(uuid)
        if not hard:
            self._require(guest, PowerState.RUNNING)
        if guest.state != PowerState.RUNNING:
            guest.open_tpm()
        guest.state = PowerState.RUNNING
        guest.started_at = time.monotonic()
        guest.log(f"{'hard' if hard else 'soft'} reboot")

    async def power_off(self, uuid: str, timeout: float = 60) -> None:
        guest = self._guest(uuid)
        guest.state = PowerState.SHUTDOWN
        guest.log("power off")

    async def power_on(self, uuid: str) -> None:
        guest = self._guest(uuid)
        guest.open_tpm()
        guest.state = PowerState.RUNNING
        guest.started_at = time.monotonic()
        guest.log("power on")

    async def pause(self, uuid: str) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.RUNNING)
        guest.state = PowerState.PAUSED

    async def unpause(self, uuid: str) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.PAUSED)
        guest.state = PowerState.RUNNING

    async def suspend(self, uuid: str) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.RUNNING, PowerState.PAUSED)
        guest.state = PowerState.SUSPENDED

    async def resume(self, uuid: str) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.SUSPENDED)
        guest.open_tpm()
        guest.state = PowerState.RUNNING

    async def get_console_output(self, uuid: str) -> str:
        return "\n".join(self._guest(uuid).console) + "\n"

    async def snapshot(self, uuid: str, target_path: str) -> str:
        guest = self._guest(uuid)
        # A fake root disk: the source image's bytes when there are any, else a marker.
        source = guest.spec.image.path if guest.spec.image else None
        data = b"fake snapshot of " + uuid.encode() + b"\n"
        if source:
            data = await asyncio.to_thread(_read, source)
        await asyncio.to_thread(_write, target_path, data)
        return guest.spec.image.disk_format if guest.spec.image and source else "raw"

    async def attach_volume(self, uuid: str, device: BlockDevice) -> None:
        guest = self._guest(uuid)
        if device.volume_id in guest.volumes:
            raise DriverError(f"volume {device.volume_id} is already attached to {uuid}")
        encryption = require_encryption(device)
        slot = guest.plug("disk", device.volume_id)
        guest.volumes[device.volume_id] = device
        guest.log(f"virtio disk {device.device_name} attached at {pci_address(slot)}")
        if encryption is not None:
            guest.log(f"virtio disk {device.device_name} opened with {encryption.provider}")

    async def vtpm_passphrase(self, uuid: str) -> str | None:
        guest = self._guest(uuid)
        return guest.tpm_passphrase if guest.spec.vtpm is not None else None

    async def vtpm_passphrase_missing(self, uuid: str) -> bool:
        guest = self._guest(uuid)
        return guest.spec.vtpm is not None and guest.tpm_passphrase is None

    async def keep_vtpm_passphrase(self, uuid: str, passphrase: str) -> None:
        self._guest(uuid).tpm_passphrase = passphrase

    def forget_vtpm_passphrases(self) -> None:
        """What a restart of a real host does to `user` policy TPMs: their passphrases,
        held in memory only, are gone (`host` ones are kept on its disk)."""
        for guest in self.guests.values():
            if guest.spec.vtpm is not None and guest.spec.vtpm.security != "host":
                guest.tpm_passphrase = None

    def volume_encryptions(self, uuid: str) -> dict[str, str]:
        """The provider each encrypted volume of the guest was opened with, by volume id
        (what the manager handed over with the volume's key)."""
        return {
            volume_id: device.encryption.provider
            for volume_id, device in self._guest(uuid).volumes.items()
            if device.encryption is not None
        }

    async def detach_volume(self, uuid: str, volume_id: str) -> None:
        guest = self._guest(uuid)
        if guest.volumes.pop(volume_id, None) is None:
            raise DriverError(f"volume {volume_id} is not attached to {uuid}")
        guest.slots.pop(("disk", volume_id), None)
        guest.log("virtio disk detached")

    async def swap_volume(
        self, uuid: str, old_volume_id: str, new: BlockDevice, new_size_gb: int = 0
    ) -> None:
        """The fake guest writes nothing: the old volume's bytes are copied into the new
        one as they are (when both can be opened here, in `swap_delay` seconds at least),
        and its slot keeps the device; a larger volume is a capacity change the guest
        reports on its console."""
        guest = self._guest(uuid)
        old = guest.volumes.get(old_volume_id)
        if old is None:
            raise DriverError(f"volume {old_volume_id} is not attached to {uuid}")
        require_encryption(new)
        src, dst = volume_location(old.connection_info), volume_location(new.connection_info)
        copy = copy_volume_data(src, dst) if src and dst else asyncio.sleep(0)
        await asyncio.gather(asyncio.sleep(self.swap_delay), copy)
        if guest.volumes.get(old_volume_id) is not old:
            raise DriverError(f"volume {old_volume_id} of {uuid} changed during the copy")
        del guest.volumes[old_volume_id]
        guest.volumes[new.volume_id] = new
        slot = guest.slots.pop(("disk", old_volume_id), None)
        if slot is not None:
            guest.slots[("disk", new.volume_id)] = slot
        guest.log(f"virtio disk {new.device_name} now reads volume {new.volume_id}")
        if new_size_gb:
            guest.log(f"virtio disk {new.device_name} capacity change to {new_size_gb} GiB")

    async def update_volume_connection(
        self, uuid: str, device: BlockDevice, previous_volume_id: str | None = None
    ) -> None:
        guest = self._guest(uuid)
        known = previous_volume_id or device.volume_id
        if known not in guest.volumes:
            return
        # The volume's data is opened as before (the same key): only where it is changed.
        if device.encryption is None:
            device = replace(device, encryption=guest.volumes[known].encryption)
        del guest.volumes[known]
        guest.volumes[device.volume_id] = device
        slot = guest.slots.pop(("disk", known), None)
        if slot is not None:
            guest.slots[("disk", device.volume_id)] = slot

    async def extend_volume(self, uuid: str, volume_id: str) -> None:
        guest = self._guest(uuid)
        if volume_id not in guest.volumes:
            raise DriverError(f"volume {volume_id} is not attached to {uuid}")
        guest.log("virtio disk capacity change")

    async def volume_snapshot_create(
        self, uuid: str, volume_id: str, create_info: dict[str, Any]
    ) -> None:
        guest = self._guest(uuid)
        if volume_id not in guest.volumes:
            raise DriverError(f"volume {volume_id} is not attached to {uuid}")
        chain = guest.volume_overlays.setdefault(volume_id, [])
        chain.append({"snapshot_id": create_info["snapshot_id"], **create_info})
        guest.log(f"volume {volume_id}: now writing to {create_info['new_file']}")

    async def volume_snapshot_delete(
        self, uuid: str, volume_id: str, snapshot_id: str, delete_info: dict[str, Any]
    ) -> None:
        guest = self._guest(uuid)
        chain = guest.volume_overlays.get(volume_id, [])
        # Nova's libvirt driver looks the snapshot up by the file it is in; the id the API
        # got is the create_info `id` the caller chose (Tempest sends none: "None").
        kept = [o for o in chain if snapshot_id not in (o["snapshot_id"], str(o.get("id")))]
        if len(kept) == len(chain):
            raise DriverError(f"volume {volume_id} of {uuid} has no snapshot {snapshot_id}")
        guest.volume_overlays[volume_id] = kept
        guest.log(f"volume {volume_id}: snapshot {snapshot_id} merged")

    async def resize(self, uuid: str, flavor: FlavorSpec, vtpm: VirtualTPM | None = None) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.SHUTDOWN)
        if flavor.root_gb < guest.spec.flavor.root_gb:
            raise DriverError("a root disk cannot shrink")
        guest.before_resize = guest.spec
        guest.spec = replace(guest.spec, flavor=flavor, vtpm=vtpm)
        if vtpm is not None:
            guest.tpm_passphrase = vtpm.passphrase
        guest.log(f"resized to {flavor.name}")

    async def confirm_resize(self, uuid: str) -> None:
        self._guest(uuid).before_resize = None

    async def revert_resize(self, uuid: str) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.SHUTDOWN)
        if guest.before_resize is None:
            raise DriverError(f"guest {uuid} has no resize to revert")
        guest.spec, guest.before_resize = guest.before_resize, None
        guest.log(f"resize reverted to {guest.spec.flavor.name}")

    async def attach_interface(self, uuid: str, vif: Vif) -> None:
        guest = self._guest(uuid)
        if any(v.port_id == vif.port_id for v in guest.spec.vifs):
            raise DriverError(f"port {vif.port_id} is already plugged into {uuid}")
        slot = guest.plug("nic", vif.mac)
        guest.spec = replace(guest.spec, vifs=(*guest.spec.vifs, vif))
        guest.log(f"eth: {vif.mac} hot-plugged at {pci_address(slot)} on network {vif.network_id}")

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        guest = self._guest(uuid)
        vifs = tuple(v for v in guest.spec.vifs if v.port_id != port_id)
        if len(vifs) == len(guest.spec.vifs):
            raise DriverError(f"port {port_id} is not plugged into {uuid}")
        for vif in guest.spec.vifs:
            if vif.port_id == port_id:
                guest.slots.pop(("nic", vif.mac), None)
        guest.spec = replace(guest.spec, vifs=vifs)
        guest.log("eth: unplugged")

    async def set_admin_password(self, uuid: str, password: str) -> None:
        guest = self._guest(uuid)
        self._require(guest, PowerState.RUNNING)
        guest.admin_password = password
        guest.log("admin password changed")

    def device_layout(self, guest: GuestSpec) -> tuple[DeviceAddress, ...]:
        return _addresses(_boot_layout(guest))

    async def get_device_addresses(self, uuid: str) -> tuple[DeviceAddress, ...]:
        return _addresses(self._guest(uuid).slots)

    async def guest_machine_type(self, uuid: str) -> str | None:
        return self._guest(uuid).machine_type

    def _console_logger(self, uuid: str) -> Callable[[str], None]:
        """What a guest's text console does with a line typed on it: the console log."""

        def typed(line: str) -> None:
            if (guest := self.guests.get(uuid)) is not None:
                guest.log(line)

        return typed

    async def get_vnc_console(self, uuid: str) -> dict[str, Any]:
        # A real (blank) VNC screen of the guest's own; a guest moved here gets a new one.
        self._guest(uuid)
        screen = self.screens.get(uuid)
        if screen is None:
            screen = FakeScreen(f"cumulo fake guest on {self.hostname}", self._console_logger(uuid))
            self.screens[uuid] = screen
        port = await screen.start()
        return {"host": "127.0.0.1", "port": port, "internal_access_path": None}

    async def get_spice_console(self, uuid: str) -> dict[str, Any]:
        # As the VNC screen: one SPICE server for the host's fake guests, on first use.
        self._guest(uuid)
        port = await self.spice.start()
        return {"host": "127.0.0.1", "port": port, "tls_port": None, "internal_access_path": None}

    async def get_serial_console(self, uuid: str) -> dict[str, Any]:
        # The terminal is this host's: a guest moved here gets a new one (its own port).
        self._guest(uuid)
        serial = self.serial_ports.get(uuid)
        if serial is None:
            serial = self.serial_ports[uuid] = FakeSerialPort(self._console_logger(uuid))
        port = await serial.start()
        return {"host": "127.0.0.1", "port": port, "internal_access_path": None}

    async def cleanup_host(self) -> None:
        self.console_relays.close_all()
        await self.spice.close()
        for listener in (*self.screens.values(), *self.serial_ports.values()):
            await listener.close()
        self.screens.clear()
        self.serial_ports.clear()

    async def rescue(self, uuid: str, rescue: GuestSpec) -> None:
        guest = self._guest(uuid)
        if guest.rescue is not None:
            raise DriverError(f"guest {uuid} is already rescued")
        guest.rescue = rescue
        guest.state = PowerState.RUNNING
        guest.admin_password = rescue.admin_password
        image = rescue.image.id if rescue.image else "none"
        try:
            stable = stable_rescue_device(rescue.image.properties if rescue.image else {})
        except ValueError as exc:
            raise DriverError(str(exc)) from None
        if stable:
            bus, device = stable
            guest.log(f"rescue: booted image {image} as a {device} on {bus}, own disks in place")
        else:
            guest.log(f"rescue: booted image {image}, own disk as the second disk")

    async def unrescue(self, uuid: str) -> None:
        guest = self._guest(uuid)
        if guest.rescue is None:
            raise DriverError(f"guest {uuid} is not rescued")
        guest.rescue = None
        guest.state = PowerState.RUNNING
        guest.log("unrescue: booted its own disk")

    # Moves: the guest's record (state, console, volumes) travels between fake hosts.

    async def migrate_disk_and_power_off(self, uuid: str) -> dict[str, Any]:
        guest = self._guest(uuid)
        guest.state = PowerState.SHUTDOWN
        guest.log("power off for migration")
        tpm = _tpm_kind(guest.spec.vtpm) if guest.spec.vtpm else None
        return {"console": list(guest.console), "tpm_seal": guest.tpm_seal, "tpm": tpm}

    async def finish_migration(
        self, guest: GuestSpec, disk_info: dict[str, Any], power_on: bool
    ) -> None:
        if guest.uuid in self.guests:
            raise DriverError(f"guest {guest.uuid} already exists on {self.hostname}")
        state = PowerState.RUNNING if power_on else PowerState.SHUTDOWN
        moved = FakeGuest(guest, state, console=list(disk_info.get("console") or []))
        moved.volumes = {d.volume_id: d for d in guest.block_devices}
        moved.slots = _boot_layout(guest)
        moved.machine_type = _chosen_machine_type(guest, self.machine_type)
        moved.log(f"migrated to {self.hostname} as {guest.flavor.name}")
        # The TPM state comes along (a TPM of the same version: Nova drops it otherwise).
        before = disk_info.get("tpm_seal")
        if guest.vtpm is not None:
            moved.tpm_passphrase = guest.vtpm.passphrase
            moved.tpm_seal = before if disk_info.get("tpm") == _tpm_kind(guest.vtpm) else None
            if power_on:
                moved.open_tpm()
        self.guests[guest.uuid] = moved

    async def pre_live_migration(
        self, guest: GuestSpec, block_migration: bool, source: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if guest.uuid in self.guests:
            raise DriverError(f"guest {guest.uuid} already exists on {self.hostname}")
        self._incoming[guest.uuid] = guest
        return {"host": self.hostname}

    async def live_migrate(
        self,
        uuid: str,
        migrate_data: dict[str, Any],
        block_migration: bool,
        progress: Callable[[dict[str, int]], Awaitable[None]],
    ) -> dict[str, Any]:
        guest = self._guest(uuid)
        total = guest.spec.flavor.memory_mb * 1024 * 1024
        self._forced.discard(uuid)
        self._aborted.discard(uuid)
        await progress({"memory_total": total, "memory_processed": 0, "memory_remaining": total})
        deadline = time.monotonic() + self.live_migration_delay
        while time.monotonic() < deadline and uuid not in self._forced | self._aborted:
            await asyncio.sleep(0.05)
        if uuid in self._aborted:
            self._aborted.discard(uuid)
            raise DriverError(f"live migration of {uuid} was aborted")
        self._forced.discard(uuid)
        await progress({"memory_processed": total, "memory_remaining": 0})
        guest.log(f"live migration to {migrate_data.get('host')} completed")
        console = list(guest.console)
        return {"state": int(guest.state), "console": console, "tpm_seal": guest.tpm_seal}

    async def post_live_migration_at_destination(self, uuid: str, result: dict[str, Any]) -> None:
        spec = self._incoming.pop(uuid, None)
        if spec is None:
            raise GuestNotFound(f"no incoming guest {uuid} on {self.hostname}")
        moved = FakeGuest(spec, PowerState(result["state"]), console=list(result["console"]))
        moved.volumes = {d.volume_id: d for d in spec.block_devices}
        moved.slots = _boot_layout(spec)
        moved.machine_type = _chosen_machine_type(spec, self.machine_type)
        if spec.vtpm is not None:  # the emulator's state came with the memory
            moved.tpm_passphrase = spec.vtpm.passphrase
            moved.tpm_seal = result.get("tpm_seal")
            moved.open_tpm()
        moved.log(f"running on {self.hostname}")
        self.guests[uuid] = moved

    async def live_migration_force_complete(self, uuid: str) -> None:
        self._guest(uuid)
        self._forced.add(uuid)

    async def live_migration_abort(self, uuid: str) -> None:
        self._guest(uuid)
        self._aborted.add(uuid)

    async def get_available_resource(self) -> HostResources:
        return HostResources(
            hypervisor_hostname=self.hostname,
            hypervisor_type=self.hypervisor_type,
            hypervisor_version=1000,
            vcpus=self.vcpus,
            memory_mb=self.memory_mb,
            local_gb=self.local_gb,
        )


def _seal(passphrase: str) -> str:
    return hashlib.sha256(passphrase.encode()).hexdigest()


def _tpm_kind(tpm: VirtualTPM) -> str:
    return f"{tpm.version}/{tpm.model}"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
