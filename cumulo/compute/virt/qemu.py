"""The QEMU driver: one qemu-system-x86_64 process per guest, managed directly (no libvirt).

Each guest lives in <state>/compute/<host>/instances/<uuid>/: guest.json (how to start
it again), qemu.pid, qmp.sock (power actions, status, hot-plug), console.log (the serial
console), disk (a qcow2 overlay on the host's image cache), disk.eph0, disk.swap,
disk.config (the config drive), nvram.fd (the UEFI variables of a guest whose image has
hw_firmware_type=uefi: it boots with OVMF), memory.state while suspended and secrets.json
(0600: the passphrases of its encrypted volumes, see qemu_secrets). QEMU
daemonizes, so guests outlive the compute agent; a new agent finds them again from these
directories.

Power state is what the process says: no live QEMU is SHUTDOWN (SUSPENDED when its
memory was saved), never RUNNING; otherwise QMP's query-status decides.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cumulo.compute.configdrive import build_config_drive
from cumulo.compute.states import PowerState
from cumulo.compute.virt import qemu_iscsi, qemu_secrets, qemu_tpm
from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.console_relay import ConsoleRelays
from cumulo.compute.virt.driver import (
    BlockDevice,
    ComputeDriver,
    ConsoleTypeUnavailable,
    DeviceAddress,
    DriverError,
    GuestInfo,
    GuestNotFound,
    GuestSpec,
    HostResources,
    Vif,
    VolumeEncryption,
    copy_volume_data,
    initiator_name,
    own_address,
    pci_address,
    require_encryption,
)
from cumulo.compute.virt.qemu_moves import QemuMoves
from cumulo.testing.guest import default_cache_dir

LOG = logging.getLogger(__name__)

GiB = 1024**3
# How long a swapped volume's copy may take to get in sync with the guest's writes.
SWAP_TIMEOUT = 3600.0
# What os-getConsoleOutput serves at most (Nova's MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024
_QMP_STATUS = {
    "running": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "prelaunch": PowerState.PAUSED,
    "inmigrate": PowerState.PAUSED,
    "postmigrate": PowerState.PAUSED,
    "finish-migrate": PowerState.PAUSED,
    "save-vm": PowerState.PAUSED,
    "restore-vm": PowerState.PAUSED,
    "suspended": PowerState.SUSPENDED,
    "shutdown": PowerState.SHUTDOWN,
    "guest-panicked": PowerState.CRASHED,
    "internal-error": PowerState.CRASHED,
    "io-error": PowerState.PAUSED,
    "watchdog": PowerState.PAUSED,
}


class QemuDriver(QemuMoves, ComputeDriver):
    hypervisor_type = "QEMU"
    # A rescue machine is the rescue disk then the guest's drives, volumes last: a
    # volume-backed guest's root volume is attached after the rescue disk.
    supports_bfv_rescue = True

    def __init__(
        self,
        state_dir: Path | str,
        host: str | None = None,
        *,
        accel: str = "auto",
        probe_kernel: Path | str | None = None,
        vnc: bool = True,
        migration_address: str = "",
        machine_type: str = "pc",
        spice_listen: str = "127.0.0.1",
        console_listen: str = "127.0.0.1",
    ) -> None:
        if accel not in ("auto", "kvm", "tcg"):
            raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
        self.state_dir = Path(state_dir)
        self.host = host or socket.gethostname()
        self.accel_setting = accel
        self.accel: str | None = None if accel == "auto" else accel
        self.probe_kernel = Path(probe_kernel) if probe_kernel else None
        self.vnc = vnc
        # Guests whose image names no hw_machine_type get this one (Nova's [libvirt]
        # hw_machine_type); what this host's QEMU has is read at init_host.
        self.machine_type = machine_type
        self.machine_types: frozenset[str] = frozenset()
        self.version = 0
        self._locks: dict[str, asyncio.Lock] = {}
        # The passphrases of `user` policy TPMs, held in memory only (a `host` one is in
        # the guest's secrets.json too): gone with the agent, given again at a start.
        self._tpm_passphrases: dict[str, str] = {}
        self.migration_address = migration_address or own_address()
        # Disk exports of guests migrating away (qemu-nbd processes), by guest.
        self._exports: dict[str, list[asyncio.subprocess.Process]] = {}
        # Live migrations an abort or a force-complete was asked for.
        self._migration_requests: dict[str, str] = {}
        # Incoming live migrations waiting for the source's stream (qemu_moves.py).
        self._incoming: dict[str, asyncio.Task] = {}
        # The spice-direct ports of guests (on spice_listen), opened on first request and
        # listening while the guest is here.
        self._spice_direct = ConsoleRelays(spice_listen)
        self.console_relays = ConsoleRelays(console_listen)
        # iSCSI portals relayed into guests' network namespaces.
        self.relays = qemu_iscsi.PortalRelays()

    # -- host ------------------------------------------------------------------------------

    @property
    def instances_dir(self) -> Path:
        return self.state_dir / "compute" / self.host / "instances"

    async def init_host(self, host: str) -> None:
        self.host = host
        if shutil.which(qp.QEMU) is None:
            raise DriverError(f"{qp.QEMU} is not installed on this host")
        # Guests get an emulated TPM where swtpm is installed (the host reports the traits).
        self.supports_vtpm = qemu_tpm.available()
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        self.version = await qp.qemu_version()
        self.machine_types = await qp.machine_types()
        qp.choose_machine("bios", {}, {}, self.machine_type, self.machine_types)
        await self._choose_accel()
        for uuid in await self.list_guests():
            directory = self._dir(uuid)
            if qp.process_alive(qp.read_pid(directory), uuid):
                await self._relay_iscsi(uuid, self._load(uuid))
                try:
                    async with qp.qmp_session(directory, uuid) as qmp:
                        status = await qmp.execute("query-status")
                    LOG.info("found guest %s running (%s)", uuid, status["status"])
                except DriverError as exc:
                    LOG.warning(
                        "guest %s has a QEMU but its monitor does not answer: %s", uuid, exc
                    )
            else:
                LOG.info("found guest %s with no QEMU process", uuid)

    async def cleanup_host(self) -> None:
        await self.relays.close()
        self._spice_direct.close_all()
        self.console_relays.close_all()

    async def _relay_iscsi(self, uuid: str, record: dict[str, Any]) -> None:
        """The relays of the guest's iSCSI drives listening again (an agent restarted:
        libiscsi reconnects through them)."""
        netns = record["machine"].get("netns")
        for drive in record["volumes"].values():
            if netns and drive.get("relay_port"):
                try:
                    await self.relays.port(netns, _portal(drive["path"]), drive["relay_port"])
                except DriverError as exc:
                    LOG.warning("guest %s: %s", uuid, exc)

    async def _relay(self, netns: str | None, drive: qp.Drive) -> None:
        """An iSCSI drive of a guest in a network namespace reaches its portal through
        a relay there (its port kept in the drive)."""
        if netns and drive.protocol == "iscsi":
            drive.relay_port = await self.relays.port(netns, _portal(drive.path))

    async def _choose_accel(self) -> None:
        """Probe KVM once per host; the verdict is kept beside the guests for the next start."""
        if self.accel is not None:
            return
        verdict = self.state_dir / "compute" / self.host / "accel.json"
        key = {"qemu": self.version, "kernel": os.uname().release, "kvm": qp.kvm_usable()}
        try:
            saved = json.loads(verdict.read_text())
            if saved.get("key") == key:
                self.accel = saved["accel"]
                return
        except (FileNotFoundError, ValueError, KeyError):
            pass
        kernel = self.probe_kernel or _any_probe_kernel()
        self.accel = "kvm" if await qp.probe_kvm(kernel) else "tcg"
        LOG.info("QEMU accelerator on %s: %s", self.host, self.accel)
        verdict.write_text(json.dumps({"key": key, "accel": self.accel}))

    async def get_available_resource(self) -> HostResources:
        usage = shutil.disk_usage(self.state_dir if self.state_dir.exists() else "/")
        vcpus = os.cpu_count() or 1
        return HostResources(
            hypervisor_hostname=self.host,
            hypervisor_type=self.hypervisor_type,
            hypervisor_version=self.version,
            vcpus=vcpus,
            memory_mb=_host_memory_mb(),
            local_gb=usage.total // GiB,
            cpu_info={
                "arch": "x86_64",
                "accel": self.accel or "unknown",
                "topology": {"sockets": 1, "cores": vcpus, "threads": 1},
            },
        )

    async def list_guests(self) -> list[str]:
        if not self.instances_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.instances_dir.glob("*/guest.json"))

    # -- guests ----------------------------------------------------------------------------

    def _dir(self, uuid: str) -> Path:
        return self.instances_dir / uuid

    def _lock(self, uuid: str) -> asyncio.Lock:
        return self._locks.setdefault(uuid, asyncio.Lock())

    def _load(self, uuid: str) -> dict[str, Any]:
        try:
            return json.loads((self._dir(uuid) / "guest.json").read_text())
        except FileNotFoundError:
            raise GuestNotFound(f"no guest {uuid} on {self.host}") from None

    def _save(self, uuid: str, record: dict[str, Any]) -> None:
        path = self._dir(uuid) / "guest.json"
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)

    def _alive(self, uuid: str) -> bool:
        return qp.process_alive(qp.read_pid(self._dir(uuid)), uuid)

    async def spawn(
        self, guest: GuestSpec, network_ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        directory = self._dir(guest.uuid)
        if (directory / "guest.json").exists():
            raise DriverError(f"guest {guest.uuid} already exists on {self.host}")
        if self.accel is None:
            await self._choose_accel()
        async with self._lock(guest.uuid):
            directory.mkdir(parents=True, exist_ok=True)
            try:
                machine = await self._prepare(guest, directory)
                record = await self._record_and_plug(machine, guest, attach=network_ready is None)
                if network_ready is None:
                    await self._start(guest.uuid, record)
                    return
                # QEMU starts paused while the ports are wired (Nova's libvirt driver
                # waits for network-vif-plugged with the domain paused): the disks, the
                # config drive and QEMU's own start overlap the wait; the taps join their
                # bridges once wired, and only then does the guest run.
                await self._start(guest.uuid, record, paused=True)
                # br-int exists on every Open vSwitch host: a tap joins it at once, so the
                # agent sees it and writes its flows while the guest is paused (as Nova
                # plugs OVS vifs before the domain runs); a port's Linux bridge may not
                # exist before the port is wired, so that tap joins it after the wait.
                for vif in guest.vifs:
                    if vif.ovsdb:
                        await _attach_tap(vif)
                await network_ready()
                for vif in guest.vifs:
                    if not vif.ovsdb:
                        await _attach_tap(vif)
                await self._qmp(guest.uuid, "cont")
            except BaseException:
                await self._remove(guest.uuid)
                raise

    async def _record_and_plug(
        self,
        machine: qp.MachineConfig,
        guest: GuestSpec,
        placed: dict[str, int] | None = None,
        attach: bool = True,
    ) -> dict[str, Any]:
        """guest.json of a new guest (its volumes as given, the root one first when it
        boots from a volume), saved before anything outside its directory exists (a host
        killed from here on leaves a record destroy() removes it all by); then its taps
        (on their bridges unless `attach` is False). `placed`: slots the devices keep
        (see _boot_slots)."""
        volume_slots, _nic_slots = _boot_slots(guest, placed)
        drives = [
            (d, _volume_drive(d, slot, initiator_name(self.host)))
            for d, slot in zip(guest.block_devices, volume_slots, strict=True)
        ]
        if any(drive.bus == "scsi" for _, drive in drives) and machine.scsi_model is None:
            machine.scsi_model = "virtio-scsi"  # Nova's libvirt adds a SCSI controller too
        for _, drive in drives:
            await self._relay(machine.netns, drive)
        volumes = {d.volume_id: dataclasses.asdict(drive) for d, drive in drives}
        record = {"machine": dataclasses.asdict(machine), "volumes": volumes, "suspended": False}
        self._save(guest.uuid, record)
        kept: dict[str, str] = {}
        for d, drive in drives:
            kept |= _drive_secrets(d, drive)
        qemu_secrets.keep(self._dir(guest.uuid), kept)
        for vif in guest.vifs:
            await _plug_tap(vif, attach)
        return record

    async def _prepare(
        self,
        guest: GuestSpec,
        directory: Path,
        copied: dict[str, str] | None = None,
        placed: dict[str, int] | None = None,
    ) -> qp.MachineConfig:
        """Disks, config drive and taps of a new guest, and the machine they make;
        `copied`: local disks (by node) copied from these NBD exports instead; `placed`:
        slots the devices keep (see _boot_slots)."""
        copied = copied or {}
        flavor, image = guest.flavor, guest.image
        machine = qp.MachineConfig(
            uuid=guest.uuid,
            name=guest.name,
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            accel=self.accel or "tcg",
            vnc=self.vnc,
        )
        # Checked first: a host without OVMF fails the boot at once, saying so, and so
        # does a machine type or Secure Boot this guest cannot have.
        machine.firmware = qp.firmware_type(image.properties if image else {})
        machine.machine_type, machine.secure_boot = self._machine_choice(guest)
        qp.check_firmware(machine.firmware, machine.secure_boot)
        if guest.vtpm is not None:
            if not self.supports_vtpm:
                raise DriverError("this host cannot give guests a TPM: swtpm is not installed")
            machine.tpm_version, machine.tpm_model = guest.vtpm.version, guest.vtpm.model
            self._keep_tpm_passphrase(guest.uuid, guest.vtpm.security, guest.vtpm.passphrase)
        if image is not None and _image_flag(image.properties, "hw_qemu_guest_agent"):
            machine.guest_agent = True
            machine.admin_user = str(image.properties.get("os_admin_user") or "root")
        if image is not None:
            machine.require_quiesce = _image_flag(image.properties, "os_require_quiesce")
            machine.scsi_model = qemu_iscsi.scsi_model(image.properties)
        if image is not None and image.kernel_path:
            machine.kernel = image.kernel_path
            machine.initrd = image.ramdisk_path
            machine.command_line = str(
                image.properties.get("os_command_line") or "root=/dev/vda console=ttyS0"
            )
        root = directory / "disk"
        if "root" in copied:
            await _copy_disk(copied["root"], root, "qcow2", flavor.root_gb)
            machine.drives.append(qp.Drive("root", str(root), "qcow2"))
        elif image is not None and image.path:
            base_format = "qcow2" if image.disk_format == "qcow2" else "raw"
            size = f"{flavor.root_gb}G" if flavor.root_gb else None
            await _qemu_img(
                "create",
                "-f",
                "qcow2",
                "-F",
                base_format,
                "-b",
                str(Path(image.path).resolve()),
                str(root),
                *([size] if size else []),
            )
            machine.drives.append(qp.Drive("root", str(root), "qcow2"))
        elif flavor.root_gb and not any(d.boot_index == 0 for d in guest.block_devices):
            # (A guest booted from a volume has no local root disk, whatever the flavor's
            # root_gb, as Nova's: its root is the volume.)
            await _qemu_img("create", "-f", "qcow2", str(root), f"{flavor.root_gb}G")
            machine.drives.append(qp.Drive("root", str(root), "qcow2"))
        if flavor.ephemeral_gb:
            eph = directory / "disk.eph0"
            if "eph0" in copied:
                await _copy_disk(copied["eph0"], eph, "qcow2", flavor.ephemeral_gb)
            else:
                await _qemu_img("create", "-f", "qcow2", str(eph), f"{flavor.ephemeral_gb}G")
            machine.drives.append(qp.Drive("eph0", str(eph), "qcow2"))
        if flavor.swap_mb:
            swap = directory / "disk.swap"
            await _make_swap(swap, flavor.swap_mb)
            machine.drives.append(qp.Drive("swap", str(swap), "raw"))
        if guest.config_drive is not None:
            iso = directory / "disk.config"
            await asyncio.to_thread(build_config_drive, guest.config_drive, iso)
            machine.drives.append(
                qp.Drive("config", str(iso), "raw", read_only=True, serial="config-2")
            )
        for drive in machine.drives:
            drive.slot = qp.DISK_SLOTS[drive.node]
        if machine.firmware == "uefi":
            if "nvram" in copied:  # a moved guest keeps its UEFI variables
                nvram = str(directory / qp.NVRAM)
                await _qemu_img("convert", "-f", "raw", "-O", "raw", copied["nvram"], nvram)
            else:
                await asyncio.to_thread(qp.make_nvram, directory, machine.secure_boot)
        namespaces = {vif.netns for vif in guest.vifs}
        if len(namespaces) > 1:
            raise DriverError("a guest's ports must all be in one network namespace")
        machine.netns = namespaces.pop() if namespaces else None
        # The taps are named here and plugged once the record names them (see spawn).
        _volume_slots, nic_slots = _boot_slots(guest, placed)
        machine.nics += [
            qp.Nic(tap_name(vif.port_id), vif.mac, slot, _checksum_offload(vif))
            for vif, slot in zip(guest.vifs, nic_slots, strict=True)
        ]
        return machine

    def _machine_choice(self, guest: GuestSpec) -> tuple[str, bool]:
        """The guest's machine type and whether it boots with Secure Boot (DriverError
        when the image and flavor ask for what cannot be had)."""
        image = guest.image
        return qp.choose_machine(
            qp.firmware_type(image.properties if image else {}),
            image.properties if image else {},
            guest.flavor.extra_specs or {},
            self.machine_type,
            self.machine_types,
        )

    async def guest_machine_type(self, uuid: str) -> str | None:
        return self._load(uuid)["machine"].get("machine_type", "pc")

    def device_layout(self, guest: GuestSpec) -> tuple[DeviceAddress, ...]:
        volume_slots, nic_slots = _boot_slots(guest)
        try:
            machine_type = self._machine_choice(guest)[0]
        except DriverError:
            machine_type = "pc"  # the spawn fails, saying why
        return (
            *(
                DeviceAddress("disk", d.volume_id, "pci", _address(slot, machine_type))
                for d, slot in zip(guest.block_devices, volume_slots, strict=True)
                if _on_pci(d)
            ),
            *(
                DeviceAddress("nic", vif.mac, "pci", _address(slot, machine_type))
                for vif, slot in zip(guest.vifs, nic_slots, strict=True)
            ),
        )

    async def get_device_addresses(self, uuid: str) -> tuple[DeviceAddress, ...]:
        record = self._load(uuid)
        machine_type = record["machine"].get("machine_type", "pc")
        return (
            *(
                DeviceAddress("disk", volume_id, "pci", _address(drive["slot"], machine_type))
                for volume_id, drive in record["volumes"].items()
                if drive.get("slot") is not None
            ),
            *(
                DeviceAddress("nic", nic["mac"], "pci", _address(nic["slot"], machine_type))
                for nic in record["machine"]["nics"]
                if nic.get("slot") is not None
            ),
        )

    async def _start(
        self,
        uuid: str,
        record: dict[str, Any],
        incoming: str | None = None,
        paused: bool = False,
    ) -> None:
        directory = self._dir(uuid)
        machine = _machine(record)
        machine.drives += [qp.Drive(**d) for d in record["volumes"].values()]
        if machine.firmware == "uefi":  # OVMF may have gone since the guest was made
            qp.check_firmware(machine.firmware, machine.secure_boot)
            await asyncio.to_thread(qp.make_nvram, directory, machine.secure_boot)
        if machine.tpm_version:  # the TPM's swtpm first: QEMU connects to it at once
            passphrase = self._tpm_passphrase(uuid)
            if passphrase is None:
                raise DriverError(f"the vTPM secret of guest {uuid} is not on this host")
            # An incoming live migration's TPM gets its state from the source's QEMU.
            live_incoming = incoming == "defer"
            await qemu_tpm.start(
                directory, machine.tpm_version, passphrase, manufacture=not live_incoming
            )
        (directory / "qemu.pid").unlink(missing_ok=True)
        await self._relay_iscsi(uuid, record)
        with contextlib.ExitStack() as sockets:
            nbd = {
                d.node: sockets.enter_context(await qp.connect_nbd(d))
                for d in machine.drives
                if d.protocol == "nbd"
            }
            qmp_sock = sockets.enter_context(qp.listening_socket(directory, "qmp.sock"))
            nbd_fds = {node: sock.fileno() for node, sock in nbd.items()}
            # QEMU has read the passphrases once it daemonized: their files go then.
            secret_files = sockets.enter_context(
                qemu_secrets.secret_files(
                    directory, [s for d in machine.drives for s in d.secret_ids()]
                )
            )
            argv = qp.command_line(
                machine, directory, qmp_sock.fileno(), incoming, nbd_fds, secret_files
            )
            if paused:  # an incoming guest waits for its disks, a new one for its ports
                argv.append("-S")
            if machine.netns:
                # Taps by name are found in QEMU's namespace: run it where the bridges are.
                argv = ["ip", "netns", "exec", machine.netns, *argv]
            await qp.launch(argv, directory, pass_fds=[qmp_sock.fileno(), *nbd_fds.values()])

    async def destroy(self, uuid: str) -> None:
        async with self._lock(uuid):
            await self._remove(uuid)
        self._locks.pop(uuid, None)

    async def _remove(self, uuid: str) -> None:
        if (incoming := self._incoming.pop(uuid, None)) is not None:
            incoming.cancel()
        self._spice_direct.close(uuid)
        self.console_relays.close(uuid)
        directory = self._dir(uuid)
        self._tpm_passphrases.pop(uuid, None)
        if not directory.exists():
            return
        await qp.kill(qp.read_pid(directory), uuid)
        await qemu_tpm.stop(directory)
        try:
            record = self._load(uuid)
        except GuestNotFound:
            record = None
        if record:
            for nic in record["machine"]["nics"]:
                await _unplug_tap(nic["tap"], record["machine"].get("netns"))
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def get_info(self, uuid: str) -> GuestInfo:
        record = self._load(uuid)
        machine = record["machine"]
        mem_kb = machine["memory_mb"] * 1024
        state = await self._power_state(uuid, record)
        cpu_ns = _cpu_time_ns(qp.read_pid(self._dir(uuid))) if state != PowerState.SHUTDOWN else 0
        return GuestInfo(state, mem_kb, mem_kb, machine["vcpus"], cpu_ns)

    async def _power_state(self, uuid: str, record: dict[str, Any]) -> PowerState:
        if not self._alive(uuid):
            return PowerState.SUSPENDED if record.get("suspended") else PowerState.SHUTDOWN
        try:
            async with qp.qmp_session(self._dir(uuid), uuid) as qmp:
                status = await qmp.execute("query-status")
        except DriverError:
            # The process died between the two checks, or its monitor is wedged.
            return PowerState.NOSTATE if self._alive(uuid) else PowerState.SHUTDOWN
        return _QMP_STATUS.get(status["status"], PowerState.NOSTATE)

    async def _qmp(self, uuid: str, command: str, args: dict[str, Any] | None = None) -> Any:
        if not self._alive(uuid):
            raise DriverError(f"guest {uuid} is not running")
        async with qp.qmp_session(self._dir(uuid), uuid) as qmp:
            return await qmp.execute(command, args)

    # -- power -----------------------------------------------------------------------------

    async def reboot(self, uuid: str, hard: bool) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            if not self._alive(uuid):
                if not hard:
                    raise DriverError(f"guest {uuid} is not running")
                await self._power_on(uuid, record)
                return
            if hard:
                await self._qmp(uuid, "system_reset")
                status = await self._qmp(uuid, "query-status")
                if status["status"] != "running":
                    await self._qmp(uuid, "cont")
                return
            # Soft: ask the guest to shut down, then boot it again; a deaf guest gets reset.
            if await self._acpi_shutdown(uuid, timeout=30):
                await self._start(uuid, record)
            else:
                await self._qmp(uuid, "system_reset")

    async def power_off(self, uuid: str, timeout: float = 60) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            if record.get("suspended"):
                (self._dir(uuid) / "memory.state").unlink(missing_ok=True)
                record["suspended"] = False
                self._save(uuid, record)
            if not self._alive(uuid):
                return
            status = (await self._qmp(uuid, "query-status"))["status"]
            if timeout <= 0 or status != "running" or not await self._acpi_shutdown(uuid, timeout):
                await self._hard_stop(uuid)

    async def _acpi_shutdown(self, uuid: str, timeout: float) -> bool:
        """Press the power button and wait for QEMU to exit; False when the guest ignored it."""
        await self._qmp(uuid, "system_powerdown")
        return await qp.wait_dead(qp.read_pid(self._dir(uuid)), uuid, timeout)

    async def _hard_stop(self, uuid: str) -> None:
        pid = qp.read_pid(self._dir(uuid))
        try:
            await self._qmp(uuid, "quit")
        except Exception:  # noqa: BLE001 - a wedged monitor still gets killed below
            LOG.debug("quit of %s over QMP failed", uuid)
        if not await qp.wait_dead(pid, uuid, 3.0):
            await qp.kill(pid, uuid)

    async def power_on(self, uuid: str) -> None:
        async with self._lock(uuid):
            await self._power_on(uuid, self._load(uuid))

    async def _power_on(self, uuid: str, record: dict[str, Any]) -> None:
        if self._alive(uuid):
            return
        if record.get("suspended"):
            await self._restore(uuid, record)
        else:
            await self._start(uuid, record)

    async def pause(self, uuid: str) -> None:
        async with self._lock(uuid):
            self._load(uuid)
            await self._qmp(uuid, "stop")

    async def unpause(self, uuid: str) -> None:
        async with self._lock(uuid):
            self._load(uuid)
            await self._qmp(uuid, "cont")

    async def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk and stop its QEMU (libvirt's managed save)."""
        async with self._lock(uuid):
            record = self._load(uuid)
            state_file = self._dir(uuid) / "memory.state"
            await self._qmp(uuid, "stop")
            await self._qmp(uuid, "migrate", {"uri": f"exec:cat > {_shell_quote(state_file)}"})
            deadline = time.monotonic() + 300
            while True:
                info = await self._qmp(uuid, "query-migrate")
                if info.get("status") == "completed":
                    break
                if info.get("status") == "failed" or time.monotonic() > deadline:
                    await self._qmp(uuid, "cont")
                    raise DriverError(f"saving the memory of {uuid} failed: {info}")
                await asyncio.sleep(0.1)
            record["suspended"] = True
            self._save(uuid, record)
            await self._hard_stop(uuid)

    async def resume(self, uuid: str) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            if not record.get("suspended"):
                raise DriverError(f"guest {uuid} is not suspended")
            await self._restore(uuid, record)

    async def _restore(self, uuid: str, record: dict[str, Any]) -> None:
        state_file = self._dir(uuid) / "memory.state"
        await self._start(uuid, record, incoming=f"exec:cat {_shell_quote(state_file)}")
        deadline = time.monotonic() + 300
        while (await self._qmp(uuid, "query-status"))["status"] == "inmigrate":
            if time.monotonic() > deadline:
                raise DriverError(f"restoring the memory of {uuid} timed out")
            await asyncio.sleep(0.1)
        await self._qmp(uuid, "cont")
        record["suspended"] = False
        self._save(uuid, record)
        state_file.unlink(missing_ok=True)

    # -- consoles, snapshots, volumes -------------------------------------------------------

    async def get_console_output(self, uuid: str) -> str:
        self._load(uuid)
        return await asyncio.to_thread(_tail, self._dir(uuid) / "console.log", MAX_CONSOLE_BYTES)

    async def attach_interface(self, uuid: str, vif: Vif) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            netns = record["machine"].get("netns")
            if vif.netns != netns:
                raise DriverError("a guest's ports must all be in one network namespace")
            nic = qp.Nic(
                tap_name(vif.port_id),
                vif.mac,
                qp.free_slot(qp.used_slots(record)),
                _checksum_offload(vif),
            )
            await _plug_tap(vif)
            if self._alive(uuid):
                try:
                    await self._qmp(
                        uuid,
                        "netdev_add",
                        {
                            "type": "tap",
                            "id": f"net-{nic.tap}",
                            "ifname": nic.tap,
                            "script": "no",
                            "downscript": "no",
                        },
                    )
                    machine_type = record["machine"].get("machine_type", "pc")
                    await self._qmp(uuid, "device_add", qp.nic_args(nic, machine_type))
                except Exception:
                    await _unplug_tap(nic.tap, netns)
                    raise
            record["machine"]["nics"].append(dataclasses.asdict(nic))
            self._save(uuid, record)

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            tap = tap_name(port_id)
            nics = record["machine"]["nics"]
            if not any(n["tap"] == tap for n in nics):
                raise DriverError(f"port {port_id} is not plugged into guest {uuid}")
            if self._alive(uuid):
                await self._qmp(uuid, "device_del", {"id": f"nic-{tap}"})
                deadline = time.monotonic() + 30
                while f"nic-{tap}" in await self._peripherals(uuid):
                    if time.monotonic() > deadline:
                        raise DriverError(f"the guest did not release port {port_id}")
                    await asyncio.sleep(0.2)
                await self._qmp(uuid, "netdev_del", {"id": f"net-{tap}"})
            record["machine"]["nics"] = [n for n in nics if n["tap"] != tap]
            self._save(uuid, record)
            await _unplug_tap(tap, record["machine"].get("netns"))

    async def set_admin_password(self, uuid: str, password: str) -> None:
        """Nova's set-admin-password: qemu-guest-agent's guest-set-user-password."""
        machine = _machine(self._load(uuid))
        if not machine.guest_agent:
            raise NotImplementedError(
                "the guest has no agent channel (an image with hw_qemu_guest_agent=yes)"
            )
        if not self._alive(uuid):
            raise DriverError(f"guest {uuid} is not running")
        args = {
            "username": machine.admin_user,
            "password": base64.b64encode(password.encode()).decode(),
            "crypted": False,
        }
        try:
            await qp.guest_agent(self._dir(uuid), "guest-set-user-password", args)
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            raise DriverError(f"the guest agent did not set the password: {exc}") from None

    async def get_vnc_console(self, uuid: str) -> dict[str, Any]:
        info = await self._qmp(uuid, "query-vnc")
        if not info.get("enabled"):
            raise DriverError(f"guest {uuid} has no VNC console")
        # The VNC server is a unix socket on this host (see qemu_process.command_line):
        # the console proxy connects to internal_access_path; there is no TCP port.
        path = self.instances_dir / uuid / qp.VNC_SOCKET
        return {"host": self.host, "port": 0, "internal_access_path": str(path)}

    async def get_spice_console(self, uuid: str) -> dict[str, Any]:
        info = await self._qmp(uuid, "query-spice")
        if not info.get("enabled"):  # a guest started before it had one
            raise ConsoleTypeUnavailable("Unavailable console type spice.")
        path = self.instances_dir / uuid / qp.SPICE_SOCKET
        spice_socket = {"host": self.host, "port": 0, "internal_access_path": str(path)}
        port = await self._spice_direct.open(uuid, "spice", spice_socket, ttl=None)
        return {
            "host": self._spice_direct.address,
            "port": port,
            "tls_port": None,
            "internal_access_path": str(path),
        }

    async def get_serial_console(self, uuid: str) -> dict[str, Any]:
        # A guest started before its serial port listened on serial.sock (a file chardev)
        # has no interactive serial console until it is started again.
        chardevs = await self._qmp(uuid, "query-chardev")
        serial = next((c for c in chardevs if c.get("label") == "serial0"), None)
        # "disconnected:unix:serial.sock,server=on" with no client, "file" for the old ones.
        if serial is None or "unix:" not in str(serial.get("filename", "")):
            raise ConsoleTypeUnavailable("Unavailable console type serial.")
        path = self.instances_dir / uuid / qp.SERIAL_SOCKET
        return {"host": self.host, "port": 0, "internal_access_path": str(path)}

    async def snapshot(self, uuid: str, target_path: str) -> str:
        async with self._lock(uuid):
            record = self._load(uuid)
            root = next((d for d in record["machine"]["drives"] if d["node"] == "root"), None)
            if root is None:
                raise DriverError(f"guest {uuid} has no local root disk to snapshot")
            running = (
                self._alive(uuid) and (await self._qmp(uuid, "query-status"))["status"] == "running"
            )
            if not running:
                await _qemu_img("convert", "-U", "-O", "qcow2", root["path"], target_path)
                return "qcow2"
            # Live: the filesystems frozen by the guest agent (Nova's quiesce), then the
            # guest paused while its disk is read; resumed before the agent thaws it.
            async with qp.quiesced(self._dir(uuid), _machine(record)):
                await self._qmp(uuid, "stop")
                try:
                    await _qemu_img("convert", "-U", "-O", "qcow2", root["path"], target_path)
                finally:
                    await self._qmp(uuid, "cont")
            return "qcow2"

    async def attach_volume(self, uuid: str, device: BlockDevice) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            if device.volume_id in record["volumes"]:
                raise DriverError(f"volume {device.volume_id} is already attached to {uuid}")
            drive = _volume_drive(
                device, qp.free_slot(qp.used_slots(record)), initiator_name(self.host)
            )
            if drive.bus == "scsi" and not _has_scsi_controller(record):
                raise DriverError(
                    f"guest {uuid} has no SCSI controller to attach volume {device.volume_id} "
                    "to (its image's hw_scsi_model=virtio-scsi gives it one)"
                )
            await self._relay(record["machine"].get("netns"), drive)
            qemu_secrets.keep(self._dir(uuid), _drive_secrets(device, drive))
            try:
                if self._alive(uuid):
                    await self._blockdev_add(uuid, drive)
                    try:
                        machine_type = record["machine"].get("machine_type", "pc")
                        await self._qmp(uuid, "device_add", qp.device_args(drive, machine_type))
                    except Exception:
                        await self._blockdev_del(uuid, drive.node, *drive.secret_ids())
                        raise
            except BaseException:
                qemu_secrets.forget(self._dir(uuid), *drive.secret_ids())
                raise
            record["volumes"][device.volume_id] = dataclasses.asdict(drive)
            self._save(uuid, record)

    async def extend_volume(self, uuid: str, volume_id: str) -> None:
        """`block_resize` of the volume's drive to the size of its file (the volume
        driver has grown it); the guest sees a capacity change."""
        async with self._lock(uuid):
            record = self._load(uuid)
            drive = record["volumes"].get(volume_id)
            if drive is None:
                raise DriverError(f"volume {volume_id} is not attached to {uuid}")
            protocol = drive.get("protocol", "file")
            if protocol not in ("file", "iscsi"):
                raise DriverError(
                    f"volume {volume_id} is reached over {protocol}: its export cannot be "
                    "grown under a running guest yet"
                )
            if drive.get("media") == "lun":
                return  # the guest reads the capacity from the LUN itself (SCSI passthrough)
            # A LUKS container's size as the guest sees it is its payload's (the file
            # less the LUKS header), which qemu-img reads without the key.
            if protocol == "iscsi":
                size = await _iscsi_size(self._dir(uuid), qp.Drive(**drive))
            else:
                size = await _virtual_size(drive["path"], drive.get("format"))
            if self._alive(uuid):
                await self._qmp(uuid, "block_resize", {"node-name": drive["node"], "size": size})

    async def swap_volume(
        self, uuid: str, old_volume_id: str, new: BlockDevice, new_size_gb: int = 0
    ) -> None:
        """The new volume's node added beside the old one, the old one mirrored into it
        (blockdev-mirror sync=full) while the guest runs, the mirror completed once in
        sync (job-complete: the guest's device reads the new node from then on, same PCI
        slot and serial), the old node deleted. A larger volume (`new_size_gb`) is
        mirrored into a view of it of the old node's size (QEMU mirrors only between
        nodes of one size), opened whole once the device reads it and block_resize'd:
        the guest sees its new capacity. A guest that does not run is copied with
        qemu-img (it opens the whole volume when it starts). Raises only while the
        guest still reads the old volume: what fails after the pivot is logged."""
        async with self._lock(uuid):
            record = self._load(uuid)
            old = record["volumes"].get(old_volume_id)
            if old is None:
                raise DriverError(f"volume {old_volume_id} is not attached to {uuid}")
            if old.get("media") == "lun":
                raise DriverError(
                    f"volume {old_volume_id} is a SCSI LUN of {uuid}: the guest talks to its "
                    "target, whose data cannot be mirrored elsewhere under it"
                )
            drive = _volume_drive(new, old.get("slot"), initiator_name(self.host))
            source = (new.connection_info.get("data") or {}).get("volume_id") or new.volume_id
            node = f"vol-{source[:12]}"
            taken = {d["node"] for d in record["volumes"].values()}
            node = node if node not in taken else f"vol-{secrets.token_hex(6)}"
            drive = dataclasses.replace(
                drive,
                node=node,
                serial=old.get("serial"),
                device_id=old.get("device_id") or old["node"],
                key_secret=_secret_id(node) if drive.key_secret else None,
                chap_secret=qemu_iscsi.chap_secret_id(node) if drive.chap_secret else None,
                bus=old.get("bus", "virtio"),
            )
            await self._relay(record["machine"].get("netns"), drive)
            alive = self._alive(uuid)
            if not alive and (drive.key_secret or old.get("key_secret")):
                raise DriverError(
                    f"volume {old_volume_id} of the stopped guest {uuid} is swapped from or "
                    "onto an encrypted volume: only a running guest copies it (through its "
                    "keys); start the guest first"
                )
            qemu_secrets.keep(self._dir(uuid), _drive_secrets(new, drive))
            try:
                if alive:
                    await self._mirror_volume(uuid, old, drive, grow=new_size_gb > 0)
                else:
                    if "iscsi" in (old.get("protocol"), drive.protocol):
                        raise DriverError(
                            f"volume {old_volume_id} of the stopped guest {uuid} is swapped "
                            "from or onto an iSCSI volume: only a running guest copies it "
                            "(through its initiator); start the guest first"
                        )
                    src = (old["path"], old["format"] if old.get("protocol") != "nbd" else "raw")
                    await copy_volume_data(src, (drive.path, drive.format))
            except BaseException:
                qemu_secrets.forget(self._dir(uuid), *drive.secret_ids())
                raise
            qemu_secrets.forget(self._dir(uuid), *_record_secrets(old))
            del record["volumes"][old_volume_id]
            record["volumes"][new.volume_id] = dataclasses.asdict(drive)
            self._save(uuid, record)

    async def _mirror_volume(
        self, uuid: str, old: dict[str, Any], drive: qp.Drive, grow: bool = False
    ) -> None:
        old_node = old["node"]
        job = f"swap-{drive.node}"
        view = await self._node_size(uuid, old_node) if grow else None
        await self._blockdev_add(uuid, drive, size=view)
        try:
            await self._qmp(
                uuid,
                "blockdev-mirror",
                {"job-id": job, "device": old_node, "target": drive.node, "sync": "full"},
            )
            deadline = time.monotonic() + SWAP_TIMEOUT
            while True:
                jobs = {j["device"]: j for j in await self._qmp(uuid, "query-block-jobs")}
                if job not in jobs:
                    raise DriverError(f"the copy of volume node {old_node} stopped")
                if jobs[job].get("ready"):
                    break
                if time.monotonic() > deadline:
                    raise DriverError(f"the copy of volume node {old_node} did not get in sync")
                await asyncio.sleep(0.1)
            await self._qmp(uuid, "job-complete", {"id": job})
            while job in {j["device"] for j in await self._qmp(uuid, "query-block-jobs")}:
                await asyncio.sleep(0.05)
            devices = await self._qmp(uuid, "query-block")
            if not any((d.get("inserted") or {}).get("node-name") == drive.node for d in devices):
                raise DriverError(f"the guest's device did not move onto volume node {drive.node}")
        except BaseException:
            with contextlib.suppress(DriverError):
                await self._qmp(uuid, "block-job-cancel", {"device": job, "force": True})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(DriverError):
                    await self._qmp(uuid, "blockdev-del", {"node-name": drive.node})
                    break
                await asyncio.sleep(0.1)
            for secret_id in drive.secret_ids():
                await self._secret_del(uuid, secret_id)
            raise
        # The guest reads the new volume from here on: nothing below undoes that.
        try:
            await self._blockdev_del(uuid, old_node, *_record_secrets(old))
        except DriverError as exc:
            LOG.warning("guest %s: the old volume node %s stays open: %s", uuid, old_node, exc)
        if view is not None:
            try:
                await self._open_whole(uuid, drive)
            except DriverError as exc:
                LOG.warning("guest %s: volume node %s not grown: %s", uuid, drive.node, exc)

    async def _node_size(self, uuid: str, node: str) -> int:
        nodes = await self._qmp(uuid, "query-named-block-nodes", {"flat": True})
        found = next((n for n in nodes if n.get("node-name") == node), None)
        if found is None:
            raise DriverError(f"guest {uuid} has no block node {node}")
        return int(found["image"]["virtual-size"])

    async def _open_whole(self, uuid: str, drive: qp.Drive) -> None:
        """The size-limited view a larger volume was mirrored into opened whole (Nova's
        libvirt driver resizes the disk after the pivot): block_resize to the volume's
        own size tells the guest its device grew."""
        view = {
            "node-name": drive.node,
            "driver": "raw",
            "read-only": drive.read_only,
            "file": _whole_node(drive.node),
        }
        await self._qmp(uuid, "blockdev-reopen", {"options": [view]})
        size = await self._node_size(uuid, drive.node)
        await self._qmp(uuid, "block_resize", {"node-name": drive.node, "size": size})

    async def update_volume_connection(
        self, uuid: str, device: BlockDevice, previous_volume_id: str | None = None
    ) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            drive = record["volumes"].pop(previous_volume_id or device.volume_id, None)
            if drive is None:
                return
            # The same data under another name: opened as before (an encrypted volume
            # with the secret it has now, a plain one as Block Storage says).
            path, protocol = _volume_where(device)
            drive.update(path=path, protocol=protocol)
            credentials = qemu_iscsi.chap(device.connection_info.get("data") or {})
            if protocol == "iscsi" and credentials and drive.get("chap_secret"):
                drive["chap_user"] = credentials[0]
                qemu_secrets.keep(self._dir(uuid), {drive["chap_secret"]: credentials[1]})
            if not drive.get("key_secret"):
                drive["format"] = (device.connection_info.get("data") or {}).get("format", "raw")
            record["volumes"][device.volume_id] = drive
            self._save(uuid, record)

    async def _blockdev_add(self, uuid: str, drive: qp.Drive, size: int | None = None) -> None:
        """`size`: the node shows only the first `size` bytes of the volume (a raw view
        over it, which _open_whole opens whole)."""

        def args(nbd_fd: str | None = None) -> dict[str, Any]:
            made = qp.blockdev_args(drive, nbd_fd=nbd_fd)
            if size is None:
                return made
            whole = {**made, "node-name": _whole_node(drive.node)}
            return {**made, "driver": "raw", "size": size, "file": whole}

        for secret_id in drive.secret_ids():
            await self._secret_add(uuid, secret_id)
        try:
            if drive.protocol != "nbd":
                await self._qmp(uuid, "blockdev-add", args())
                return
            with await qp.connect_nbd(drive) as sock:
                async with qp.qmp_session(self._dir(uuid), uuid) as qmp:
                    await qmp.pass_fd(sock.fileno(), drive.node)
                    await qmp.execute("blockdev-add", args(nbd_fd=drive.node))
        except BaseException:
            for secret_id in drive.secret_ids():
                await self._secret_del(uuid, secret_id)
            raise

    async def _blockdev_del(self, uuid: str, node: str, *secret_ids: str | None) -> None:
        """A volume's node let go, then the secret objects it was opened with."""
        await self._qmp(uuid, "blockdev-del", {"node-name": node})
        for secret_id in secret_ids:
            await self._secret_del(uuid, secret_id)

    async def _secret_add(self, uuid: str, secret_id: str) -> None:
        """The QEMU secret object of an encrypted volume (object-add, from a 0600 file
        that goes once QEMU has read it: the passphrase never travels in a command)."""
        with qemu_secrets.secret_files(self._dir(uuid), [secret_id]) as files:
            await self._qmp(uuid, "object-add", qp.secret_object_args(secret_id, files[secret_id]))

    async def _secret_del(self, uuid: str, secret_id: str | None) -> None:
        if secret_id is None:
            return
        try:
            await self._qmp(uuid, "object-del", {"id": secret_id})
        except DriverError as exc:  # no such object (never added), or the guest is gone
            LOG.debug("guest %s: secret object %s not deleted: %s", uuid, secret_id, exc)

    async def detach_volume(self, uuid: str, volume_id: str, timeout: float = 30) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            drive = record["volumes"].get(volume_id)
            if drive is None:
                raise DriverError(f"volume {volume_id} is not attached to {uuid}")
            if self._alive(uuid):
                device_id = drive.get("device_id") or drive["node"]
                await self._qmp(uuid, "device_del", {"id": device_id})
                # The guest acknowledges the unplug (ACPI); only then is the node free.
                deadline = time.monotonic() + timeout
                while device_id in await self._peripherals(uuid):
                    if time.monotonic() > deadline:
                        raise DriverError(f"the guest did not release volume {volume_id}")
                    await asyncio.sleep(0.2)
                # The device leaves the tree a moment before it lets go of its node.
                while True:
                    try:
                        await self._blockdev_del(uuid, drive["node"], *_record_secrets(drive))
                        break
                    except DriverError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)
            del record["volumes"][volume_id]
            self._save(uuid, record)
            qemu_secrets.forget(self._dir(uuid), *_record_secrets(drive))

    # -- emulated TPM ---------------------------------------------------------------------

    def _keep_tpm_passphrase(self, uuid: str, security: str, passphrase: str) -> None:
        """A `host` policy TPM's passphrase is kept in secrets.json (0600, as libvirt keeps
        a persistent secret) so the guest starts again after a host restart; a `user`
        one only in this process."""
        if security == "host":
            qemu_secrets.keep(self._dir(uuid), {qemu_tpm.TPM_SECRET: passphrase})
            self._tpm_passphrases.pop(uuid, None)
        else:
            qemu_secrets.forget(self._dir(uuid), qemu_tpm.TPM_SECRET)
            self._tpm_passphrases[uuid] = passphrase

    def _tpm_passphrase(self, uuid: str) -> str | None:
        held = self._tpm_passphrases.get(uuid)
        if held is not None:
            return held
        return qemu_secrets.load(self._dir(uuid)).get(qemu_tpm.TPM_SECRET)

    async def vtpm_passphrase(self, uuid: str) -> str | None:
        record = self._load(uuid)
        return self._tpm_passphrase(uuid) if record["machine"].get("tpm_version") else None

    async def vtpm_passphrase_missing(self, uuid: str) -> bool:
        record = self._load(uuid)
        return bool(record["machine"].get("tpm_version")) and self._tpm_passphrase(uuid) is None

    async def keep_vtpm_passphrase(self, uuid: str, passphrase: str) -> None:
        self._load(uuid)
        self._tpm_passphrases[uuid] = passphrase

    async def _peripherals(self, uuid: str) -> set[str]:
        items = await self._qmp(uuid, "qom-list", {"path": "/machine/peripheral"})
        return {item["name"] for item in items}


