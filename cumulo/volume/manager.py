"""The volume manager: the slow work behind the API, run on the storage host.

Each job moves its row from the transitional status the API wrote to the final
one with a compare-and-swap, and cleans up after itself on failure: a create
that fails leaves no data on the backend and the volume `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from sqlalchemy import delete, update

from cumulo.common.db import Database, utcnow
from cumulo.common.service_client import ServiceClient
from cumulo.volume import states
from cumulo.volume.drivers.driver import VolumeDriver
from cumulo.volume.models import Snapshot, Volume

LOG = logging.getLogger(__name__)

_CHUNK = 1 << 20


class VolumeManager:
    def __init__(
        self, db: Database, driver: VolumeDriver, images: ServiceClient | None, tmp_dir: Path
    ) -> None:
        self.db = db
        self.driver = driver
        self.images = images
        self.tmp_dir = tmp_dir
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._jobs: set[asyncio.Task] = set()

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def close(self) -> None:
        for task in list(self._jobs):
            task.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    async def _set_volume(self, volume_id: str, expected: str | None, **values: Any) -> bool:
        async with self.db.write() as session:
            stmt = update(Volume).where(Volume.id == volume_id)
            if expected is not None:
                stmt = stmt.where(Volume.status == expected)
            result = await session.execute(stmt.values(updated_at=utcnow(), **values))
            return result.rowcount == 1

    async def _set_snapshot(self, snapshot_id: str, expected: str, status: str) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot_id, Snapshot.status == expected)
                .values(status=status, updated_at=utcnow())
            )

    # -- volumes -----------------------------------------------------------------

    async def create_volume(
        self,
        volume_id: str,
        size: int,
        *,
        snapshot_id: str | None = None,
        source_volid: str | None = None,
        image: dict[str, Any] | None = None,
        token: str = "",
    ) -> None:
        status = states.DOWNLOADING if image else states.CREATING
        try:
            if snapshot_id:
                await self.driver.create_from_snapshot(volume_id, snapshot_id, size)
            elif source_volid:
                await self.driver.clone_volume(volume_id, source_volid, size)
            elif image:
                await self._set_volume(volume_id, states.CREATING, status=status)
                await self._copy_image(volume_id, image, size, token)
            else:
                await self.driver.create_volume(volume_id, size)
        except Exception as exc:  # noqa: BLE001 - any failure is the volume's error status
            LOG.error("volume %s could not be created: %s", volume_id, exc)
            with contextlib.suppress(Exception):
                await self.driver.delete_volume(volume_id)
            await self._set_volume(volume_id, status, status=states.ERROR)
            return
        if not await self._set_volume(volume_id, status, status=states.AVAILABLE):
            # Deleted (or reset) while it was being made: the data belongs to nobody.
            LOG.warning("volume %s changed status while created; removing its data", volume_id)

    async def _copy_image(
        self, volume_id: str, image: dict[str, Any], size: int, token: str
    ) -> None:
        assert self.images is not None
        tmp = self.tmp_dir / f"image-{uuid.uuid4()}"
        try:
            async with self.images.stream(f"/v2/images/{image['id']}/file", token) as response:
                with tmp.open("wb") as f:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        await asyncio.to_thread(f.write, chunk)
            fmt = image.get("disk_format") or "raw"
            await self.driver.copy_image_to_volume(volume_id, tmp, fmt, size)
        finally:
            tmp.unlink(missing_ok=True)

    async def delete_volume(self, volume_id: str, snapshot_ids: list[str]) -> None:
        try:
            for snapshot_id in snapshot_ids:
                await self.driver.delete_snapshot(snapshot_id)
            await self.driver.delete_volume(volume_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be deleted: %s", volume_id, exc)
            await self._set_volume(volume_id, states.DELETING, status=states.ERROR_DELETING)
            return
        async with self.db.write() as session:
            await session.execute(delete(Snapshot).where(Snapshot.id.in_(snapshot_ids)))
            await session.execute(delete(Volume).where(Volume.id == volume_id))

    async def extend_volume(self, volume_id: str, new_size: int, back_to: str) -> None:
        try:
            await self.driver.extend_volume(volume_id, new_size)
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be extended: %s", volume_id, exc)
            await self._set_volume(volume_id, states.EXTENDING, status=states.ERROR_EXTENDING)
            return
        await self._set_volume(volume_id, states.EXTENDING, status=back_to, size=new_size)

    async def upload_to_image(
        self, volume_id: str, image_id: str, disk_format: str, token: str, back_to: str
    ) -> None:
        assert self.images is not None
        tmp = self.tmp_dir / f"upload-{uuid.uuid4()}"
        try:
            await self.driver.copy_volume_to_image(volume_id, tmp, disk_format)
            await self.images.request(
                "PUT",
                f"/v2/images/{image_id}/file",
                token,
                content=_read_chunks(tmp),
                headers={"Content-Type": "application/octet-stream"},
                timeout=None,
            )
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be uploaded to image %s: %s", volume_id, image_id, exc)
            with contextlib.suppress(Exception):
                await self.images.request("DELETE", f"/v2/images/{image_id}", token)
        finally:
            tmp.unlink(missing_ok=True)
            await self._set_volume(volume_id, states.UPLOADING, status=back_to)

    # -- snapshots ---------------------------------------------------------------

    async def create_snapshot(self, snapshot_id: str, volume_id: str) -> None:
        try:
            await self.driver.create_snapshot(snapshot_id, volume_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("snapshot %s could not be created: %s", snapshot_id, exc)
            with contextlib.suppress(Exception):
                await self.driver.delete_snapshot(snapshot_id)
            await self._set_snapshot(snapshot_id, states.CREATING, states.ERROR)
            return
        await self._set_snapshot(snapshot_id, states.CREATING, states.AVAILABLE)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            await self.driver.delete_snapshot(snapshot_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("snapshot %s could not be deleted: %s", snapshot_id, exc)
            await self._set_snapshot(snapshot_id, states.DELETING, states.ERROR_DELETING)
            return
        async with self.db.write() as session:
            await session.execute(delete(Snapshot).where(Snapshot.id == snapshot_id))


async def _read_chunks(path: Path):
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk
