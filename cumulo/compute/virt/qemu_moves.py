"""The QEMU driver's moves: rescue, resize in place, cold migration and live migration
between hosts that share no storage.

- rescue: the guest is started again from a disk of the rescue image (vda) with its
  own root disk attached second (vdb) and a config drive with the rescue password;
  when the rescue image names `hw_rescue_bus` or `hw_rescue_device` (Nova's stable
  device rescue) the guest's disks keep their places and the rescue disk comes last on
  that bus, booted first; unrescue starts it from its own disks again.
- cold migration: the source serves each local disk read-only over NBD (qemu-nbd on
  [compute] migration_address); the destination copies them with qemu-img.
- live migration: the destination starts QEMU paused with `-incoming defer` and its
  empty disks (the root an overlay on its own copy of the image) exported over QEMU's
  NBD server; the source mirrors its local disks there (blockdev-mirror, sync=top: the
  base image is the same on both hosts), migrates the memory once the mirrors are in
  sync, and completes the mirrors while the guest is paused; the destination stops
  its NBD server and lets the guest run.

  The hosts' QEMUs run in their guests' network namespaces (where the taps are), which
  cannot reach each other: the agents make the connections, on [compute]
  migration_address in their own namespace, and hand QEMU the sockets (SCM_RIGHTS over
  QMP, as for NBD volumes): the destination's NBD listener and each stream it accepts,
  the source's connections to them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cumulo.compute.configdrive import build_config_drive
from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt import qemu_tpm
from cumulo.compute.virt.driver import (
    DriverError,
    FlavorSpec,
    GuestSpec,
    VirtualTPM,
    stable_rescue_device,
)

LOG = logging.getLogger(__name__)

# The guest's own disks (copied or mirrored when it moves); volumes and the config
# drive are not: volumes are reached from any host, the config drive is made again.
LOCAL_DISKS = ("root", "eph0", "swap")
GiB = 1024**3
MIGRATION_TIMEOUT = 900.0


def _listen(address: str) -> socket.socket:
    """A listening socket on a free port of `address`, in this process's namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((address, 0))
        sock.listen(8)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _connect(address: str, port: int, what: str) -> socket.socket:
    """A connection from this process's namespace to the destination's `what`."""
    try:
        return await asyncio.to_thread(socket.create_connection, (address, port), 10)
    except OSError as exc:
        where = f"{address}:{port}"
        raise DriverError(f"the destination's {what} {where} does not answer: {exc}") from exc


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