# -- helpers ---------------------------------------------------------------------------------


def _image_flag(properties: dict[str, Any], name: str) -> bool:
    return str(properties.get(name)).lower() in ("yes", "true", "1")


def _machine(record: dict[str, Any]) -> qp.MachineConfig:
    """The machine to start: the rescue one while the guest is rescued."""
    fields = dict((record.get("rescue") or record)["machine"])
    fields["drives"] = [qp.Drive(**d) for d in fields["drives"]]
    fields["nics"] = [qp.Nic(**n) for n in fields["nics"]]
    return qp.MachineConfig(**fields)


def _boot_slots(
    guest: GuestSpec, placed: dict[str, int] | None = None
) -> tuple[list[int], list[int]]:
    """The PCI slots a new guest's volumes and NICs get: the free ones in order, volumes
    first (the root volume of a volume-backed guest is its first disk, vda). `placed`:
    the slots some already have (by volume id, by tap), which they keep: a guest live
    migrated here has its devices where they were on its source, hot-plugged ones too
    (QEMU moves the state of each device to the same address)."""
    placed = placed or {}
    keys = [d.volume_id for d in guest.block_devices] + [tap_name(v.port_id) for v in guest.vifs]
    taken = {placed[key] for key in keys if key in placed}
    free = [slot for slot in range(qp.FIRST_FREE_SLOT, qp.LAST_SLOT + 1) if slot not in taken]
    if len(keys) - len(taken) > len(free):
        room = qp.LAST_SLOT - qp.FIRST_FREE_SLOT + 1
        raise DriverError(f"a guest has room for {room} volumes and NICs")
    given = iter(free)
    slots = [placed[key] if key in placed else next(given) for key in keys]
    return slots[: len(guest.block_devices)], slots[len(guest.block_devices) :]


def _volume_drive(
    device: BlockDevice, slot: int | None = None, initiator: str | None = None
) -> qp.Drive:
    """A volume as a drive, from Block Storage's connection info (file, nbd or iscsi:
    QEMU's initiator logs in as `initiator`, with CHAP), at that PCI slot (a virtio disk)
    or on the SCSI controller (disk_bus scsi; device_type lun passes SCSI through); an
    encrypted one is QEMU's LUKS driver over it (DriverError for what QEMU cannot open)."""
    where, protocol = _volume_where(device)
    bus, media = qemu_iscsi.bus_and_media(device, protocol)
    data = device.connection_info.get("data") or {}
    node = f"vol-{device.volume_id[:12]}"
    disk_format, key_secret = data.get("format", "raw"), None
    encryption = require_encryption(device)
    if encryption is not None:
        _check_openable(device.volume_id, encryption, disk_format)
        disk_format, key_secret = "luks", _secret_id(node)
    elif disk_format == "luks":
        raise DriverError(
            f"volume {device.volume_id} is a LUKS container that Block Storage does not say "
            "is encrypted: it has no key to be opened with"
        )
    credentials = qemu_iscsi.chap(data) if protocol == "iscsi" else None
    return qp.Drive(
        node=node,
        path=str(where),
        format=disk_format,
        read_only=data.get("access_mode") == "ro" or bool(data.get("read_only", False)),
        serial=device.volume_id[:20],  # Nova's choice: /dev/disk/by-id/virtio-<id20>
        protocol=protocol,
        bus=bus,
        media=media,
        slot=slot if bus == "virtio" else None,
        key_secret=key_secret,
        initiator=initiator if protocol == "iscsi" else None,
        chap_user=credentials[0] if credentials else None,
        chap_secret=qemu_iscsi.chap_secret_id(node) if credentials else None,
    )


