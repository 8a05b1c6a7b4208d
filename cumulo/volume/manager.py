"""The volume manager: one per backend of a storage host, serving its bus topic
`volume.<host>@<backend>` (cumulo.volume.rpcapi) and reporting the backend's
capacity and capabilities with every heartbeat.

Each job moves its row from the transitional status the API wrote to the final
one with a compare-and-swap, and cleans up after itself on failure: a create
that fails leaves no data on the backend and the volume `error`.

Like Cinder's volume service, the manager opens the Block Storage database itself
(the same URL as the API): its work is those compare-and-swaps and its heartbeat
row, and going through the bus for each would add a service (a "conductor") that
only forwards them. A storage host therefore needs the database URL as well as
the broker; an all-in-one cloud shares one Database object with its API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, update

from cumulo.common.config import VolumeBackendConfig
from cumulo.common.db import Database, utcnow
from cumulo.common.rpc import Endpoint, Transport
from cumulo.common.service_client import ServiceClient
from cumulo.volume import rpcapi, states
from cumulo.volume.drivers.driver import VolumeDriver
from cumulo.volume.models import Snapshot, Volume
from cumulo.volume.scheduler import VOLUME_BINARY, record_heartbeat

LOG = logging.getLogger(__name__)

_CHUNK = 1 << 20

RPC_METHODS = frozenset({
    "create_volume", "delete_volume", "extend_volume", "upload_to_image", "create_snapshot",
    "delete_snapshot", "initialize_connection", "terminate_connection", "get_capabilities",
})  # fmt: skip


class VolumeManager(Endpoint):
    def __init__(
        self,
        host: str,
        backend: VolumeBackendConfig,
        driver: VolumeDriver,
        db: Database,
        images: ServiceClient | None,
        tmp_dir: Path,
        *,
        availability_zone: str,
        report_interval: float = 10.0,
    ) -> None:
        self.host = host
        self.backend = backend
        self.backend_host = f"{host}@{backend.name}"  # os-services host, bus topic
        self.volume_backend_name = backend.volume_backend_name or backend.name
        self.availability_zone = backend.availability_zone or availability_zone
        self.db = db
        self.driver = driver
        self.images = images
        self.tmp_dir = tmp_dir
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.report_interval = report_interval
        self._periodic: asyncio.Task | None = None
        self.service_context = {"request_id": f"req-volume-{self.backend_host}", "roles": []}

    def rpc_method(self, name: str):
        return super().rpc_method(name) if name in RPC_METHODS else None

    # -- lifecycle and heartbeat ------------------------------------------------------

    async def start(self, bus: Transport) -> None:
        await self.recover_interrupted_work()
        await self.report()
        await bus.serve(rpcapi.volume_topic(self.backend_host), self)
        self._periodic = asyncio.create_task(self._report_forever())
        LOG.info("volume backend %s is up", self.backend_host)

    async def stop(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            await asyncio.gather(self._periodic, return_exceptions=True)
        await self.driver.close()

    async def recover_interrupted_work(self) -> None:
        """What this backend was doing when it stopped (Cinder's init_host). A create
        cannot be resumed (its request died with the process): its partial data is
        removed and it goes to `error`; a delete is finished; an extend goes to
        `error_extending`, an upload back to the status it came from; a snapshot being
        made goes to `error`, one being deleted is deleted. Data on the backend that no
        volume or snapshot owns (a create cut short after a delete) is removed."""
        on_backend = or_(
            Volume.host == self.backend_host, Volume.host.startswith(f"{self.backend_host}#")
        )
        async with self.db.read() as session:
            volumes = (await session.execute(select(Volume).where(on_backend))).scalars().all()
            snapshots = (
                (
                    await session.execute(
                        select(Snapshot)
                        .join(Volume, Snapshot.volume_id == Volume.id)
                        .where(on_backend)
                    )
                )
                .scalars()
                .all()
            )
        ctx = self.service_context
        for snap in snapshots:
            if snap.status == states.CREATING:
                LOG.warning("snapshot %s was interrupted by a restart: error", snap.id)
                with contextlib.suppress(Exception):
                    await self.driver.delete_snapshot(snap.id)
                await self._set_snapshot(snap.id, states.CREATING, states.ERROR)
            elif snap.status == states.DELETING:
                await self.delete_snapshot(ctx, snap.id)
        for vol in volumes:
            if vol.status in (states.CREATING, states.DOWNLOADING):
                LOG.warning("volume %s was interrupted by a restart: error", vol.id)
                with contextlib.suppress(Exception):
                    await self.driver.delete_volume(vol.id)
                await self._set_volume(vol.id, vol.status, status=states.ERROR)
            elif vol.status == states.DELETING:
                LOG.info("finishing the delete of volume %s", vol.id)
                owned = [s.id for s in snapshots if s.volume_id == vol.id]
                await self.delete_volume(ctx, vol.id, owned)
            elif vol.status == states.EXTENDING:
                await self._set_volume(vol.id, states.EXTENDING, status=states.ERROR_EXTENDING)
            elif vol.status == states.UPLOADING:
                back_to = (
                    states.IN_USE if vol.attach_status == states.ATTACHED else states.AVAILABLE
                )
                await self._set_volume(vol.id, states.UPLOADING, status=back_to)
        await self._remove_orphaned_data()

    async def _remove_orphaned_data(self) -> None:
        async with self.db.read() as session:
            owned = {f"volume-{v}" for v in await session.scalars(select(Volume.id))}
            owned |= {f"snapshot-{s}" for s in await session.scalars(select(Snapshot.id))}
        for name in sorted(self.driver.volume_files() - owned):
            kind, _, data_id = name.partition("-")
            LOG.warning("removing %s from backend %s: nothing owns it", name, self.backend_host)
            with contextlib.suppress(Exception):
                if kind == "volume":
                    await self.driver.delete_volume(data_id)
                elif kind == "snapshot":
                    await self.driver.delete_snapshot(data_id)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            try:
                await self.report()
            except Exception:  # noqa: BLE001 - a failed report must not stop the next
                LOG.exception("capacity report of %s failed", self.backend_host)

    async def capabilities(self) -> dict[str, Any]:
        """What the scheduler filters on and get_pools shows (Cinder's volume stats)."""
        cap = await self.driver.capacity()
        b = self.backend
        return {
            "volume_backend_name": self.volume_backend_name,
            "pool_name": b.name,
            "vendor_name": "cumulo",
            "driver_version": "1.0",
            "storage_protocol": self.driver.storage_protocol,
            "total_capacity_gb": cap.total_gb,
            "free_capacity_gb": cap.free_gb,
            "reserved_percentage": b.reserved_percentage,
            "max_over_subscription_ratio": b.max_over_subscription_ratio,
            "thin_provisioning_support": True,
            "thick_provisioning_support": False,
            "multiattach": True,
            "volume_format": b.volume_format,
            "timestamp": utcnow().isoformat(),
            **b.capabilities,
        }

    async def report(self) -> None:
        """Heartbeat: this backend's row in volume_service, with its capacity now."""
        caps = json.dumps(await self.capabilities())
        await record_heartbeat(
            self.db,
            self.backend_host,
            VOLUME_BINARY,
            self.availability_zone,
            caps,
            self.backend.name,
        )

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
        context: dict[str, Any],
        volume_id: str,
        size: int,
        snapshot_id: str | None = None,
        source_volid: str | None = None,
        image: dict[str, Any] | None = None,
    ) -> None:
        token = context.get("auth_token") or ""
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

    async def delete_volume(
        self, context: dict[str, Any], volume_id: str, snapshot_ids: list[str]
    ) -> None:
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

    async def extend_volume(
        self, context: dict[str, Any], volume_id: str, new_size: int, back_to: str
    ) -> None:
        try:
            await self.driver.extend_volume(volume_id, new_size)
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be extended: %s", volume_id, exc)
            await self._set_volume(volume_id, states.EXTENDING, status=states.ERROR_EXTENDING)
            return
        await self._set_volume(volume_id, states.EXTENDING, status=back_to, size=new_size)

    async def upload_to_image(
        self,
        context: dict[str, Any],
        volume_id: str,
        image_id: str,
        disk_format: str,
        back_to: str,
    ) -> None:
        assert self.images is not None
        token = context.get("auth_token") or ""
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

    async def create_snapshot(
        self, context: dict[str, Any], snapshot_id: str, volume_id: str
    ) -> None:
        try:
            await self.driver.create_snapshot(snapshot_id, volume_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("snapshot %s could not be created: %s", snapshot_id, exc)
            with contextlib.suppress(Exception):
                await self.driver.delete_snapshot(snapshot_id)
            await self._set_snapshot(snapshot_id, states.CREATING, states.ERROR)
            return
        await self._set_snapshot(snapshot_id, states.CREATING, states.AVAILABLE)

    async def delete_snapshot(self, context: dict[str, Any], snapshot_id: str) -> None:
        try:
            await self.driver.delete_snapshot(snapshot_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("snapshot %s could not be deleted: %s", snapshot_id, exc)
            await self._set_snapshot(snapshot_id, states.DELETING, states.ERROR_DELETING)
            return
        async with self.db.write() as session:
            await session.execute(delete(Snapshot).where(Snapshot.id == snapshot_id))

    # -- connections (attachments) ------------------------------------------------

    async def initialize_connection(
        self,
        context: dict[str, Any],
        volume_id: str,
        export_id: str,
        connector: dict[str, Any],
        mode: str,
    ) -> dict[str, Any]:
        return await self.driver.initialize_connection(volume_id, export_id, connector, mode)

    async def terminate_connection(
        self, context: dict[str, Any], volume_id: str, export_id: str
    ) -> None:
        await self.driver.terminate_connection(volume_id, export_id)

    async def get_capabilities(self, context: dict[str, Any]) -> dict[str, Any]:
        """Cinder's capabilities API body: what extra specs may ask of this backend."""
        caps = await self.capabilities()
        properties = {
            "thin_provisioning_support": {
                "title": "Thin Provisioning",
                "description": "Volumes are sparse: space is used as data is written.",
                "type": "boolean",
            },
            "multiattach": {
                "title": "Multi-attach",
                "description": "Volumes may be attached to several servers.",
                "type": "boolean",
            },
            "volume_format": {
                "title": "Volume Format",
                "description": "Format of the backend's volume files (raw or qcow2).",
                "type": "string",
                "enum": ["raw", "qcow2"],
            },
        }
        for key, value in self.backend.capabilities.items():
            kind = (
                "boolean"
                if isinstance(value, bool)
                else ("number" if isinstance(value, int | float) else "string")
            )
            properties[key] = {"title": key, "description": f"Reported as {value!r}.", "type": kind}
        return {
            "namespace": f"OS::Storage::Capabilities::{self.backend_host}",
            "vendor_name": caps["vendor_name"],
            "volume_backend_name": caps["volume_backend_name"],
            "pool_name": "",
            "driver_version": caps["driver_version"],
            "storage_protocol": caps["storage_protocol"],
            "display_name": None,
            "description": None,
            "visibility": None,
            "replication_targets": [],
            "properties": properties,
        }


async def _read_chunks(path: Path):
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk
