"""What a volume manager does to move volumes between backends (migration, and a
retype that needs one) and to adopt or let go of backend data (manage, unmanage).

Migration is Cinder's generic ("host copy") migration, run by the backend holding the
volume: the API placed a new volume on the destination (its migration_status
`target:<id>`, created empty there by the destination's manager); this backend waits
for it, writes the volume's data into it through the destination's connection info
(the file on this host, else an NBD export), has the destination rename that data to
the volume's name (Cinder's update_migrated_volume, as its LVM driver does), then in
one transaction the volume takes the destination as its host (and the new type of a
retype) and the new volume's row goes; the data left here is removed last. A failure
anywhere deletes the new volume and leaves the volume where it was, `migration_status`
`error`.

An attached volume is copied by Compute, as Cinder's generic migration has Nova do it:
this backend asks Compute to swap each server's volume for the new one (Nova's
update_server_volume, with the service user's token); the host mirrors the data while
the guest runs, moves the server to a new attachment of the new volume and calls
os-migrate_volume_completion, which completes the migration here: the new volume's
attachments become the volume's (their connection info as it is after the rename),
the old attachments they replace are removed (Cinder's completion detaches the
source), and the volume is `in-use` again on the destination. When this completion
fails, Compute is answered a failure (500) and nothing is half-done: the volume
stays where it is with its data and attachments (migration_status `error`); the new
volume stays until Compute has moved its guest back onto the volume and ended the
migration with error=true, which deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select, update

from cumulo.common.db import Database, utcnow
from cumulo.common.identity_client import IdentityClient
from cumulo.common.service_client import ServiceClient, url_path
from cumulo.volume import rpcapi, states
from cumulo.volume.drivers.driver import VolumeDriver
from cumulo.volume.drivers.tgt import migration_initiator
from cumulo.volume.encryption import Encryption
from cumulo.volume.models import Attachment, Snapshot, Volume, VolumeTypeExtraSpec
from cumulo.volume.scheduler import type_multiattach

LOG = logging.getLogger(__name__)

MOVES_RPC_METHODS = frozenset({
    "migrate_volume", "migrate_volume_completion", "update_migrated_volume", "get_manageable",
    "manage_existing_get_size", "manage_existing", "manage_existing_snapshot",
    "unmanage_volume", "unmanage_snapshot",
})  # fmt: skip


class MigrationFailed(Exception):
    pass


class CompletionFailed(Exception):
    """The copied data could not be swapped in: the migration ended in error (a 500
    to os-migrate_volume_completion, which Compute's swap rolls back on)."""


class VolumeMovesMixin:
    """Mixed into VolumeManager (cumulo.volume.manager): uses its db, driver, host and
    backend_host, _set_volume, _set_snapshot, and volume_rpc (set when it starts)."""

    db: Database
    driver: VolumeDriver
    host: str
    backend_host: str
    service_context: dict[str, Any]
    volume_rpc: rpcapi.VolumeAPI
    compute: ServiceClient | None
    identity: IdentityClient | None
    _encryption: Callable[..., Awaitable[Encryption | None]]
    # How long the destination may take to create the new (empty) volume.
    new_volume_timeout: float = 600.0

    def _moves_init(self) -> None:
        self._copying: set[str] = set()  # new volumes being filled here
        self._copied: set[str] = set()  # ... and filled, not yet swapped in
        # New volumes Compute fills (attached volumes' migrations): their new type.
        self._swapping: dict[str, str | None] = {}

    # -- migration, on the backend holding the volume -----------------------------------

    async def migrate_volume(
        self,
        context: dict[str, Any],
        volume_id: str,
        new_volume_id: str,
        new_type_id: str | None = None,
    ) -> None:
        if not await self._set_migration(volume_id, states.MIGRATION_STARTING, states.MIGRATING):
            LOG.warning("migration of volume %s was not starting: nothing done", volume_id)
            return
        LOG.info("migrating volume %s into %s", volume_id, new_volume_id)
        self._copying.add(new_volume_id)
        try:
            new_host = await self._wait_for_new_volume(new_volume_id)
            servers = await self._servers_of(volume_id)
            if servers:
                self._swapping[new_volume_id] = new_type_id
                for server in servers:
                    await self._swap_on_server(server, volume_id, new_volume_id)
                return  # Compute completes the migration (os-migrate_volume_completion)
            export = f"migration-{new_volume_id}"
            # An iSCSI destination lets this host's migration initiator in.
            connector = {"host": self.host, "initiator": migration_initiator(self.host)}
            info = await self.volume_rpc.initialize_connection(
                context, new_host, new_volume_id, export, connector, "rw"
            )
            try:
                crypt = await self._encryption(volume_id)  # its container, byte for byte
                await self.driver.copy_volume_to(volume_id, info, crypt)
            finally:
                with contextlib.suppress(Exception):
                    await self.volume_rpc.terminate_connection(
                        context, new_host, new_volume_id, export
                    )
            self._copied.add(new_volume_id)
        except Exception as exc:  # noqa: BLE001 - any failure ends the migration in error
            LOG.error("migration of volume %s failed: %s", volume_id, exc)
            await self._fail_migration(context, volume_id, new_volume_id)
            return
        finally:
            self._copying.discard(new_volume_id)
        with contextlib.suppress(CompletionFailed):  # ended in error, logged
            await self._complete_migration(context, volume_id, new_volume_id, new_type_id)

    async def _servers_of(self, volume_id: str) -> list[str]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Attachment.instance_uuid).where(
                    Attachment.volume_id == volume_id, Attachment.instance_uuid.is_not(None)
                )
            )
            return sorted(set(rows))

    async def _swap_on_server(self, server: str, volume_id: str, new_volume_id: str) -> None:
        """Nova's update_server_volume: Compute copies the attached volume's data into
        the new one under the running guest (its swap volume, PUT at 2.1)."""
        if self.compute is None or self.identity is None:
            raise MigrationFailed("this volume service cannot reach Compute to move attached data")
        await self.compute.request(
            "PUT",
            url_path("/v2.1/servers/{}/os-volume_attachments/{}", server, volume_id),
            await self.identity.service_token(),
            json={"volumeAttachment": {"volumeId": new_volume_id}},
            ok=(202,),
        )

    async def migrate_volume_completion(
        self, context: dict[str, Any], volume_id: str, new_volume_id: str, error: bool
    ) -> str:
        """os-migrate_volume_completion: error ends the migration (the new volume is
        deleted); otherwise the copied data is swapped in, once the copy is done."""
        if error:
            await self._fail_migration(context, volume_id, new_volume_id)
            return volume_id
        if new_volume_id in self._swapping:  # Compute copied it under its guest
            new_type_id = self._swapping.pop(new_volume_id)
            self._copied.add(new_volume_id)
            await self._complete_migration(context, volume_id, new_volume_id, new_type_id)
            return volume_id
        if new_volume_id in self._copying:
            raise MigrationFailed(
                f"Invalid volume: volume {volume_id}'s data is still being copied"
            )
        if new_volume_id not in self._copied:
            raise MigrationFailed(
                f"Invalid volume: volume {volume_id}'s data was not copied into "
                f"{new_volume_id} (the copy failed or never ran here): complete the migration "
                "with error=true"
            )
        await self._complete_migration(context, volume_id, new_volume_id, None)
        return volume_id

    async def update_migrated_volume(
        self,
        context: dict[str, Any],
        new_volume_id: str,
        original_id: str,
        connections: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """On the destination: the data written into the new volume takes the name of
        the volume moved here; the connections servers have to it, as they are now. An
        encrypted volume's container, copied in whole, is first cut to its payload."""
        async with self.db.read() as session:
            new = await session.get(Volume, new_volume_id)
        if new is not None and new.encryption_key_id and not connections:
            await self.driver.fit_container(new_volume_id, new.size)
        await self.driver.rename_migrated_volume(new_volume_id, original_id)
        return {
            attachment: self.driver.moved_connection(info, original_id)
            for attachment, info in (connections or {}).items()
        }

    async def _set_migration(self, volume_id: str, expected: str, new: str) -> bool:
        async with self.db.write() as session:
            result = await session.execute(
                update(Volume)
                .where(Volume.id == volume_id, Volume.migration_status == expected)
                .values(migration_status=new, updated_at=utcnow())
            )
            return result.rowcount == 1

    async def _wait_for_new_volume(self, new_volume_id: str) -> str:
        """The destination's host@backend#pool once it has made the new volume."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.new_volume_timeout
        while True:
            async with self.db.read() as session:
                new = await session.get(Volume, new_volume_id)
            if new is None or new.status not in (states.CREATING, states.AVAILABLE):
                raise MigrationFailed(
                    f"the destination could not create {new_volume_id} "
                    f"({new.status if new else 'gone'})"
                )
            if new.status == states.AVAILABLE:
                return new.host
            if loop.time() > deadline:
                raise MigrationFailed(f"the destination did not create {new_volume_id} in time")
            await asyncio.sleep(0.2)

    async def _complete_migration(
        self, context: dict[str, Any], volume_id: str, new_volume_id: str, new_type_id: str | None
    ) -> None:
        """The new volume's data (renamed to the volume's) becomes the volume's. Raises
        CompletionFailed when it could not, all undone: the volume stays here with its
        data, migration_status `error`; the new volume is deleted, unless a server
        reads it (Compute's swap): Compute moves its guest back onto the volume, then
        ends the migration with error=true, which deletes it."""
        try:
            if not await self._set_migration(
                volume_id, states.MIGRATING, states.MIGRATION_COMPLETING
            ):
                raise CompletionFailed(f"the migration of volume {volume_id} ended meanwhile")
            await self._swap_in(context, volume_id, new_volume_id, new_type_id)
        except Exception as exc:
            LOG.error("migration of volume %s could not be completed: %s", volume_id, exc)
            async with self.db.read() as session:
                read = await session.scalar(
                    select(Attachment.id).where(Attachment.volume_id == new_volume_id).limit(1)
                )
            await self._fail_migration(context, volume_id, None if read else new_volume_id)
            if isinstance(exc, CompletionFailed):
                raise
            raise CompletionFailed(
                f"the migration of volume {volume_id} could not be completed: {exc}"
            ) from exc
        finally:
            self._copied.discard(new_volume_id)

    async def _swap_in(
        self, context: dict[str, Any], volume_id: str, new_volume_id: str, new_type_id: str | None
    ) -> None:
        async with self.db.read() as session:
            new = await session.get(Volume, new_volume_id)
            attached = list(
                await session.scalars(
                    select(Attachment).where(Attachment.volume_id == new_volume_id)
                )
            )
            # Cinder's completion detaches the volume from the servers that hold the new
            # volume now (Compute's swap left their old attachments to it).
            servers = {a.instance_uuid for a in attached if a.instance_uuid}
            replaced = list(
                await session.scalars(
                    select(Attachment.id).where(
                        Attachment.volume_id == volume_id, Attachment.instance_uuid.in_(servers)
                    )
                )
            )
        if new is None:
            raise CompletionFailed(f"the new volume {new_volume_id} is gone")
        try:
            connections = await self.volume_rpc.update_migrated_volume(
                context,
                new.host,
                new_volume_id,
                volume_id,
                {a.id: json.loads(a.connection_info) for a in attached if a.connection_info},
            )
            await self._take_place(volume_id, new, attached, connections, replaced, new_type_id)
        except Exception:
            # The data goes back to the new volume's name if it was renamed (the volume
            # stays here); the driver refuses when that name is still taken.
            with contextlib.suppress(Exception):
                await self.volume_rpc.update_migrated_volume(
                    context, new.host, volume_id, new_volume_id
                )
            raise
        LOG.info("volume %s moved from %s to %s", volume_id, self.backend_host, new.host)
        for export in replaced:  # as Cinder: a detach that fails does not fail the migration
            try:
                await self.driver.terminate_connection(volume_id, export)
            except Exception:  # noqa: BLE001
                LOG.exception("the export %s of volume %s was not removed", export, volume_id)
        try:
            await self.driver.delete_volume(volume_id)
        except Exception:  # noqa: BLE001 - a start of this backend removes it (see recovery)
            LOG.exception("the data volume %s left on %s was not removed", volume_id, self.host)

    async def _take_place(
        self,
        volume_id: str,
        new: Volume,
        attached: list[Attachment],
        connections: dict[str, dict[str, Any]],
        replaced: list[str],
        new_type_id: str | None,
    ) -> None:
        """One transaction: the volume takes the new volume's host and attachments, the
        new volume's row and the attachments those replace go."""
        async with self.db.write() as session:
            volume = await session.get(Volume, volume_id)
            gone = await session.get(Volume, new.id)
            if volume is None or volume.migration_status != states.MIGRATION_COMPLETING:
                raise CompletionFailed(f"the migration of volume {volume_id} ended meanwhile")
            values: dict[str, Any] = {
                "host": new.host,
                "availability_zone": new.availability_zone,
                "migration_status": states.MIGRATION_SUCCESS,
            }
            if new_type_id:
                specs = await session.execute(
                    select(VolumeTypeExtraSpec.key, VolumeTypeExtraSpec.value).where(
                        VolumeTypeExtraSpec.type_id == new_type_id
                    )
                )
                values["type_id"] = new_type_id
                values["multiattach"] = type_multiattach(dict(specs.all()))
            values.update(self._status_after_move(volume))
            if attached:  # Compute's swap: the server holds the new volume's attachment
                values.update(status=states.IN_USE, attach_status=states.ATTACHED)
            for key, value in values.items():
                setattr(volume, key, value)
            for row in attached:  # Cinder: the new volume's attachments become the volume's
                await session.execute(
                    update(Attachment)
                    .where(Attachment.id == row.id)
                    .values(
                        volume_id=volume_id,
                        connection_info=json.dumps(connections[row.id])
                        if row.id in connections
                        else row.connection_info,
                    )
                )
            for export in replaced:
                await session.execute(delete(Attachment).where(Attachment.id == export))
            if gone is not None:
                await session.flush()
                await session.delete(gone)  # its data now carries the volume's name there

    @staticmethod
    def _status_after_move(volume: Volume) -> dict[str, Any]:
        """A retyping or locked (maintenance) volume goes back to the status it had."""
        back = {"updated_at": utcnow()}
        if volume.status in (states.RETYPING, states.MAINTENANCE):
            back.update(status=volume.previous_status or states.AVAILABLE)
            back.update(previous_status=volume.status)
        return back

    async def _fail_migration(
        self, context: dict[str, Any], volume_id: str, new_volume_id: str | None
    ) -> None:
        """The volume stays where it is (migration_status error); the new volume goes."""
        self._copied.discard(new_volume_id or "")
        self._swapping.pop(new_volume_id or "", None)
        new_host = None
        async with self.db.write() as session:
            volume = await session.get(Volume, volume_id)
            if volume is not None and states.is_migrating(volume.migration_status):
                volume.migration_status = states.MIGRATION_ERROR
                for key, value in self._status_after_move(volume).items():
                    setattr(volume, key, value)
            new = await session.get(Volume, new_volume_id) if new_volume_id else None
            if new is not None:
                if new.host and new.status != states.DELETING:
                    new.status, new.updated_at, new_host = states.DELETING, utcnow(), new.host
                elif not new.host:
                    await session.delete(new)
        if new_host is not None:
            await self.volume_rpc.delete_volume(context, new_host, new_volume_id, [])

    async def _recover_migrations(self, volumes: list[Volume]) -> None:
        """Migrations this backend ran when it stopped end in error (their new volumes
        deleted); the data a finished migration left here is removed."""
        ctx = self.service_context
        for vol in volumes:
            if states.is_migrating(vol.migration_status) and not str(
                vol.migration_status
            ).startswith(states.MIGRATION_TARGET):
                LOG.warning("migration of volume %s was interrupted by a restart", vol.id)
                async with self.db.read() as session:
                    targets = list(
                        await session.scalars(
                            select(Volume.id).where(
                                Volume.migration_status == f"{states.MIGRATION_TARGET}{vol.id}"
                            )
                        )
                    )
                await self._fail_migration(ctx, vol.id, None)
                for target in targets:
                    await self._fail_migration(ctx, vol.id, target)

    async def _moved_away(self) -> set[str]:
        """Files here of volumes that have been moved to another backend since (a
        migration that ended after its copy was written here, or before the data it
        left here was removed): nothing of this backend owns them."""
        here = self.backend_host
        async with self.db.read() as session:
            rows = await session.execute(
                select(Volume.id, Volume.host, Volume.migration_status).where(
                    Volume.migration_status.in_((states.MIGRATION_SUCCESS, states.MIGRATION_ERROR))
                )
            )
            return {
                f"volume-{vid}" for vid, host, _ in rows if rpcapi.backend_of(host or "") != here
            }

    # -- manage / unmanage ----------------------------------------------------------------

    async def get_manageable(self, context: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        """The backend's volumes or snapshots as Cinder's manageable lists show them."""
        objects = await self.driver.list_objects(kind)
        async with self.db.read() as session:
            if kind == "volume":
                known = {f"volume-{v}": (v, None) for v in await session.scalars(select(Volume.id))}
            else:
                rows = await session.execute(select(Snapshot.id, Snapshot.volume_id))
                known = {f"snapshot-{s}": (s, v) for s, v in rows}
        out = []
        for obj in objects:
            cinder_id, origin = known.get(obj.name, (None, None))
            entry: dict[str, Any] = {
                "reference": {"source-name": obj.name},
                "size": obj.size_gb,
                "safe_to_manage": cinder_id is None and not obj.in_use,
                "reason_not_safe": (
                    "already managed" if cinder_id else f"{kind} in use" if obj.in_use else None
                ),
                "cinder_id": cinder_id,
                "extra_info": None,
            }
            if kind == "snapshot":
                entry["source_reference"] = {"source-name": f"volume-{origin}"} if origin else None
            out.append(entry)
        return out

    async def manage_existing_get_size(
        self, context: dict[str, Any], ref: dict[str, Any], kind: str
    ) -> int:
        return await self.driver.manage_existing_get_size(ref, kind)

    async def manage_existing(self, context: dict[str, Any], volume_id: str, ref: dict) -> int:
        return await self.driver.manage_existing(volume_id, ref)

    async def manage_existing_snapshot(
        self, context: dict[str, Any], snapshot_id: str, ref: dict
    ) -> int:
        return await self.driver.manage_existing_snapshot(snapshot_id, ref)

    async def unmanage_volume(self, context: dict[str, Any], volume_id: str) -> None:
        """The volume's row goes; its data stays on the backend (renamed by the driver)."""
        try:
            await self.driver.unmanage(volume_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("volume %s could not be unmanaged: %s", volume_id, exc)
            await self._set_volume(volume_id, states.UNMANAGING, status=states.ERROR_UNMANAGING)
            return
        async with self.db.write() as session:
            volume = await session.get(Volume, volume_id)
            if volume is not None and volume.status == states.UNMANAGING:
                await session.delete(volume)

    async def unmanage_snapshot(self, context: dict[str, Any], snapshot_id: str) -> None:
        try:
            await self.driver.unmanage_snapshot(snapshot_id)
        except Exception as exc:  # noqa: BLE001
            LOG.error("snapshot %s could not be unmanaged: %s", snapshot_id, exc)
            await self._set_snapshot(snapshot_id, states.UNMANAGING, states.ERROR_DELETING)
            return
        async with self.db.write() as session:
            snapshot = await session.get(Snapshot, snapshot_id)
            if snapshot is not None and snapshot.status == states.UNMANAGING:
                await session.delete(snapshot)