def _drive_secrets(device: BlockDevice, drive: qp.Drive) -> dict[str, str]:
    """What the drive's secret objects hold (by id): its LUKS passphrase, its CHAP
    password."""
    kept = {}
    if drive.key_secret:
        kept[drive.key_secret] = _passphrase(device)
    if drive.chap_secret:
        credentials = qemu_iscsi.chap(device.connection_info.get("data") or {})
        assert credentials is not None  # _volume_drive gave it a CHAP secret
        kept[drive.chap_secret] = credentials[1]
    return kept


def _record_secrets(drive: dict[str, Any]) -> list[str]:
    """The secret objects of a drive in guest.json."""
    return [s for s in (drive.get("key_secret"), drive.get("chap_secret")) if s]


def _has_scsi_controller(record: dict[str, Any]) -> bool:
    machine = record["machine"]
    drives = [*machine["drives"], *record["volumes"].values()]
    return bool(machine.get("scsi_model")) or any(d.get("bus") == "scsi" for d in drives)


def _on_pci(device: BlockDevice) -> bool:
    """Whether the volume is a virtio disk of its own PCI slot (SCSI ones are on the
    controller's bus)."""
    return device.disk_bus in (None, "virtio") and device.device_type != "lun"


def _portal(location: str) -> str:
    return urlsplit(location).netloc


