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
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, update

from cumulo.common.config import VolumeBackendConfig
from cumulo.common.db import Database, utcnow
from cumulo.common.identity_client import IdentityClient
from cumulo.common.key_manager_client import delete_secret, secret_payload
from cumulo.common.notifications import Notifier
from cumulo.common.rpc import Endpoint, Transport
from cumulo.common.service_client import ServiceClient
from cumulo.volume import encryption, rpcapi, states
from cumulo.volume.backup_store import BackupStore
from cumulo.volume.drivers.driver import DriverError, GiB, VolumeDriver
from cumulo.volume.encryption import Encryption
from cumulo.volume.manager_moves import MOVES_RPC_METHODS, VolumeMovesMixin
from cumulo.volume.models import Backup, Snapshot, Volume, VolumeMetadata, VolumeTypeEncryption
from cumulo.volume.notifications import volume_usage
from cumulo.volume.scheduler import VOLUME_BINARY, record_heartbeat

LOG = logging.getLogger(__name__)

_CHUNK = 1 << 20

RPC_METHODS = frozenset({
    "create_volume", "delete_volume", "extend_volume", "upload_to_image", "create_snapshot",
    "delete_snapshot", "initialize_connection", "terminate_connection", "get_capabilities",
    "create_backup", "restore_backup", "delete_backup", "reimage_volume",
})  # fmt: skip


