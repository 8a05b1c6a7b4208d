"""The `file` backend: each volume a raw (sparse) or qcow2 file under <state>/volumes.

Volumes are created with `qemu-img create`, snapshots are full copies made by
`qemu-img convert` (so a snapshot never depends on its volume), clones and
create-from-image are `qemu-img convert` too, and extend is `qemu-img resize`.
Every qemu-img runs as an asyncio subprocess: the event loop never blocks.

Hosts reach a volume through its connection info: in the all-in-one process the
guest opens the file directly (`driver_volume_type: file`); a connector from
another host (`"host"` differing from this one, or `"nbd": true`) gets an NBD
export served by qemu-storage-daemon, one per attachment, stopped on detach. A backend
whose target_protocol is iscsi gives every host an iSCSI target through tgtd instead
(`driver_volume_type: iscsi`, CHAP, see tgt.py), as Cinder's LVM driver with tgtadm.

Names: `volume-<id>` and `snapshot-<id>` are the backend's own (data no volume or
snapshot owns is removed when its manager starts). Unmanage renames the data to
`unmanaged-volume-<id>` / `unmanaged-snapshot-<id>` (as Pure's driver marks what it
lets go of), so it stays; any other file in the directory is foreign data that
manage (`{"source-name": <file name>}`) adopts, renaming it to the new volume's
name as Cinder's LVM driver renames the logical volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from cumulo.common import limits
from cumulo.volume.drivers.driver import (
    BackendObject,
    Capacity,
    DriverError,
    GiB,
    InvalidReference,
    VolumeDriver,
)
from cumulo.volume.drivers.nbd import NbdExports
from cumulo.volume.drivers.tgt import (
    IscsiExports,
    check_initiator,
    image_opts,
    migration_initiator,
)
from cumulo.volume.encryption import (
    LUKS2_HEADER,
    Encryption,
    cryptsetup_format_args,
    payload_offset,
    secret_file,
)

QEMU_IMG_TIMEOUT = 3600.0


async def qemu_img(*args: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    if args[:1] == ("convert",):
        async with limits.conversion_slot():  # [limits] conversions at once
            return await _run_qemu_img(args, timeout)
    return await _run_qemu_img(args, timeout)


async def _run_qemu_img(args: tuple[str, ...], timeout: float) -> str:
    return await run_tool("qemu-img", *args, timeout=timeout)


async def run_tool(tool: str, *args: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    proc = await asyncio.create_subprocess_exec(
        tool,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise DriverError(f"{tool} {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


def _sparse_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)


def _fit_payload(path: Path, size_gb: int) -> None:
    """A new container's file cut to its header and a payload of exactly size_gb."""
    os.truncate(path, payload_offset(path) + size_gb * GiB)


def _grow_payload(path: Path, size_gb: int) -> None:
    """A LUKS container's payload runs to the end of the file: grown by growing the file
    (never shrunk)."""
    wanted = payload_offset(path) + size_gb * GiB
    if path.stat().st_size < wanted:
        os.truncate(path, wanted)


