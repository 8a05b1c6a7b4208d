"""What a compute host does when a server's volume is swapped for another (Nova's
swap_volume, the call Block Storage makes while it migrates or retypes an attached
volume).

The API has begun the old volume's detach and reserved a new attachment of the new
volume for the server. Here the new attachment is connected to this host, the
hypervisor copies the old volume's data into the new one while the guest runs and
moves the guest's device onto it (the driver's swap_volume; a larger new volume grows
the device, and the mapping's volume_size, as Nova's resize_to), the new attachment is
completed and the old one deleted. During Block Storage's migration (the old volume's
migration_status `migrating`) the host calls os-migrate_volume_completion, as Nova
does: Block Storage finishes the migration, and the volume keeps its id (the mapping's
volume_id stays, its connection info is what Block Storage answers for the new
attachment after the data took the volume's name). Nova calls it once the old
attachment is deleted; here it comes first (Block Storage's completion removes the old
attachment, as Cinder's detaches the source), so that a completion Block Storage
answers with a failure can roll back as below, the volume where it was.

As Nova's (utils.synchronized(instance.uuid)), a swap holds the instance's lock on
this host: an attach, detach or delete of the server waits for it to end.

A failure before the guest's device moved rolls back: the new attachment is deleted,
the old volume stays attached and in-use, the migration (if any) is told it failed,
and the instance action and a fault say why. A failure after it moved (the new
attachment not completed, or the migration not completed) moves the device back onto
the old volume, which is still connected, and rolls back the same way; where it cannot
go back (a device that grew, or the move back failing) the records follow the guest
instead: the mapping names the new attachment and the volume Block Storage says it
belongs to, the old attachment is deleted, and the fault says what was left undone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from cumulo.common.locks import keyed_lock
from cumulo.common.rpc import RemoteError
from cumulo.common.service_client import ServiceClient, url_path
from cumulo.compute import rpcapi
from cumulo.compute.virt.driver import BlockDevice, ComputeDriver

LOG = logging.getLogger(__name__)

VOLUME_API = {"OpenStack-API-Version": "volume 3.44"}
EVENT = "compute_swap_volume"


class VolumeSwap:
    """Mixed into ComputeManager (host, driver, conductor, volumes, _instance_locks,
    _complete_attachment, _drop_attachment, _refresh_device_metadata, _opened)."""

    host: str
    driver: ComputeDriver
    conductor: rpcapi.ConductorAPI
    volumes: ServiceClient | None
    _instance_locks: weakref.WeakValueDictionary[str, asyncio.Lock]
    _complete_attachment: Callable[[str, str], Awaitable[None]]
    _opened: Callable[[str, BlockDevice], Awaitable[BlockDevice]]
    _drop_attachment: Callable[[str, str], Awaitable[None]]
    _refresh_device_metadata: Callable[[dict, str], Awaitable[None]]

    def _connector(self, mountpoint: str | None) -> dict[str, Any]:
        """The connector this host gives Block Storage for a volume it attaches there."""
        return {**self.driver.volume_connector(self.host), "mountpoint": mountpoint}

    def _instance_lock(self, instance_uuid: str) -> asyncio.Lock:
        """Nova's lock on an instance's uuid: one swap, attach, detach or delete of a
        server at a time on this host (the others wait)."""
        return keyed_lock(self._instance_locks, instance_uuid)

    async def swap_volume(
        self,
        ctx: dict,
        instance_uuid: str,
        old_volume_id: str,
        new_volume_id: str,
        new_attachment_id: str,
    ) -> None:
        async with self._instance_lock(instance_uuid):
            await self._swap_volume(
                ctx, instance_uuid, old_volume_id, new_volume_id, new_attachment_id
            )

    async def _swap_volume(
        self,
        ctx: dict,
        instance_uuid: str,
        old_volume_id: str,
        new_volume_id: str,
        new_attachment_id: str,
    ) -> None:
        token = ctx.get("auth_token") or ""
        await self.conductor.action_event(ctx, instance_uuid, EVENT, host=self.host)
        migrating = False
        try:
            if self.volumes is None:
                raise RuntimeError("this compute host has no Block Storage service")
            bdms = await self.conductor.block_devices(ctx, instance_uuid)
            bdm = next((b for b in bdms if b["volume_id"] == old_volume_id), None)
            if bdm is None:
                raise RuntimeError(f"volume {old_volume_id} is not attached to the server")
            old = await self._get_volume(token, old_volume_id)
            new = await self._get_volume(token, new_volume_id)
            migrating = old.get("migration_status") == "migrating"
            # Nova's resize_to: the guest's device grows to a larger new volume.
            resize_to = int(new["size"]) if int(new["size"]) > int(old["size"]) else 0
            # Block Storage's migration gives the new data the volume's id back.
            keep = old_volume_id if migrating else new_volume_id
            info = await self._connect(token, new_attachment_id, bdm["device_name"])
            # An encrypted new volume is opened with its own key (asked by its own id).
            device = await self._opened(
                token, BlockDevice(new_volume_id, bdm["device_name"], info, bdm["boot_index"])
            )
            device = dataclasses.replace(device, volume_id=keep)
            await self.driver.swap_volume(instance_uuid, old_volume_id, device, resize_to)
        except Exception as exc:  # noqa: BLE001 - rolled back, recorded
            await self._roll_back(ctx, instance_uuid, old_volume_id, new_volume_id, exc)
            await self._release_new(token, old_volume_id, new_volume_id, new_attachment_id)
            if migrating:
                await self._migration_completion(token, old_volume_id, new_volume_id, True)
            return
        # The guest reads the new volume from here on.
        errors: list[str] = []

        async def moved_back(exc: Exception) -> bool:
            """Whether the guest reads the old volume again, all rolled back."""
            if errors or resize_to or not await self._move_back(token, instance_uuid, keep, bdm):
                return False
            await self._roll_back(ctx, instance_uuid, old_volume_id, new_volume_id, exc)
            await self._release_new(token, old_volume_id, new_volume_id, new_attachment_id)
            if migrating:
                await self._migration_completion(token, old_volume_id, new_volume_id, True)
            return True

        try:
            await self._complete_attachment(token, new_attachment_id)
        except Exception as exc:  # noqa: BLE001 - moved back, or recorded
            if await moved_back(exc):
                return
            errors.append(f"the new attachment was not completed: {_message(exc)}")
        volume_id = keep
        if migrating:
            # Before the old attachment goes (Block Storage's completion removes it): a
            # migration it could not complete moves the guest back onto the old volume.
            try:
                volume_id = await self._migration_completion(
                    token, old_volume_id, new_volume_id, False
                )
            except Exception as exc:  # noqa: BLE001 - moved back, or recorded
                if await moved_back(exc):
                    return
                errors.append(f"the migration was not completed: {_message(exc)}")
                # Whose attachment it is now, as Block Storage says (else the new volume's).
                volume_id = await self._attachment_volume(token, new_attachment_id, new_volume_id)
        if bdm["attachment_id"]:
            await self._drop_attachment(token, bdm["attachment_id"])
        if migrating:
            try:
                info = await self._attachment_connection(token, new_attachment_id) or info
                await self.driver.update_volume_connection(
                    instance_uuid,
                    BlockDevice(volume_id, bdm["device_name"], info, bdm["boot_index"]),
                    previous_volume_id=keep,
                )
            except Exception as exc:  # noqa: BLE001 - recorded
                errors.append(f"the volume's connection was not updated: {_message(exc)}")
        values: dict[str, Any] = {
            "volume_id": volume_id,
            "attachment_id": new_attachment_id,
            "connection_info": info,
        }
        if resize_to:
            values["volume_size"] = resize_to
        await self.conductor.block_device_update(ctx, bdm["id"], values)
        await self._refresh_device_metadata(ctx, instance_uuid)
        error = "; ".join(errors) or None
        if error is not None:
            LOG.warning("swap of volume %s of %s: %s", old_volume_id, instance_uuid, error)
            await self.conductor.complete_move(
                ctx, instance_uuid, {}, fault=f"swap_volume: {error}", host=self.host
            )
        await self.conductor.action_event(
            ctx, instance_uuid, EVENT, host=self.host, finish=True, error=error
        )

    async def _move_back(
        self, token: str, instance_uuid: str, volume_id: str, bdm: dict[str, Any]
    ) -> bool:
        """The guest's device moved back onto the old volume (its attachment is still
        connected): whether it reads it again."""
        old = BlockDevice(
            bdm["volume_id"], bdm["device_name"], bdm["connection_info"] or {}, bdm["boot_index"]
        )
        try:
            old = await self._opened(token, old)
            await self.driver.swap_volume(instance_uuid, volume_id, old)
        except Exception as exc:  # noqa: BLE001 - the records follow the guest instead
            LOG.warning(
                "volume of %s not moved back onto %s: %s", instance_uuid, old.volume_id, exc
            )
            return False
        return True

    async def _roll_back(
        self, ctx: dict, instance_uuid: str, old_id: str, new_id: str, exc: BaseException
    ) -> None:
        message = _message(exc)
        LOG.warning("swap of volume %s of %s failed: %s", old_id, instance_uuid, message)
        await self.conductor.complete_move(
            ctx,
            instance_uuid,
            {},
            fault=f"Failed to swap volume {old_id} for {new_id}: {message}",
            host=self.host,
        )
        await self.conductor.action_event(
            ctx, instance_uuid, EVENT, host=self.host, finish=True, error=message
        )

    async def _release_new(
        self, token: str, old_volume_id: str, new_volume_id: str, new_attachment_id: str
    ) -> None:
        """The old volume in-use again, the new one's attachment deleted (available)."""
        await self._quiet_action(token, old_volume_id, {"os-roll_detaching": None})
        await self._drop_attachment(token, new_attachment_id)

    async def _get_volume(self, token: str, volume_id: str) -> dict[str, Any]:
        assert self.volumes is not None
        path = url_path("/v3/volumes/{}", volume_id)
        return (await self.volumes.json("GET", path, token, headers=VOLUME_API))["volume"]

    async def _connect(self, token: str, attachment_id: str, device: str) -> dict[str, Any]:
        assert self.volumes is not None
        made = await self.volumes.json(
            "PUT",
            url_path("/v3/attachments/{}", attachment_id),
            token,
            headers=VOLUME_API,
            json={"attachment": {"connector": self._connector(device)}},
        )
        return made["attachment"]["connection_info"]

    async def _attachment_connection(self, token: str, attachment_id: str) -> dict[str, Any]:
        assert self.volumes is not None
        path = url_path("/v3/attachments/{}", attachment_id)
        found = await self.volumes.json("GET", path, token, headers=VOLUME_API)
        return found["attachment"].get("connection_info") or {}

    async def _attachment_volume(self, token: str, attachment_id: str, default: str) -> str:
        assert self.volumes is not None
        try:
            path = url_path("/v3/attachments/{}", attachment_id)
            found = await self.volumes.json("GET", path, token, headers=VOLUME_API)
        except Exception:  # noqa: BLE001 - not moved as far as this host knows
            return default
        return found["attachment"].get("volume_id") or default

    async def _migration_completion(
        self, token: str, volume_id: str, new_volume_id: str, error: bool
    ) -> str:
        """os-migrate_volume_completion: the id the server's volume has from now on."""
        assert self.volumes is not None
        body = {"os-migrate_volume_completion": {"new_volume": new_volume_id, "error": error}}
        path = url_path("/v3/volumes/{}/action", volume_id)
        if error:
            try:
                await self.volumes.request("POST", path, token, headers=VOLUME_API, json=body)
            except Exception:  # noqa: BLE001 - the migration stays to be ended by hand
                LOG.warning("the failed migration of %s could not be ended", volume_id)
            return volume_id
        done = await self.volumes.json("POST", path, token, headers=VOLUME_API, json=body)
        return done["save_volume_id"]

    async def _quiet_action(self, token: str, volume_id: str, action: dict[str, Any]) -> None:
        if self.volumes is None:
            return
        try:
            path = url_path("/v3/volumes/{}/action", volume_id)
            await self.volumes.request("POST", path, token, headers=VOLUME_API, json=action)
        except Exception:  # noqa: BLE001 - best effort, logged
            LOG.warning("%s of volume %s failed", next(iter(action)), volume_id)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RemoteError) else str(exc) or type(exc).__name__
