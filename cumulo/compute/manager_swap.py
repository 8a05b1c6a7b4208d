"""What a compute host does when a server's volume is swapped for another (Nova's
swap_volume, the call Block Storage makes while it migrates or retypes an attached
volume).

The API has begun the old volume's detach and reserved a new attachment of the new
volume for the server. Here the new attachment is connected to this host, the
hypervisor copies the old volume's data into the new one while the guest runs and
moves the guest's device onto it (the driver's swap_volume), the new attachment is
completed and the old one deleted. During Block Storage's migration (the old volume's
migration_status `migrating`) the host then calls os-migrate_volume_completion, as
Nova does: Block Storage finishes the migration, and the volume keeps its id (the
mapping's volume_id stays, its connection info is what Block Storage answers for the
new attachment after the data took the volume's name). A failure rolls back: the new
attachment is deleted, the old volume stays attached and in-use, the migration (if
any) is told it failed, and the instance action and a fault say why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cumulo.common.rpc import RemoteError
from cumulo.common.service_client import ServiceClient, url_path
from cumulo.compute import rpcapi
from cumulo.compute.virt.driver import BlockDevice, ComputeDriver

LOG = logging.getLogger(__name__)

VOLUME_API = {"OpenStack-API-Version": "volume 3.44"}


class VolumeSwap:
    """Mixed into ComputeManager (host, driver, conductor, volumes, _complete_attachment,
    _drop_attachment, _refresh_device_metadata)."""

    host: str
    driver: ComputeDriver
    conductor: rpcapi.ConductorAPI
    volumes: ServiceClient | None
    _complete_attachment: Callable[[str, str], Awaitable[None]]
    _drop_attachment: Callable[[str, str], Awaitable[None]]
    _refresh_device_metadata: Callable[[dict, str], Awaitable[None]]

    async def swap_volume(
        self,
        ctx: dict,
        instance_uuid: str,
        old_volume_id: str,
        new_volume_id: str,
        new_attachment_id: str,
    ) -> None:
        event = "compute_swap_volume"
        token = ctx.get("auth_token") or ""
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        migrating = False
        try:
            if self.volumes is None:
                raise RuntimeError("this compute host has no Block Storage service")
            bdms = await self.conductor.block_devices(ctx, instance_uuid)
            bdm = next((b for b in bdms if b["volume_id"] == old_volume_id), None)
            if bdm is None:
                raise RuntimeError(f"volume {old_volume_id} is not attached to the server")
            old = await self._get_volume(token, old_volume_id)
            migrating = old.get("migration_status") == "migrating"
            # Block Storage's migration gives the new data the volume's id back.
            keep = old_volume_id if migrating else new_volume_id
            info = await self._connect(token, new_attachment_id, bdm["device_name"])
            device = BlockDevice(keep, bdm["device_name"], info, bdm["boot_index"])
            await self.driver.swap_volume(instance_uuid, old_volume_id, device)
            await self._complete_attachment(token, new_attachment_id)
        except Exception as exc:  # noqa: BLE001 - rolled back, recorded
            await self._swap_failed(ctx, instance_uuid, old_volume_id, new_volume_id, exc)
            await self._quiet_action(token, old_volume_id, {"os-roll_detaching": None})
            await self._drop_attachment(token, new_attachment_id)
            if migrating:
                await self._migration_completion(token, old_volume_id, new_volume_id, True)
            return
        if bdm["attachment_id"]:
            await self._drop_attachment(token, bdm["attachment_id"])
        error = None
        if migrating:
            try:
                keep = await self._migration_completion(token, old_volume_id, new_volume_id, False)
                info = await self._attachment_connection(token, new_attachment_id) or info
                await self.driver.update_volume_connection(
                    instance_uuid, BlockDevice(keep, bdm["device_name"], info, bdm["boot_index"])
                )
            except Exception as exc:  # noqa: BLE001 - the guest reads the new volume already
                error = _message(exc)
                LOG.warning("migration of volume %s not completed: %s", old_volume_id, error)
        await self.conductor.block_device_update(
            ctx,
            bdm["id"],
            {"volume_id": keep, "attachment_id": new_attachment_id, "connection_info": info},
        )
        await self._refresh_device_metadata(ctx, instance_uuid)
        if error is not None:
            await self.conductor.complete_move(
                ctx, instance_uuid, {}, fault=f"swap_volume: {error}", host=self.host
            )
        await self.conductor.action_event(
            ctx, instance_uuid, event, host=self.host, finish=True, error=error
        )

    async def _swap_failed(
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
            ctx, instance_uuid, "compute_swap_volume", host=self.host, finish=True, error=message
        )

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
            json={"attachment": {"connector": {"host": self.host, "mountpoint": device}}},
        )
        return made["attachment"]["connection_info"]

    async def _attachment_connection(self, token: str, attachment_id: str) -> dict[str, Any]:
        assert self.volumes is not None
        path = url_path("/v3/attachments/{}", attachment_id)
        found = await self.volumes.json("GET", path, token, headers=VOLUME_API)
        return found["attachment"].get("connection_info") or {}

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