class VolumeManager(VolumeMovesMixin, Endpoint):
    # Cinder's notifications for consumers outside cumulo (set by whoever runs the backend).
    notifier: Notifier | None = None

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
        objects: ServiceClient | None = None,
        identity: IdentityClient | None = None,
        compute: ServiceClient | None = None,
        key_manager: ServiceClient | None = None,
    ) -> None:
        self.host = host
        self.backend = backend
        self.backend_host = f"{host}@{backend.name}"  # os-services host, bus topic
        self.volume_backend_name = backend.volume_backend_name or backend.name
        self.availability_zone = backend.availability_zone or availability_zone
        self.db = db
        self.driver = driver
        self.images = images
        self.objects = objects  # the Object Storage API, where backups go
        self.identity = identity  # signs the volume service in (its token writes backups)
        self.compute = compute  # swaps attached volumes' data when they migrate
        self.key_manager = key_manager  # encrypted volumes' keys (with the user's token)
        self.tmp_dir = tmp_dir
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.report_interval = report_interval
        self._periodic: asyncio.Task | None = None
        self.service_context = {"request_id": f"req-volume-{self.backend_host}", "roles": []}
        self._moves_init()

    def rpc_method(self, name: str):
        allowed = name in RPC_METHODS or name in MOVES_RPC_METHODS
        return super().rpc_method(name) if allowed else None

    # -- lifecycle and heartbeat ------------------------------------------------------

    async def start(self, bus: Transport) -> None:
        self.volume_rpc = rpcapi.VolumeAPI(bus)
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
        if self.objects is not None:
            await self.objects.close()
        if self.identity is not None:
            await self.identity.close()
        if self.compute is not None:
            await self.compute.close()
        if self.key_manager is not None:
            await self.key_manager.close()
        if self.notifier is not None:
            await self.notifier.close()

    async def recover_interrupted_work(self) -> None:
        """What this backend was doing when it stopped (Cinder's init_host). A create
        cannot be resumed (its request died with the process): its partial data is
        removed and it goes to `error`; a delete is finished; an extend goes to
        `error_extending`, an upload back to the status it came from; a snapshot being
        made goes to `error`, one being deleted is deleted; a manage goes to
        `error_managing` (what it adopted stays the volume's), an unmanage is finished; a
        migration from here ends in error. Data on the backend that no volume or snapshot
        owns (a create cut short after a delete, what a finished migration left) is
        removed."""
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
            elif snap.status == states.UNMANAGING:
                await self.unmanage_snapshot(ctx, snap.id)
            elif snap.status == states.MANAGING:
                await self._set_snapshot(snap.id, states.MANAGING, states.ERROR)
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
            elif vol.status == states.MANAGING:
                await self._set_volume(vol.id, states.MANAGING, status=states.ERROR_MANAGING)
            elif vol.status == states.UNMANAGING:
                await self.unmanage_volume(ctx, vol.id)
        await self._recover_migrations(volumes)
        await self._recover_backups(volumes)
        await self._remove_orphaned_data()
        try:
            await self.driver.ensure_exports()
        except Exception:  # noqa: BLE001 - the backend serves its other volumes all the same
            LOG.exception("exports of backend %s not made again", self.backend_host)

    async def _remove_orphaned_data(self) -> None:
        async with self.db.read() as session:
            owned = {f"volume-{v}" for v in await session.scalars(select(Volume.id))}
            owned |= {f"snapshot-{s}" for s in await session.scalars(select(Snapshot.id))}
        owned -= await self._moved_away()
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

    async def _encryption(
        self, volume_id: str, token: str = "", *, with_key: bool = False
    ) -> Encryption | None:
        """An encrypted volume's encryption (its type's), with its passphrase from the Key
        Manager when `with_key` (fetched with the user's token, as Cinder's castellan
        does); None for a volume of an unencrypted type."""
        async with self.db.read() as session:
            volume = await session.get(Volume, volume_id)
            spec = (
                await session.get(VolumeTypeEncryption, volume.type_id)
                if volume is not None and volume.encryption_key_id
                else None
            )
        if volume is None or spec is None or not volume.encryption_key_id:
            return None
        made = Encryption(
            encryption.provider_of(spec.provider),
            spec.cipher or encryption.DEFAULT_CIPHER,
            spec.key_size or encryption.DEFAULT_KEY_SIZE,
        )
        if not with_key:
            return made
        if self.key_manager is None:
            raise DriverError("this volume service reaches no Key Manager")
        key = await secret_payload(self.key_manager, token, volume.encryption_key_id)
        return Encryption(made.provider, made.cipher, made.key_size, encryption.passphrase_of(key))

    async def _delete_key(self, token: str, key_id: str, owner: str) -> None:
        """A key whose data is gone, deleted with the user's token (a failure is logged:
        the data's deletion stands)."""
        if self.key_manager is None:
            LOG.warning("the key %s of %s stays: no Key Manager is reachable", key_id, owner)
            return
        try:
            await delete_secret(self.key_manager, token, key_id)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("the key %s of %s stays: %s", key_id, owner, exc)

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
        await self._notify("volume.create.start", volume_id)
        try:
            # A copy of an encrypted source (a volume, snapshot, an encrypted image) is a
            # copy of its container, and a migration's new volume is filled with one
            # later: no key needed.
            keyed = not (snapshot_id or source_volid or encryption.image_key_id(image))
            keyed = keyed and not await self._migration_target(volume_id)
            crypt = await self._encryption(volume_id, token, with_key=keyed)
            if snapshot_id:
                await self.driver.create_from_snapshot(volume_id, snapshot_id, size, crypt)
            elif source_volid:
                await self.driver.clone_volume(volume_id, source_volid, size, crypt)
            elif image:
                await self._set_volume(volume_id, states.CREATING, status=status)
                await self._copy_image(volume_id, image, size, token, crypt)
            else:
                await self.driver.create_volume(volume_id, size, crypt)
        except Exception as exc:  # noqa: BLE001 - any failure is the volume's error status
            LOG.error("volume %s could not be created: %s", volume_id, exc)
            with contextlib.suppress(Exception):
                await self.driver.delete_volume(volume_id)
            await self._set_volume(volume_id, status, status=states.ERROR)
            return
        if not await self._set_volume(volume_id, status, status=states.AVAILABLE):
            # Deleted (or reset) while it was being made: a row gone or being deleted
            # (e.g. a migration's new volume given up) wants no data.
            LOG.warning("volume %s changed status while it was created", volume_id)
            async with self.db.read() as session:
                row = await session.get(Volume, volume_id)
            if row is None or row.status == states.DELETING:
                with contextlib.suppress(Exception):
                    await self.driver.delete_volume(volume_id)
            return
        await self._notify("volume.create.end", volume_id)

    async def _notify(self, event_type: str, volume_id: str) -> dict[str, Any] | None:
        """Send a notification with the volume as it is now; its payload (None: no notifier
        or no such volume)."""
        if self.notifier is None:
            return None
        async with self.db.read() as session:
            volume = await session.get(Volume, volume_id)
        if volume is None:
            return None
        usage = volume_usage(volume)
        await self.notifier.info(f"volume.{self.backend_host}", event_type, usage)
        return usage

    async def _copy_image(
        self,
        volume_id: str,
        image: dict[str, Any],
        size: int,
        token: str,
        crypt: Encryption | None = None,
    ) -> None:
        """The image's data into the volume: written into a new container for an
        encrypted volume, or, for an image of an encrypted volume's container (Cinder's
        cinder_encryption_key_id), that container as it is (the volume's key is a clone
        of the image's: Cinder's copy_image_to_volume does no re-encryption either)."""
        assert self.images is not None
        tmp = self.tmp_dir / f"image-{uuid.uuid4()}"
        try:
            async with self.images.stream(f"/v2/images/{image['id']}/file", token) as response:
                with tmp.open("wb") as f:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        await asyncio.to_thread(f.write, chunk)
            fmt = image.get("disk_format") or "raw"
            if encryption.image_key_id(image):
                if crypt is None:
                    raise DriverError("an encrypted image goes only into an encrypted volume")
                await self._copy_container(volume_id, tmp, fmt, size, crypt)
            else:
                await self.driver.copy_image_to_volume(volume_id, tmp, fmt, size, crypt)
        finally:
            tmp.unlink(missing_ok=True)

    async def _copy_container(
        self, volume_id: str, container: Path, fmt: str, size: int, crypt: Encryption
    ) -> None:
        """A LUKS container (a backup's or an image's bytes) as the encrypted volume's
        data, refused when it is not one of the volume type's LUKS version."""
        if fmt == "raw":
            version = await asyncio.to_thread(encryption.luks_version, container)
            if version != crypt.provider:
                raise DriverError(
                    f"the data is not a {crypt.provider} container ({version or 'no LUKS'})"
                )
        await self.driver.copy_container_to_volume(volume_id, container, fmt, size)

    async def _migration_target(self, volume_id: str) -> bool:
        async with self.db.read() as session:
            row = await session.get(Volume, volume_id)
        return row is not None and (row.migration_status or "").startswith(states.MIGRATION_TARGET)

    async def delete_volume(
        self, context: dict[str, Any], volume_id: str, snapshot_ids: list[str]
    ) -> None:
        usage = await self._notify("volume.delete.start", volume_id)
        async with self.db.read() as session:
            row = await session.get(Volume, volume_id)
        key_id = row.encryption_key_id if row is not None else None
        try:
            for snapshot_id in snapshot_ids:
                await self.driver.delete_snapshot(snapshot_id)
            await self.driver.delete_volume(volume_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be deleted: %s", volume_id, exc)
            await self._set_volume(volume_id, states.DELETING, status=states.ERROR_DELETING)
            return
        if key_id and not await self._migration_target(volume_id):
            # The data is gone: its key goes too (as Cinder), with the deleter's token;
            # a migration's new volume given up shares the volume's key, which stays.
            await self._delete_key(context.get("auth_token") or "", key_id, f"volume {volume_id}")
        async with self.db.write() as session:
            await session.execute(delete(Snapshot).where(Snapshot.id.in_(snapshot_ids)))
            await session.execute(delete(Volume).where(Volume.id == volume_id))
        if usage is not None:
            await self.notifier.info(  # type: ignore[union-attr]
                f"volume.{self.backend_host}", "volume.delete.end", {**usage, "status": "deleted"}
            )

    async def extend_volume(
        self, context: dict[str, Any], volume_id: str, new_size: int, back_to: str
    ) -> None:
        try:
            crypt = await self._encryption(volume_id)
            await self.driver.extend_volume(volume_id, new_size, crypt)
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be extended: %s", volume_id, exc)
            await self._set_volume(volume_id, states.EXTENDING, status=states.ERROR_EXTENDING)
            return
        await self._set_volume(volume_id, states.EXTENDING, status=back_to, size=new_size)

    async def reimage_volume(
        self,
        context: dict[str, Any],
        volume_id: str,
        image: dict[str, Any],
        back_to: str,
        image_metadata: dict[str, str],
    ) -> None:
        """os-reimage: the image's data over the volume's, and its image metadata the new
        image's; the volume back to `back_to`, or `error` when the copy failed."""
        token = context.get("auth_token") or ""
        async with self.db.read() as session:
            volume = await session.get(Volume, volume_id)
        if volume is None:
            return
        try:
            crypt = await self._encryption(volume_id, token, with_key=True)
            await self._copy_image(volume_id, image, volume.size, token, crypt)
        except Exception as exc:  # noqa: BLE001 - any failure is the volume's error status
            LOG.error("volume %s could not be reimaged from %s: %s", volume_id, image["id"], exc)
            await self._set_volume(volume_id, states.DOWNLOADING, status=states.ERROR)
            return
        async with self.db.write() as session:
            await session.execute(
                delete(VolumeMetadata).where(
                    VolumeMetadata.volume_id == volume_id, VolumeMetadata.kind == "image"
                )
            )
            for key, value in image_metadata.items():
                session.add(VolumeMetadata(volume_id=volume_id, kind="image", key=key, value=value))
            await session.execute(
                update(Volume)
                .where(Volume.id == volume_id, Volume.status == states.DOWNLOADING)
                .values(status=back_to, image_id=image["id"], bootable=True, updated_at=utcnow())
            )
        await self._notify("volume.reimage.end", volume_id)

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
            crypt = await self._encryption(volume_id)  # its container's bytes, raw
            await self.driver.copy_volume_to_image(volume_id, tmp, disk_format, crypt)
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
            crypt = await self._encryption(volume_id)
            await self.driver.create_snapshot(snapshot_id, volume_id, crypt)
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

    # -- backups (in the Object Storage; see backup_store) -------------------------

    async def _recover_backups(self, volumes: list[Volume]) -> None:
        """Backups cut short by a restart: one being made is `error` (its objects go with
        its delete), a restore leaves its volume `error_restoring`, a delete is finished."""
        async with self.db.read() as session:
            backups = list(await session.scalars(select(Backup).where(
                Backup.host == self.backend_host,
                Backup.status.in_((states.CREATING, states.RESTORING, states.DELETING)),
            )))  # fmt: skip
        for backup in backups:
            LOG.warning("backup %s was interrupted by a restart (%s)", backup.id, backup.status)
            if backup.status == states.DELETING:
                await self.delete_backup(self.service_context, backup.id)
                continue
            outcome = states.ERROR if backup.status == states.CREATING else states.AVAILABLE
            await self._set_backup(
                backup.id,
                backup.status,
                status=outcome,
                fail_reason="interrupted by a restart of its volume service",
            )
        for vol in volumes:
            if vol.status == states.BACKING_UP:
                attached = vol.attach_status == states.ATTACHED
                back_to = states.IN_USE if attached else states.AVAILABLE
                await self._set_volume(vol.id, states.BACKING_UP, status=back_to)
            elif vol.status == states.RESTORING_BACKUP:
                await self._set_volume(vol.id, vol.status, status=states.ERROR_RESTORING)

    async def _set_backup(self, backup_id: str, expected: str, **values: Any) -> bool:
        async with self.db.write() as session:
            result = await session.execute(
                update(Backup)
                .where(Backup.id == backup_id, Backup.status == expected)
                .values(updated_at=utcnow(), **values)
            )
            return result.rowcount == 1

    async def _backup_store(self, account: str) -> BackupStore:
        if self.objects is None or self.identity is None:
            raise RuntimeError("no Object Storage is configured for backups")
        return BackupStore(self.objects, await self.identity.service_token(), account)

    async def create_backup(
        self,
        context: dict[str, Any],
        backup_id: str,
        volume_id: str,
        back_to: str,
        parent: list[str] | None = None,
    ) -> None:
        """Read the volume (or its snapshot) as a raw image and store it as objects:
        the changes since `parent` ([container, prefix]) or, without one, all of it."""
        async with self.db.read() as session:
            backup = await session.get(Backup, backup_id)
        if backup is None:
            return
        raw = self.tmp_dir / f"backup-{backup_id}.raw"
        scratch = f"backup-{backup_id}"  # a snapshot's data, as a volume, while it is read
        written = False
        store = None
        try:
            store = await self._backup_store(backup.account)
            # An encrypted volume's backup holds its container's bytes (never plaintext).
            crypt = await self._encryption(volume_id) if backup.encryption_key_id else None
            if backup.snapshot_id:
                await self.driver.create_from_snapshot(
                    scratch, backup.snapshot_id, backup.size, crypt
                )
                await self.driver.copy_volume_to_image(scratch, raw, "raw", crypt)
            else:
                await self.driver.copy_volume_to_image(volume_id, raw, "raw", crypt)
            header = {"backup_id": backup_id, "volume_id": volume_id,
                      "volume_meta": await self._volume_meta(volume_id),
                      "snapshot_id": backup.snapshot_id, "volume_size": backup.size,
                      "backup_name": backup.name, "backup_description": backup.description,
                      "created_at": backup.created_at.isoformat()}  # fmt: skip
            written = True
            count = await store.write(
                raw, backup.container, backup.object_prefix, header,
                (parent[0], parent[1]) if parent else None,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any failure is the backup's error status
            LOG.error("backup %s of volume %s failed: %s", backup_id, volume_id, exc)
            if written and store is not None:
                with contextlib.suppress(Exception):
                    await store.delete(backup.container, backup.object_prefix)
            await self._set_backup(backup_id, states.CREATING, status=states.ERROR,
                                   fail_reason=str(exc)[:255])  # fmt: skip
            await self._set_volume(volume_id, states.BACKING_UP, status=back_to)
            return
        finally:
            raw.unlink(missing_ok=True)
            if backup.snapshot_id:
                with contextlib.suppress(Exception):
                    await self.driver.delete_volume(scratch)
        await self._set_backup(backup_id, states.CREATING, status=states.AVAILABLE,
                               object_count=count)  # fmt: skip
        await self._set_volume(volume_id, states.BACKING_UP, status=back_to)

    async def restore_backup(
        self,
        context: dict[str, Any],
        backup_id: str,
        volume_id: str,
        chain: list[list[str]],
        size: int,
        create: bool = False,
        key_id: str | None = None,
    ) -> None:
        """The volume's data made the backup's: `chain` ([container, prefix] from the full
        backup to this one) applied to a raw image of `size` GiB, copied onto the volume
        (made first when `create`, a restore to a new volume). An encrypted backup is a
        container: it becomes the volume's data as it is, and an existing volume takes
        `key_id` (the API's clone of the backup's key) in place of its own key."""
        async with self.db.read() as session:
            backup = await session.get(Backup, backup_id)
            volume = await session.get(Volume, volume_id)
        if backup is None or volume is None:
            return
        raw = self.tmp_dir / f"restore-{backup_id}-{volume_id}.raw"
        header: dict[str, Any] = {}
        token = context.get("auth_token") or ""
        try:
            store = await self._backup_store(backup.account)
            crypt = await self._encryption(volume_id)
            with raw.open("wb") as f:  # a container is its payload and a header (<= LUKS2's)
                f.truncate(size * GiB + (encryption.LUKS2_HEADER if crypt else 0))
            for container, prefix in chain:
                header = await store.apply(container, prefix, raw)
            if crypt is not None:
                # The backed-up container ends where its payload of `size` GiB does.
                offset = await asyncio.to_thread(encryption.payload_offset, raw)
                await asyncio.to_thread(os.truncate, raw, offset + size * GiB)
                await self._copy_container(volume_id, raw, "raw", volume.size, crypt)
            else:
                if create:
                    await self.driver.create_volume(volume_id, volume.size)
                await self.driver.copy_image_to_volume(volume_id, raw, "raw", volume.size)
        except Exception as exc:  # noqa: BLE001
            LOG.error("restore of backup %s to volume %s failed: %s", backup_id, volume_id, exc)
            if create:
                with contextlib.suppress(Exception):
                    await self.driver.delete_volume(volume_id)
            if key_id:  # the volume keeps the key it has
                await self._delete_key(token, key_id, f"restore of {backup_id}")
            await self._set_volume(
                volume_id,
                states.RESTORING_BACKUP,
                status=states.ERROR if create else states.ERROR_RESTORING,
            )
            await self._set_backup(backup_id, states.RESTORING, status=states.AVAILABLE)
            return
        finally:
            raw.unlink(missing_ok=True)
        if key_id:
            async with self.db.write() as session:
                await session.execute(
                    update(Volume).where(Volume.id == volume_id).values(encryption_key_id=key_id)
                )
            if volume.encryption_key_id:  # the container it opened is gone (Cinder's too)
                await self._delete_key(token, volume.encryption_key_id, f"volume {volume_id}")
        await self._restore_volume_meta(volume_id, header.get("volume_meta") or {})
        await self._set_volume(volume_id, states.RESTORING_BACKUP, status=states.AVAILABLE)
        await self._set_backup(backup_id, states.RESTORING, status=states.AVAILABLE)

    async def _volume_meta(self, volume_id: str) -> dict[str, Any]:
        """What a backup keeps of the volume beside its data (Cinder's volume metadata in
        the backup's _metadata object): user and image metadata, bootable."""
        async with self.db.read() as session:
            volume = await session.get(Volume, volume_id)
            rows = await session.scalars(
                select(VolumeMetadata).where(VolumeMetadata.volume_id == volume_id)
            )
            meta: dict[str, Any] = {"user": {}, "image": {}}
            for row in rows:
                meta.setdefault(row.kind, {})[row.key] = row.value
        meta["bootable"] = bool(volume and volume.bootable)
        return meta

    async def _restore_volume_meta(self, volume_id: str, meta: dict[str, Any]) -> None:
        """The backed-up volume's metadata onto the restored one (its keys win)."""
        async with self.db.write() as session:
            for kind in ("user", "image"):
                for key, value in (meta.get(kind) or {}).items():
                    row = await session.get(VolumeMetadata, (volume_id, kind, key))
                    if row is None:
                        session.add(VolumeMetadata(volume_id=volume_id, kind=kind, key=key,
                                                   value=value))  # fmt: skip
                    else:
                        row.value = value
            if meta.get("bootable"):
                await session.execute(
                    update(Volume).where(Volume.id == volume_id).values(bootable=True)
                )

    async def delete_backup(self, context: dict[str, Any], backup_id: str) -> None:
        async with self.db.read() as session:
            backup = await session.get(Backup, backup_id)
        if backup is None:
            return
        try:
            store = await self._backup_store(backup.account)
            await store.delete(backup.container, backup.object_prefix)
        except Exception as exc:  # noqa: BLE001
            LOG.error("backup %s could not be deleted: %s", backup_id, exc)
            await self._set_backup(backup_id, states.DELETING, status=states.ERROR_DELETING,
                                   fail_reason=str(exc)[:255])  # fmt: skip
            return
        if backup.encryption_key_id:  # its clone of the volume's key goes with it (Cinder's)
            token = context.get("auth_token") or ""
            await self._delete_key(token, backup.encryption_key_id, f"backup {backup_id}")
        async with self.db.write() as session:
            await session.execute(
                delete(Backup).where(Backup.id == backup_id, Backup.status == states.DELETING)
            )

    # -- connections (attachments) ------------------------------------------------

    async def initialize_connection(
        self,
        context: dict[str, Any],
        volume_id: str,
        export_id: str,
        connector: dict[str, Any],
        mode: str,
    ) -> dict[str, Any]:
        crypt = await self._encryption(volume_id)
        return await self.driver.initialize_connection(volume_id, export_id, connector, mode, crypt)

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