def _volume_where(device: BlockDevice) -> tuple[str, str]:
    """Where a volume's bytes are (a file path, an NBD or iSCSI URI) and the protocol."""
    info = device.connection_info
    kind = info.get("driver_volume_type")
    data = info.get("data") or {}
    if kind in ("file", "local"):
        where, protocol = data.get("path") or data.get("device_path"), "file"
    elif kind == "nbd":
        where, protocol = data.get("uri"), "nbd"
        if not where and data.get("host"):
            where = f"nbd://{data['host']}:{data.get('port', 10809)}/{data.get('export', '')}"
    elif kind == "iscsi":
        where, protocol = qemu_iscsi.iscsi_location(data), "iscsi"
    else:
        raise DriverError(f"volumes of type {kind!r} are not supported by the QEMU driver")
    if not where:
        raise DriverError(f"the connection info of volume {device.volume_id} has no location")
    return str(where), protocol


def _check_openable(volume_id: str, encryption: VolumeEncryption, disk_format: str) -> None:
    """DriverError unless QEMU's own LUKS driver opens the volume: LUKS1 (provider luks)
    in a raw container. LUKS2 and plain dm-crypt are opened on the host by os-brick's
    encryptors (cryptsetup over device-mapper), which this host does not do."""
    if encryption.provider != "luks":
        kind = "LUKS2" if encryption.provider == "luks2" else "plain dm-crypt"
        raise DriverError(
            f"volume {volume_id} (encryption provider {encryption.provider}) cannot be "
            f"attached: {kind} volumes are opened by the host's dm-crypt (os-brick), which "
            "this compute host lacks (no device-mapper), and QEMU's own LUKS driver opens "
            "only LUKS1 volumes (provider luks)"
        )
    if disk_format not in ("raw", "luks"):
        raise DriverError(
            f"volume {volume_id} is encrypted in a {disk_format} image: QEMU's LUKS driver "
            "opens raw LUKS containers only"
        )


