"""The `file` backend: each volume a raw (sparse) or qcow2 file under <state>/volumes.

Volumes are created with `qemu-img create`, snapshots are full copies made by
`qemu-img convert` (so a snapshot never depends on its volume), clones and
create-from-image are `qemu-img convert` too, and extend is `qemu-img resize`.
Every qemu-img runs as an asyncio subprocess: the event loop never blocks.

Hosts reach a volume through its connection info: in the all-in-one process the
guest opens the file directly (`driver_volume_type: file`); a connector from
another host (`"host"` differing from this one, or `"nbd": true`) gets an NBD
export served by qemu-storage-daemon, one per attachment, stopped on detach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from cumulo.common import limits
from cumulo.volume.drivers.driver import Capacity, DriverError, GiB, VolumeDriver
from cumulo.volume.drivers.nbd import NbdExports

QEMU_IMG_TIMEOUT = 3600.0


async def qemu_img(*args: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    if args[:1] == ("convert",):
        async with limits.conversion_slot():  # [limits] conversions at once
            return await _run_qemu_img(args, timeout)
    return await _run_qemu_img(args, timeout)


async def _run_qemu_img(args: tuple[str, ...], timeout: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
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
        raise DriverError(f"qemu-img {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


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
    ) -> None:
        if volume_format not in ("raw", "qcow2"):
            raise ValueError(f"unsupported volume format {volume_format!r}")
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.format = volume_format
        self.capacity_gb = capacity_gb
        self.host = host or socket.gethostname()
        self.exports = NbdExports(root / ".nbd", nbd_address)

    def path(self, volume_id: str) -> Path:
        return self.root / f"volume-{volume_id}"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.root / f"snapshot-{snapshot_id}"

    async def _convert(self, src: Path, src_format: str, dest: Path, size_gb: int | None) -> None:
        """Copy src into a new dest in this backend's format, grown to size_gb; no partial dest.
        The source is read with a shared lock (-U): an attached volume stays open (and
        locked) in the guest's QEMU or the NBD export, and its snapshot or clone is then
        crash-consistent, as Cinder's forced snapshot of an in-use volume is."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            await qemu_img("convert", "-U", "-f", src_format, "-O", self.format, str(src), str(tmp))
            if size_gb is not None:
                await self._grow(tmp, size_gb)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)

    async def _grow(self, path: Path, size_gb: int) -> None:
        info = await qemu_img("info", "-f", self.format, "--output=json", str(path))
        if json.loads(info)["virtual-size"] < size_gb * GiB:
            await qemu_img("resize", "-f", self.format, str(path), f"{size_gb}G")

    async def create_volume(self, volume_id: str, size_gb: int) -> None:
        await qemu_img("create", "-f", self.format, str(self.path(volume_id)), f"{size_gb}G")

    async def delete_volume(self, volume_id: str) -> None:
        self.path(volume_id).unlink(missing_ok=True)

    async def create_snapshot(self, snapshot_id: str, volume_id: str) -> None:
        await self._convert(
            self.path(volume_id), self.format, self.snapshot_path(snapshot_id), None
        )

    async def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshot_path(snapshot_id).unlink(missing_ok=True)

    async def create_from_snapshot(self, volume_id: str, snapshot_id: str, size_gb: int) -> None:
        src = self.snapshot_path(snapshot_id)
        await self._convert(src, self.format, self.path(volume_id), size_gb)

    async def clone_volume(self, volume_id: str, source_id: str, size_gb: int) -> None:
        await self._convert(self.path(source_id), self.format, self.path(volume_id), size_gb)

    async def copy_image_to_volume(
        self, volume_id: str, image_file: Path, image_format: str, size_gb: int
    ) -> None:
        await self._convert(image_file, image_format, self.path(volume_id), size_gb)

    async def copy_volume_to_image(self, volume_id: str, dest: Path, disk_format: str) -> None:
        await qemu_img(
            "convert", "-U", "-f", self.format, "-O", disk_format, str(self.path(volume_id)),
            str(dest),
        )  # fmt: skip

    async def extend_volume(self, volume_id: str, new_size_gb: int) -> None:
        path = self.path(volume_id)

        async def grow() -> None:
            await qemu_img("resize", "-f", self.format, str(path), f"{new_size_gb}G")

        exports = self.exports.exporting(path)
        if exports:  # attached over NBD: the daemon holds the file's lock
            await self.exports.regrow(exports[0], grow)
            return
        await grow()

    async def initialize_connection(
        self, volume_id: str, attachment_id: str, connector: dict[str, Any], mode: str
    ) -> dict[str, Any]:
        path = self.path(volume_id)
        if not path.exists():
            raise DriverError(f"volume {volume_id} has no data on this backend")
        base = {"volume_id": volume_id, "access_mode": mode, "format": self.format}
        remote = connector.get("host") not in (None, "", self.host)
        if connector.get("nbd") or remote:
            export = await self.exports.start(attachment_id, path, self.format, mode == "ro")
            # The daemon serves the guest-visible disk: the client reads it as raw.
            return {"driver_volume_type": "nbd", "data": {**base, "format": "raw", **export}}
        return {"driver_volume_type": "file", "data": {**base, "path": str(path)}}

    async def terminate_connection(self, volume_id: str, attachment_id: str) -> None:
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

    async def close(self) -> None:
        await self.exports.close()