class FileDriver(VolumeDriver):
    name = "file"

    def __init__(
        self,
        root: Path,
        *,
        volume_format: str = "raw",
        capacity_gb: int = 0,
        host: str = "",
        nbd_address: str = "127.0.0.1",
        iscsi: IscsiExports | None = None,
    ) -> None:
        if volume_format not in ("raw", "qcow2"):
            raise ValueError(f"unsupported volume format {volume_format!r}")
        if iscsi is not None and volume_format != "raw":
            raise ValueError("an iSCSI target serves a file's bytes: volume_format must be raw")
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.format = volume_format
        self.capacity_gb = capacity_gb
        self.host = host or socket.gethostname()
        self.exports = NbdExports(root / ".nbd", nbd_address)
        # Every connection an iSCSI target (target_protocol iscsi), else file/NBD.
        self.iscsi = iscsi
        if iscsi is not None:
            self.storage_protocol = "iSCSI"

    def path(self, volume_id: str) -> Path:
        return self.root / f"volume-{volume_id}"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.root / f"snapshot-{snapshot_id}"

    async def _convert(
        self,
        src: Path,
        src_format: str,
        dest: Path,
        size_gb: int | None,
        encryption: Encryption | None = None,
    ) -> None:
        """Copy src into a new dest in this backend's format, grown to size_gb; no partial dest.
        The source is read with a shared lock (-U): an attached volume stays open (and
        locked) in the guest's QEMU or the NBD export, and its snapshot or clone is then
        crash-consistent, as Cinder's forced snapshot of an in-use volume is. Encrypted:
        src is a LUKS container (raw on this backend), copied byte for byte (the copy
        opens with the same passphrase), its payload grown to size_gb."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            if encryption is not None:
                await qemu_img("convert", "-U", "-f", src_format, "-O", "raw", str(src), str(tmp))
                if size_gb is not None:
                    await asyncio.to_thread(_grow_payload, tmp, size_gb)
            else:
                await qemu_img(
                    "convert", "-U", "-f", src_format, "-O", self.format, str(src), str(tmp)
                )
                if size_gb is not None:
                    await self._grow(tmp, size_gb)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    async def _format_luks(
        self, dest: Path, size_gb: int, encryption: Encryption, image: tuple[Path, str] | None
    ) -> None:
        """A new LUKS container at dest with a payload of size_gb (holding the image, in
        its format, when given); no partial dest. cryptsetup formats it (both versions):
        qemu-img's LUKS1 creation times its PBKDF on the thread's CPU clock, which fails
        now and then on a fast or busy host ("Unable to get accurate CPU usage"), and
        cryptsetup takes a fixed iteration count. QEMU's LUKS driver then writes the
        image through the container."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            if image is not None and encryption.provider == "luks2":
                raise DriverError(
                    "an image cannot be written into a LUKS2 volume here: only dm-crypt "
                    "opens LUKS2, and this host has no device-mapper"
                )
            with secret_file(self.root / ".keys", encryption.passphrase) as key:
                await asyncio.to_thread(_sparse_file, tmp, LUKS2_HEADER + size_gb * GiB)
                await run_tool(*cryptsetup_format_args(encryption, key, tmp))
                await asyncio.to_thread(_fit_payload, tmp, size_gb)
                if image is not None:
                    src, src_format = image
                    await qemu_img(
                        "convert", "-n", "--object", f"secret,id=sec0,file={key},format=raw",
                        "-f", src_format, str(src), "--target-image-opts",
                        f"driver=luks,key-secret=sec0,file.driver=file,file.filename={tmp}",
                    )  # fmt: skip
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    async def _grow(self, path: Path, size_gb: int) -> None:
        info = await qemu_img("info", "-f", self.format, "--output=json", str(path))
        if json.loads(info)["virtual-size"] < size_gb * GiB:
            await qemu_img("resize", "-f", self.format, str(path), f"{size_gb}G")

    async def create_volume(
        self, volume_id: str, size_gb: int, encryption: Encryption | None = None
    ) -> None:
        if encryption is not None and not encryption.passphrase:
            # Filled with a container's bytes later (a migration's new volume): room for
            # the largest header; fit_container cuts it to the container's once copied.
            await asyncio.to_thread(
                _sparse_file, self.path(volume_id), LUKS2_HEADER + size_gb * GiB
            )
        elif encryption is not None:
            await self._format_luks(self.path(volume_id), size_gb, encryption, None)
        else:
            await qemu_img("create", "-f", self.format, str(self.path(volume_id)), f"{size_gb}G")

    async def delete_volume(self, volume_id: str) -> None:
        if self.iscsi is not None:
            await self.iscsi.remove(volume_id)
        self.path(volume_id).unlink(missing_ok=True)

    async def create_snapshot(
        self, snapshot_id: str, volume_id: str, encryption: Encryption | None = None
    ) -> None:
        await self._convert(
            self.path(volume_id), self._format_of(encryption), self.snapshot_path(snapshot_id),
            None, encryption,
        )  # fmt: skip

    async def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshot_path(snapshot_id).unlink(missing_ok=True)

    async def create_from_snapshot(
        self, volume_id: str, snapshot_id: str, size_gb: int, encryption: Encryption | None = None
    ) -> None:
        src = self.snapshot_path(snapshot_id)
        fmt = self._format_of(encryption)
        await self._convert(src, fmt, self.path(volume_id), size_gb, encryption)

    async def clone_volume(
        self, volume_id: str, source_id: str, size_gb: int, encryption: Encryption | None = None
    ) -> None:
        await self._convert(
            self.path(source_id), self._format_of(encryption), self.path(volume_id), size_gb,
            encryption,
        )  # fmt: skip

    async def copy_image_to_volume(
        self,
        volume_id: str,
        image_file: Path,
        image_format: str,
        size_gb: int,
        encryption: Encryption | None = None,
    ) -> None:
        if encryption is not None:
            image = (image_file, image_format)
            await self._format_luks(self.path(volume_id), size_gb, encryption, image)
            return
        await self._convert(image_file, image_format, self.path(volume_id), size_gb)

    def _format_of(self, encryption: Encryption | None) -> str:
        """How a volume's file is kept: a LUKS container is raw on either kind of backend."""
        return "raw" if encryption is not None else self.format

    async def copy_container_to_volume(
        self, volume_id: str, container: Path, container_format: str, size_gb: int
    ) -> None:
        dest = self.path(volume_id)
        tmp = dest.with_name(dest.name + ".part")
        try:
            await qemu_img(
                "convert", "-f", container_format, "-O", "raw", str(container), str(tmp)
            )  # fmt: skip
            payload = tmp.stat().st_size - await asyncio.to_thread(payload_offset, tmp)
            if payload > size_gb * GiB:
                raise DriverError(f"the container's payload does not fit in {size_gb} GiB")
            await asyncio.to_thread(_grow_payload, tmp, size_gb)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    async def copy_volume_to_image(
        self,
        volume_id: str,
        dest: Path,
        disk_format: str,
        encryption: Encryption | None = None,
    ) -> None:
        await qemu_img(
            "convert", "-U", "-f", self._format_of(encryption), "-O", disk_format,
            str(self.path(volume_id)), str(dest),
        )  # fmt: skip

    async def fit_container(self, volume_id: str, size_gb: int) -> None:
        await asyncio.to_thread(_fit_payload, self.path(volume_id), size_gb)

    async def extend_volume(
        self, volume_id: str, new_size_gb: int, encryption: Encryption | None = None
    ) -> None:
        path = self.path(volume_id)

        async def grow() -> None:
            if encryption is not None:  # the payload runs to the container's end
                await asyncio.to_thread(_grow_payload, path, new_size_gb)
                return
            await qemu_img("resize", "-f", self.format, str(path), f"{new_size_gb}G")

        if self.iscsi is not None and self.iscsi.exporting(volume_id):
            await self.iscsi.regrow(volume_id, path, grow)
            return
        exports = self.exports.exporting(path)
        if exports:  # attached over NBD: the daemon holds the file's lock
            await self.exports.regrow(exports[0], grow)
            return
        await grow()

    async def initialize_connection(
        self,
        volume_id: str,
        attachment_id: str,
        connector: dict[str, Any],
        mode: str,
        encryption: Encryption | None = None,
    ) -> dict[str, Any]:
        path = self.path(volume_id)
        if not path.exists():
            raise DriverError(f"volume {volume_id} has no data on this backend")
        base: dict[str, Any] = {"volume_id": volume_id, "access_mode": mode, "format": self.format}
        if encryption is not None:
            # The host opens the container itself: it is served as the bytes it is.
            base |= {"format": "luks", "encrypted": True}
        if self.iscsi is not None:
            initiator = check_initiator(connector)
            target = await self.iscsi.connect(volume_id, path, attachment_id, initiator)
            return {"driver_volume_type": "iscsi", "data": {**base, **target}}
        remote = connector.get("host") not in (None, "", self.host)
        if connector.get("nbd") or remote:
            served = "raw" if encryption is not None else self.format
            export = await self.exports.start(attachment_id, path, served, mode == "ro")
            # The daemon serves the guest-visible disk (or the container): the client
            # reads it as raw (or opens the container).
            client_format = "luks" if encryption is not None else "raw"
            return {
                "driver_volume_type": "nbd",
                "data": {**base, "format": client_format, **export},
            }
        return {"driver_volume_type": "file", "data": {**base, "path": str(path)}}

    async def terminate_connection(self, volume_id: str, attachment_id: str) -> None:
        if self.iscsi is not None:
            await self.iscsi.disconnect(volume_id, attachment_id)
        await self.exports.stop(attachment_id)

    async def capacity(self) -> Capacity:
        usage = await asyncio.to_thread(shutil.disk_usage, self.root)
        total = self.capacity_gb or usage.total / GiB
        allocated = await asyncio.to_thread(self._allocated_bytes)
        free = min(usage.free / GiB, max(total - allocated / GiB, 0.0))
        return Capacity(round(total, 2), round(free, 2))

    def _allocated_bytes(self) -> int:
        total = 0
        for entry in os.scandir(self.root):
            try:
                if entry.is_file():
                    total += entry.stat().st_blocks * 512
            except FileNotFoundError:
                continue  # deleted while counted
        return total

    def volume_files(self) -> set[str]:
        return {e.name for e in os.scandir(self.root) if e.is_file()}

    # -- migration ---------------------------------------------------------------

    async def copy_volume_to(
        self, volume_id: str, connection: dict[str, Any], encryption: Encryption | None = None
    ) -> None:
        """qemu-img writes every block of the volume into the destination, opened as its
        connection info says: the file itself on this host, else its NBD export. An
        encrypted volume's container goes as the bytes it is into the destination's
        (which the destination then fits: see fit_container)."""
        data = connection.get("data") or {}
        if connection.get("driver_volume_type") == "iscsi":
            await self._copy_to_iscsi(volume_id, data, encryption)
            return
        if connection.get("driver_volume_type") == "file":
            target, fmt = data["path"], data.get("format") or "raw"
        elif connection.get("driver_volume_type") == "nbd":
            target, fmt = data["uri"], "raw"
        else:
            raise DriverError(f"cannot write to a {connection.get('driver_volume_type')} volume")
        if encryption is not None or data.get("encrypted"):
            if encryption is None or not data.get("encrypted"):
                raise DriverError("an encrypted volume moves only into another encrypted one")
            fmt = "raw"  # the container's bytes, not what it holds
        await qemu_img(
            "convert", "-U", "-n", "--target-is-zero", "-f", self._format_of(encryption),
            "-O", fmt, str(self.path(volume_id)), target,
        )  # fmt: skip

    async def _copy_to_iscsi(
        self, volume_id: str, data: dict[str, Any], encryption: Encryption | None
    ) -> None:
        """qemu-img writes the volume into an iSCSI volume through libiscsi, as the
        migration's initiator, with the CHAP password in a 0600 file (never in argv)."""
        if bool(encryption) != bool(data.get("encrypted")):
            raise DriverError("an encrypted volume moves only into another encrypted one")
        with secret_file(self.root / ".keys", str(data.get("auth_password") or "")) as key:
            await qemu_img(
                "convert", "-U", "-n", "--target-is-zero", "-f", self._format_of(encryption),
                "--object", f"secret,id=chap0,file={key},format=raw",
                str(self.path(volume_id)),
                "--target-image-opts", image_opts(data, migration_initiator(self.host), "chap0"),
            )  # fmt: skip

    async def rename_migrated_volume(self, new_volume_id: str, original_id: str) -> None:
        src, dest = self.path(new_volume_id), self.path(original_id)
        if dest.exists():
            raise DriverError(f"{dest.name} already exists on this backend")
        src.rename(dest)
        # An attached volume's export keeps the file open: it serves it by its new name.
        self.exports.renamed(src, dest)

    def moved_connection(self, info: dict[str, Any], volume_id: str) -> dict[str, Any]:
        moved = super().moved_connection(info, volume_id)
        if moved.get("driver_volume_type") == "file":
            moved["data"]["path"] = str(self.path(volume_id))
        return moved

    # -- manage / unmanage -------------------------------------------------------

    @staticmethod
    def _kind(name: str) -> str:
        return "snapshot" if name.startswith(("snapshot-", "unmanaged-snapshot-")) else "volume"

    async def _describe(self, path: Path) -> tuple[dict[str, Any], bool]:
        """qemu-img's description of a file (format probed) and whether a process holds
        it open for writing (QEMU's image lock: a guest or an export has it)."""
        try:
            return json.loads(await qemu_img("info", "--output=json", str(path))), False
        except DriverError as exc:
            if "lock" not in str(exc):
                raise
        return json.loads(await qemu_img("info", "-U", "--output=json", str(path))), True

    async def list_objects(self, kind: str) -> list[BackendObject]:
        found = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not entry.is_file() or entry.name.startswith(".") or entry.name.endswith(".part"):
                continue
            if self._kind(entry.name) != kind:
                continue
            try:
                info, locked = await self._describe(Path(entry.path))
            except (DriverError, FileNotFoundError):
                continue  # gone meanwhile, or not an image qemu-img reads
            in_use = locked or bool(self.exports.exporting(Path(entry.path)))
            size = max(math.ceil(info["virtual-size"] / GiB), 1)
            found.append(BackendObject(entry.name, size, in_use))
        return found

    def _referenced(self, ref: Any) -> Path:
        if not isinstance(ref, dict) or "source-name" not in ref:
            raise InvalidReference(ref, "Reference must contain source-name element.")
        name = ref["source-name"]
        if (
            not isinstance(name, str)
            or not name
            or "/" in name
            or name.startswith(".")
            or name.endswith(".part")
        ):
            raise InvalidReference(ref, "source-name must name a file of the backend.")
        path = self.root / name
        if not path.is_file():
            raise InvalidReference(name, "Specified volume file does not exist.")
        return path

    async def _adoptable_size(self, path: Path) -> int:
        try:
            info, locked = await self._describe(path)
        except DriverError as exc:
            raise InvalidReference(path.name, f"qemu-img cannot read it: {exc}") from None
        if locked or self.exports.exporting(path):
            raise InvalidReference(path.name, "it is in use.")
        if info.get("format") != self.format:
            raise InvalidReference(
                path.name,
                f"it is a {info.get('format')} image and this backend keeps {self.format} ones.",
            )
        if info.get("backing-filename"):
            raise InvalidReference(path.name, "it depends on a backing file.")
        return max(math.ceil(info["virtual-size"] / GiB), 1)

    async def manage_existing_get_size(self, ref: dict[str, Any], kind: str) -> int:
        return await self._adoptable_size(self._referenced(ref))

    async def _adopt(self, ref: dict[str, Any], dest: Path) -> int:
        """The referenced file renamed to dest and grown to whole GiB (the size the
        volume records); renamed back when growing fails."""
        src = self._referenced(ref)
        size = await self._adoptable_size(src)
        if dest.exists():
            raise DriverError(f"{dest.name} already exists on this backend")
        src.rename(dest)
        try:
            await self._grow(dest, size)
        except BaseException:
            dest.rename(src)
            raise
        return size

    async def manage_existing(self, volume_id: str, ref: dict[str, Any]) -> int:
        return await self._adopt(ref, self.path(volume_id))

    async def manage_existing_snapshot(self, snapshot_id: str, ref: dict[str, Any]) -> int:
        return await self._adopt(ref, self.snapshot_path(snapshot_id))

    def _let_go(self, path: Path) -> None:
        if not path.exists():
            return  # never made (a volume in error): nothing to keep
        dest, n = self.root / f"unmanaged-{path.name}", 1
        while dest.exists():
            n += 1
            dest = self.root / f"unmanaged-{path.name}-{n}"
        path.rename(dest)

    async def unmanage(self, volume_id: str) -> None:
        self._let_go(self.path(volume_id))

    async def unmanage_snapshot(self, snapshot_id: str) -> None:
        self._let_go(self.snapshot_path(snapshot_id))

    async def ensure_exports(self) -> None:
        if self.iscsi is not None:
            await self.iscsi.restore()

    async def close(self) -> None:
        await self.exports.close()