def _secret_id(node: str) -> str:
    """The QEMU secret object an encrypted volume's node is opened with."""
    return f"{node}-key"


def _passphrase(device: BlockDevice) -> str:
    assert device.encryption is not None  # _volume_drive gave its drive a secret
    return device.encryption.passphrase


def _address(slot: int, machine_type: str) -> str:
    """Where the guest finds the device in `slot`: on the pc machine's bus 0 (the driver
    interface's pci_address), or behind its PCIe root port on q35."""
    if qp.on_root_port(slot, machine_type):
        return qp.guest_pci_address(slot, machine_type)
    return pci_address(slot)


def _whole_node(node: str) -> str:
    """The volume's own node under the size-limited view a larger volume is mirrored into."""
    return f"{node}-v"


_run = qp.run
_qemu_img = qp.qemu_img


async def _virtual_size(path: str, disk_format: str | None = None) -> int:
    """The disk size a guest sees of an image file (-U: the running QEMU holds its lock)."""
    named = ["-f", disk_format] if disk_format else []
    info = json.loads(await _qemu_img("info", "-U", *named, "--output=json", path))
    return int(info["virtual-size"])


async def _iscsi_size(directory: Path, drive: qp.Drive) -> int:
    """The disk size a guest sees of an iSCSI drive, read by qemu-img logging in as the
    guest does (from the host's namespace: straight to the portal, not the relay)."""
    drive = dataclasses.replace(drive, relay_port=None)
    spec = {"driver": drive.format, "file": qp.iscsi_args(drive)}
    with qemu_secrets.secret_files(directory, drive.secret_ids()) as files:
        objects = [a for i, p in files.items() for a in ("--object", qp.secret_object_option(i, p))]
        info = await _qemu_img("info", *objects, "--output=json", "json:" + json.dumps(spec))
    return int(json.loads(info)["virtual-size"])