async def _wait_listening(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(address, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise DriverError(f"nothing listens on {address}:{port}") from None
            await asyncio.sleep(0.05)


class QemuMoves:
    """Mixed into QemuDriver."""

    # -- rescue -----------------------------------------------------------------------

    async def rescue(self, uuid: str, rescue: GuestSpec) -> None:
        image = rescue.image
        if image is None or not image.path:
            raise DriverError("a rescue needs an image with a disk")
        try:
            stable = stable_rescue_device(image.properties)
        except ValueError as exc:
            raise DriverError(str(exc)) from None
        # The rescue image's firmware, as Nova builds the rescue guest from that image; a
        # UEFI one uses the guest's own variable store (made when it has none).
        firmware = qp.firmware_type(image.properties)
        async with self._lock(uuid):
            record = self._load(uuid)
            if record.get("rescue"):
                raise DriverError(f"guest {uuid} is already rescued")
            directory = self._dir(uuid)
            if self._alive(uuid):
                await self._hard_stop(uuid)
            disk = directory / "disk.rescue"
            base_format = "qcow2" if image.disk_format == "qcow2" else "raw"
            await qp.qemu_img(
                "create", "-f", "qcow2", "-F", base_format,
                "-b", str(Path(image.path).resolve()), str(disk),
            )  # fmt: skip
            machine = dict(record["machine"])
            drives = [d for d in machine["drives"] if d["node"] != "config"]
            rescue_drive = qp.Drive("rescue", str(disk), "qcow2", slot=qp.DISK_SLOTS["rescue"])
            if stable:
                # Nova's stable device rescue: the guest's disks stay where they are and
                # the rescue disk comes last, on the image's bus, booted first.
                # (A kernel booted directly holds boot index 0 already.)
                bus, media = stable
                first = None if image.kernel_path else 0
                rescue_drive = replace(
                    rescue_drive,
                    bus=bus,
                    media=media,
                    bootindex=first,
                    slot=qp.slot_after_disks(record) if bus == "virtio" else None,
                )
                rescue_drives = [*drives, dict(rescue_drive.__dict__)]
            else:  # the rescue disk first, the guest's own disks after it
                rescue_drives = [dict(rescue_drive.__dict__), *drives]
            if rescue.config_drive is not None:
                iso = directory / "disk.config.rescue"
                await asyncio.to_thread(build_config_drive, rescue.config_drive, iso)
                drive = qp.Drive(
                    "config",
                    str(iso),
                    "raw",
                    read_only=True,
                    serial="config-2",
                    slot=qp.DISK_SLOTS["config"],
                )
                at = len(drives) if stable else len(rescue_drives)
                rescue_drives.insert(at, dict(drive.__dict__))
            machine["drives"] = rescue_drives
            machine["firmware"] = firmware
            if image.kernel_path:
                machine["kernel"] = image.kernel_path
                machine["initrd"] = image.ramdisk_path
            record["rescue"] = {"machine": machine}
            self._save(uuid, record)
            try:
                await self._start(uuid, record)
            except BaseException:
                del record["rescue"]
                self._save(uuid, record)
                disk.unlink(missing_ok=True)
                raise

    async def unrescue(self, uuid: str) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            if not record.get("rescue"):
                raise DriverError(f"guest {uuid} is not rescued")
            if self._alive(uuid):
                await self._hard_stop(uuid)
            del record["rescue"]
            self._save(uuid, record)
            for name in ("disk.rescue", "disk.config.rescue"):
                (self._dir(uuid) / name).unlink(missing_ok=True)
            await self._start(uuid, record)

    # -- resize in place ----------------------------------------------------------------

    async def resize(self, uuid: str, flavor: FlavorSpec, vtpm: VirtualTPM | None = None) -> None:
        """A stopped guest gets the flavor's vCPUs and memory and a root disk grown to
        it, and the TPM `vtpm` (its state kept when the version and model stay, else
        made afresh, as Nova's libvirt driver does); the old disk and machine are kept
        until confirm (revert puts them back)."""
        async with self._lock(uuid):
            record = self._load(uuid)
            if self._alive(uuid):
                raise DriverError(f"guest {uuid} must be stopped to be resized")
            root = next((d for d in record["machine"]["drives"] if d["node"] == "root"), None)
            backup = {"machine": copy.deepcopy(record["machine"])}
            if root is not None:
                kept = str(self._dir(uuid) / "disk.resize-backup")
                await asyncio.to_thread(shutil.copyfile, root["path"], kept)
                backup["root"] = kept
                if flavor.root_gb:
                    info = json.loads(await qp.qemu_img("info", "--output=json", root["path"]))
                    if info["virtual-size"] < flavor.root_gb * GiB:
                        await qp.qemu_img("resize", root["path"], f"{flavor.root_gb}G")
            record["machine"]["vcpus"] = flavor.vcpus
            record["machine"]["memory_mb"] = flavor.memory_mb
            self._resize_tpm(uuid, record["machine"], vtpm, backup)
            record["before_resize"] = backup
            self._save(uuid, record)

    async def confirm_resize(self, uuid: str) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            backup = record.pop("before_resize", None) or {}
            if backup.get("root"):
                Path(backup["root"]).unlink(missing_ok=True)
            self._save(uuid, record)

    async def revert_resize(self, uuid: str) -> None:
        async with self._lock(uuid):
            record = self._load(uuid)
            backup = record.get("before_resize")
            if not backup:
                raise DriverError(f"guest {uuid} has no resize to revert")
            if self._alive(uuid):
                raise DriverError(f"guest {uuid} must be stopped to revert its resize")
            if backup.get("root"):
                root = next(d for d in backup["machine"]["drives"] if d["node"] == "root")
                await asyncio.to_thread(shutil.move, backup["root"], root["path"])
            if backup.get("tpm_state"):  # the old TPM's state, set aside by the resize
                qemu_tpm.drop_state(self._dir(uuid))
                qemu_tpm.import_state(self._dir(uuid), backup["tpm_state"])
            if backup.get("tpm_security"):  # kept where the old policy keeps it
                passphrase = self._tpm_passphrase(uuid)
                if passphrase is not None:
                    self._keep_tpm_passphrase(uuid, backup["tpm_security"], passphrase)
            record["machine"] = backup["machine"]
            del record["before_resize"]
            self._save(uuid, record)

    def _resize_tpm(
        self,
        uuid: str,
        machine: dict[str, Any],
        vtpm: VirtualTPM | None,
        backup: dict[str, Any],
    ) -> None:
        """The machine's TPM as the new flavor has it; what revert needs in `backup`."""
        old = (machine.get("tpm_version"), machine.get("tpm_model"))
        new = (vtpm.version, vtpm.model) if vtpm else (None, None)
        if old[0] and old != new:  # another TPM (or none): its state starts afresh
            backup["tpm_state"] = qemu_tpm.export_state(self._dir(uuid))
            qemu_tpm.drop_state(self._dir(uuid))
        if old[0]:  # the secret stays the same: only where its policy keeps it may change
            backup["tpm_security"] = "user" if uuid in self._tpm_passphrases else "host"
        machine["tpm_version"], machine["tpm_model"] = new
        if vtpm is not None:
            self._keep_tpm_passphrase(uuid, vtpm.security, vtpm.passphrase)

    # -- cold migration ---------------------------------------------------------------

    async def migrate_disk_and_power_off(self, uuid: str) -> dict[str, Any]:
        await self.power_off(uuid, timeout=30)
        async with self._lock(uuid):
            record = self._load(uuid)
            address = self.migration_address
            # swap is made afresh on the destination; a UEFI guest's variables go along.
            files = [
                (drive["node"], drive["path"], drive["format"])
                for drive in record["machine"]["drives"]
                if drive["node"] in LOCAL_DISKS and drive["node"] != "swap"
            ]
            nvram = self._dir(uuid) / qp.NVRAM
            if record["machine"].get("firmware") == "uefi" and nvram.exists():
                files.append(("nvram", str(nvram), "raw"))
            disks, processes = {}, []
            try:
                for node, path, file_format in files:
                    port = _free_port(address)
                    processes.append(
                        await asyncio.create_subprocess_exec(
                            "qemu-nbd", "--read-only", "--persistent", "--shared=2",
                            f"--format={file_format}", f"--bind={address}",
                            f"--port={port}", f"--export-name={node}", path,
                            stdout=asyncio.subprocess.DEVNULL,
                            stderr=asyncio.subprocess.DEVNULL,
                        )
                    )  # fmt: skip
                    await _wait_listening(address, port)
                    disks[node] = f"nbd://{address}:{port}/{node}"
            except BaseException:
                await _stop_all(processes)
                raise
            self._exports[uuid] = processes
            # The TPM's state (a few KiB, encrypted with the secret's passphrase) goes
            # along with what its TPM was.
            machine = record["machine"]
            tpm = {
                "version": machine.get("tpm_version"),
                "model": machine.get("tpm_model"),
                "state": qemu_tpm.export_state(self._dir(uuid)),
            }
            return {"disks": disks, "tpm": tpm if tpm["version"] else None}

    async def end_disk_export(self, uuid: str) -> None:
        await _stop_all(self._exports.pop(uuid, []))

    async def finish_migration(
        self, guest: GuestSpec, disk_info: dict[str, Any], power_on: bool
    ) -> None:
        directory = self._dir(guest.uuid)
        if (directory / "guest.json").exists():
            raise DriverError(f"guest {guest.uuid} already exists on {self.host}")
        if self.accel is None:
            await self._choose_accel()
        async with self._lock(guest.uuid):
            directory.mkdir(parents=True, exist_ok=True)
            try:
                machine = await self._prepare(guest, directory, copied=disk_info["disks"])
                tpm = disk_info.get("tpm") or {}
                same = (tpm.get("version"), tpm.get("model"))
                if machine.tpm_version and same == (machine.tpm_version, machine.tpm_model):
                    qemu_tpm.import_state(directory, tpm.get("state") or {})
                record = await self._record_and_plug(machine, guest)
                if power_on:
                    await self._start(guest.uuid, record)
            except BaseException:
                await self._remove(guest.uuid)
                raise

    # -- live migration ---------------------------------------------------------------

    async def live_migration_source(self, uuid: str) -> dict[str, Any]:
        """The slots of the guest's volumes and NICs here (hot-plugged ones where they
        were put): the incoming machine has each device at the same address."""
        record = self._load(uuid)
        slots = {
            volume_id: drive["slot"]
            for volume_id, drive in record["volumes"].items()
            if drive.get("slot") is not None
        }
        slots |= {nic["tap"]: nic["slot"] for nic in record["machine"]["nics"]}
        return {"slots": slots}

    async def pre_live_migration(
        self, guest: GuestSpec, block_migration: bool, source: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The incoming guest, paused, its volumes opened through this host's own
        attachments (Block Storage's volumes are reached from any host: not copied)."""
        placed = (source or {}).get("slots") or {}
        directory = self._dir(guest.uuid)
        if (directory / "guest.json").exists():
            raise DriverError(f"guest {guest.uuid} already exists on {self.host}")
        if self.accel is None:
            await self._choose_accel()
        address = self.migration_address
        async with self._lock(guest.uuid):
            directory.mkdir(parents=True, exist_ok=True)
            try:
                machine = await self._prepare(guest, directory, placed=placed)
                record = await self._record_and_plug(machine, guest, placed)
                listener = _listen(address)
                try:
                    await self._start(guest.uuid, record, incoming="defer", paused=True)
                except BaseException:
                    listener.close()
                    raise
                port = listener.getsockname()[1]
                self._incoming[guest.uuid] = asyncio.create_task(
                    self._accept_migration(guest.uuid, listener)
                )
                data: dict[str, Any] = {"uri": f"tcp:{address}:{port}", "disks": []}
                if block_migration:
                    with _listen(address) as nbd:
                        nbd_port = nbd.getsockname()[1]
                        async with qp.qmp_session(directory, guest.uuid) as qmp:
                            await qmp.pass_fd(nbd.fileno(), "mig-nbd")
                            # nbd-server-start takes the legacy (nested) form of the address.
                            addr = {"type": "fd", "data": {"str": "mig-nbd"}}
                            await qmp.execute("nbd-server-start", {"addr": addr})
                    server = {"type": "inet", "host": address, "port": str(nbd_port)}
                    for drive in machine.drives:
                        if drive.node not in LOCAL_DISKS:
                            continue
                        await self._qmp(
                            guest.uuid,
                            "block-export-add",
                            {
                                "type": "nbd",
                                "id": f"mig-{drive.node}",
                                "node-name": drive.node,
                                "name": drive.node,
                                "writable": True,
                            },
                        )
                        data["disks"].append(drive.node)
                    data["nbd"] = server
                return data
            except BaseException:
                await self._remove(guest.uuid)
                raise

    async def _accept_migration(self, uuid: str, listener: socket.socket) -> None:
        """The source's migration stream, accepted here and handed to the guest's QEMU."""
        try:
            with listener:
                conn, _ = await asyncio.get_running_loop().sock_accept(listener)
            with conn:
                async with qp.qmp_session(self._dir(uuid), uuid) as qmp:
                    await qmp.pass_fd(conn.fileno(), "migration")
                    await qmp.execute("migrate-incoming", {"uri": "fd:migration"})
        except DriverError as exc:  # the source's migration fails: its stream is closed
            LOG.warning("incoming live migration of %s: %s", uuid, exc)

    async def live_migrate(
        self,
        uuid: str,
        migrate_data: dict[str, Any],
        block_migration: bool,
        progress: Callable[[dict[str, int]], Awaitable[None]],
    ) -> dict[str, Any]:
        async with self._lock(uuid):
            record = self._load(uuid)
            local = [d for d in record["machine"]["drives"] if d["node"] in LOCAL_DISKS]
            if local and not block_migration:
                raise DriverError(
                    "this guest has local disks and the hosts share no storage: "
                    "live-migrate it with block_migration true (or auto)"
                )
            running = (await self._qmp(uuid, "query-status"))["status"] == "running"
            self._migration_requests.pop(uuid, None)
            jobs = []
            try:
                for node in migrate_data.get("disks", []):
                    await self._mirror(uuid, node, migrate_data["nbd"])
                    jobs.append(f"mirror-{node}")
                await self._wait_mirrors_ready(uuid, jobs, progress)
                address, _, port = migrate_data["uri"].removeprefix("tcp:").rpartition(":")
                with await _connect(address, int(port), "migration listener") as sock:
                    async with qp.qmp_session(self._dir(uuid), uuid) as qmp:
                        await qmp.pass_fd(sock.fileno(), "migration")
                        await qmp.execute("migrate", {"uri": "fd:migration"})
                await self._wait_migrated(uuid, progress)
                for job in jobs:  # ready mirrors complete on cancel: the guest is paused
                    await self._qmp(uuid, "block-job-cancel", {"device": job})
                await self._wait_jobs_gone(uuid, jobs)
                await self._drop_targets(uuid, jobs)
            except BaseException:
                await self._undo_mirrors(uuid, jobs)
                if running and self._alive(uuid):
                    await self._qmp(uuid, "cont")
                raise
            return {"running": running}

    async def _mirror(self, uuid: str, node: str, server: dict[str, Any]) -> None:
        target = f"mig-{node}"
        with await _connect(server["host"], int(server["port"]), "disk export") as sock:
            async with qp.qmp_session(self._dir(uuid), uuid) as qmp:
                await qmp.pass_fd(sock.fileno(), target)
                nbd = {"type": "fd", "str": target}
                await qmp.execute(
                    "blockdev-add",
                    {
                        "node-name": target,
                        "driver": "raw",
                        "file": {"driver": "nbd", "server": nbd, "export": node},
                    },
                )
        await self._qmp(
            uuid,
            "blockdev-mirror",
            {"job-id": f"mirror-{node}", "device": node, "target": target, "sync": "top"},
        )

    async def _wait_mirrors_ready(self, uuid, jobs, progress) -> None:
        deadline = time.monotonic() + MIGRATION_TIMEOUT
        while jobs:
            self._check_abort(uuid)
            states = {j["device"]: j for j in await self._qmp(uuid, "query-block-jobs")}
            missing = [job for job in jobs if job not in states]
            if missing:
                raise DriverError(f"disk mirror {missing[0]} of {uuid} stopped")
            total = sum(states[j]["len"] for j in jobs)
            done = sum(states[j]["offset"] for j in jobs)
            await progress(
                {"disk_total": total, "disk_processed": done, "disk_remaining": total - done}
            )
            if all(states[j].get("ready") for j in jobs):
                return
            if time.monotonic() > deadline:
                raise DriverError(f"the disks of {uuid} did not get in sync")
            await asyncio.sleep(0.2)

    async def _wait_migrated(self, uuid, progress) -> None:
        deadline = time.monotonic() + MIGRATION_TIMEOUT
        while True:
            request = self._migration_requests.pop(uuid, None)
            if request == "abort":
                await self._qmp(uuid, "migrate_cancel")
                raise DriverError(f"live migration of {uuid} was aborted")
            if request == "force_complete":
                await self._qmp(uuid, "stop")  # a paused guest dirties no memory: it converges
            info = await self._qmp(uuid, "query-migrate")
            ram = info.get("ram") or {}
            if ram:
                await progress(
                    {
                        "memory_total": ram.get("total", 0),
                        "memory_processed": ram.get("transferred", 0),
                        "memory_remaining": ram.get("remaining", 0),
                    }
                )
            status = info.get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise DriverError(
                    f"live migration of {uuid} {status}: {info.get('error-desc', '')}"
                )
            await asyncio.sleep(0.2)

    async def _wait_jobs_gone(self, uuid: str, jobs: list[str]) -> None:
        deadline = time.monotonic() + 60
        while {j["device"] for j in await self._qmp(uuid, "query-block-jobs")} & set(jobs):
            if time.monotonic() > deadline:
                raise DriverError(f"the disk mirrors of {uuid} did not complete")
            await asyncio.sleep(0.1)

    async def _undo_mirrors(self, uuid: str, jobs: list[str]) -> None:
        if not self._alive(uuid):
            return
        for job in jobs:
            try:
                await self._qmp(uuid, "block-job-cancel", {"device": job, "force": True})
            except DriverError:
                pass
        try:
            await self._wait_jobs_gone(uuid, jobs)
        except DriverError:
            pass
        await self._drop_targets(uuid, jobs)

    async def _drop_targets(self, uuid: str, jobs: list[str]) -> None:
        """Close the NBD connections to the destination's exports (its server can stop)."""
        for job in jobs:
            try:
                await self._qmp(uuid, "blockdev-del", {"node-name": f"mig-{job[len('mirror-') :]}"})
            except DriverError:
                pass

    def _check_abort(self, uuid: str) -> None:
        if self._migration_requests.get(uuid) == "abort":
            self._migration_requests.pop(uuid, None)
            raise DriverError(f"live migration of {uuid} was aborted")

    async def post_live_migration_at_destination(self, uuid: str, result: dict[str, Any]) -> None:
        self._incoming.pop(uuid, None)  # the stream was accepted: the guest is here
        async with self._lock(uuid):
            deadline = time.monotonic() + 120
            while (await self._qmp(uuid, "query-status"))["status"] == "inmigrate":
                if time.monotonic() > deadline:
                    raise DriverError(f"the incoming guest {uuid} never finished loading")
                await asyncio.sleep(0.1)
            exports = await self._qmp(uuid, "query-block-exports")
            for export in exports:
                await self._qmp(uuid, "block-export-del", {"id": export["id"], "mode": "hard"})
            if exports:
                await self._qmp(uuid, "nbd-server-stop")
            if result.get("running"):
                await self._qmp(uuid, "cont")

    async def post_live_migration_at_source(self, uuid: str) -> None:
        await self.destroy(uuid)

    async def live_migration_force_complete(self, uuid: str) -> None:
        self._migration_requests[uuid] = "force_complete"

    async def live_migration_abort(self, uuid: str) -> None:
        self._migration_requests[uuid] = "abort"


async def _stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    for proc in processes:
        if proc.returncode is None:
            proc.terminate()
    for proc in processes:
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