async def _copy_disk(source: str, target: Path, disk_format: str, size_gb: int) -> None:
    """A disk copied from another host's NBD export, grown to size_gb when that is larger."""
    await _qemu_img("convert", "-f", "raw", "-O", disk_format, source, str(target))
    if size_gb:
        info = json.loads(await _qemu_img("info", "--output=json", str(target)))
        if info["virtual-size"] < size_gb * GiB:
            await _qemu_img("resize", str(target), f"{size_gb}G")


async def _make_swap(path: Path, size_mb: int) -> None:
    await _qemu_img("create", "-f", "raw", str(path), f"{size_mb}M")
    if shutil.which("mkswap"):
        await _run("mkswap", str(path))


def tap_name(port_id: str) -> str:
    return f"tap{port_id[:11]}"  # Nova's name: fits IFNAMSIZ (15 characters)


def _checksum_offload(vif: Vif) -> bool:
    """Whether the guest may leave its frames' checksums to the host: not on Open
    vSwitch's userspace datapath, which drops such frames on the way into a VXLAN
    tunnel ("Tunneling packets with HW offload flags is not supported")."""
    return not (vif.ovsdb and vif.datapath_type == "netdev")


async def _plug_tap(vif: Vif, attach: bool = True) -> str:
    """The guest's tap, up, in its port's namespace; on its bridge unless `attach` is
    False (_attach_tap then, once the port is wired)."""
    name = tap_name(vif.port_id)
    ip = ["ip", "-n", vif.netns] if vif.netns else ["ip"]
    if not await _link_exists(name, vif.netns):
        await _run(*ip, "tuntap", "add", "dev", name, "mode", "tap")
    await _run(*ip, "link", "set", name, "mtu", str(vif.mtu), "up")
    if attach:
        await _attach_tap(vif)
    return name


async def _attach_tap(vif: Vif) -> None:
    """The guest's tap on its port's bridge (a Linux bridge, or br-int with the port's
    iface-id)."""
    name = tap_name(vif.port_id)
    if vif.ovsdb and vif.bridge:
        from cumulo.network.dataplane.openvswitch import plug

        await plug(vif.ovsdb, vif.bridge, name, vif.port_id, vif.mac)
    elif vif.bridge:
        ip = ["ip", "-n", vif.netns] if vif.netns else ["ip"]
        await _run(*ip, "link", "set", name, "master", vif.bridge)


async def _link_exists(name: str, netns: str | None) -> bool:
    if netns is None:
        return Path(f"/sys/class/net/{name}").exists()
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "-n",
        netns,
        "link",
        "show",
        name,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait() == 0


async def _unplug_tap(name: str, netns: str | None = None) -> None:
    if await _link_exists(name, netns):
        await _run(*(["ip", "-n", netns] if netns else ["ip"]), "link", "del", name)


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")


def _cpu_time_ns(pid: int | None) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
    except (FileNotFoundError, IndexError, ValueError, TypeError):
        return 0
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _host_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def _shell_quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def _any_probe_kernel() -> Path | None:
    """A Linux kernel to probe KVM with: the cached test guest's, else the host's."""
    cached = sorted(default_cache_dir().glob("*/vmlinuz"))
    if cached:
        return cached[-1]
    host = sorted(Path("/boot").glob("vmlinuz-*"))
    return host[-1] if host else None
