"""createImage of a volume-backed server, as Nova's compute API snapshot_volume_backed:
no host takes part. Each of the server's volumes gets a Block Storage snapshot (`force`,
it is in use), and an image with no data records them (cumulo.compute.block_device);
a server booted from the image gets new volumes from the snapshots.

The API answers once the snapshots are asked for and the image is created (queued);
this API process then waits for the snapshots to be `available` and activates the
image with an empty upload (Nova's force_activate; Nova activates it at once and lets
a boot find a snapshot still being made). Meanwhile the server's task state is
`image_snapshot`. A snapshot that fails deletes the image and the snapshots, clears
the task and records an instance fault and the action event's error. The guest is not
quiesced (no quiesce RPC here): an image that requires it (`os_require_quiesce`) is
refused for a running server, as Nova refuses when it cannot quiesce.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import update

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, Forbidden
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.block_device import (
    StatusWaitFailed,
    snapshot_image_body,
    snapshot_mapping,
    wait_for_status,
)
from cumulo.compute.models import BlockDeviceMapping, Instance, InstanceFault
from cumulo.compute.states import TaskState, VmState

LOG = logging.getLogger(__name__)

EVENT = "api_snapshot_instance"  # Nova's wrap_instance_event(prefix='api')
_OVER_QUOTA = "Quota exceeded for resources: snapshots"  # Nova's OverQuota(overs='snapshots')
_activations: set[asyncio.Task] = set()  # running image activations (kept from the GC)


class VolumeBackedSnapshots:
    """Mixed into ComputeService (db, policy, images, volumes, conductor, ...)."""

    async def snapshot_volume_backed(
        self, inst: Instance, ctx: RequestContext, name: str, metadata: dict[str, str]
    ) -> str:
        """The snapshot image's id; its snapshots asked for, its activation under way."""
        self.policy.enforce(
            "compute:servers:create_image:allow_volume_backed", ctx, {"project_id": inst.project_id}
        )
        if self.images is None or self.volumes is None:
            raise Conflict(f"Instance {inst.uuid} cannot be snapshotted now.")
        bdms: list[BlockDeviceMapping] = await self.block_devices(inst.uuid)
        volumes = {b.volume_id: await self._volume(ctx, b.volume_id) for b in bdms}
        root = next((b for b in bdms if b.boot_index == 0), None)
        image_meta = volumes[root.volume_id].get("volume_image_metadata") or {} if root else {}
        if inst.vm_state == VmState.ACTIVE and _true(image_meta.get("os_require_quiesce")):
            raise BadRequest(f"Quiescing is not supported in instance {inst.uuid}")
        await self._check_snapshot_quota(ctx, len(bdms))
        await self._set_task(inst, TaskState.IMAGE_SNAPSHOT, {None})
        await self._record_action(ctx, inst, "createImage")
        await self.conductor.action_event(self.rpc_context(ctx), inst.uuid, EVENT)
        snapshot_ids: list[str] = []
        try:
            mappings = []
            for bdm in bdms:
                volume = volumes[bdm.volume_id]
                snapshot_ids.append(await self._snapshot_volume(ctx, volume, name))
                template = {
                    "disk_bus": bdm.disk_bus,
                    "device_type": bdm.device_type,
                    "boot_index": bdm.boot_index,
                    "delete_on_termination": bdm.delete_on_termination,
                    "volume_size": bdm.volume_size or volume["size"],
                    "device_name": bdm.device_name,
                }
                mappings.append(snapshot_mapping(template, snapshot_ids[-1]))
            body = snapshot_image_body(
                name, image_meta, metadata, mappings, root.device_name if root else None
            )
            try:
                image = await self.images.json("POST", "/v2/images", ctx.auth_token, json=body)
            except ServiceError as exc:
                if exc.status in (400, 409, 413):
                    raise BadRequest(f"The image could not be created: {exc.body[:200]}") from None
                raise
        except Exception as exc:
            await self._end_snapshot(ctx, inst, snapshot_ids, None, str(exc), fault=False)
            raise
        job = asyncio.create_task(
            self._activate_snapshot_image(ctx, inst, image["id"], snapshot_ids)
        )
        _activations.add(job)
        job.add_done_callback(_activations.discard)
        return image["id"]

    async def _check_snapshot_quota(self, ctx: RequestContext, count: int) -> None:
        """Nova asks Block Storage's limits first, so that no snapshot is made of a server
        whose volumes would not all fit (403, Nova's OverQuota)."""
        if not count:
            return
        limits = await self.volumes.json("GET", "/v3/limits", ctx.auth_token)
        absolute = limits["limits"]["absolute"]
        most = absolute["maxTotalSnapshots"]
        if most > -1 and absolute["totalSnapshotsUsed"] + count > most:
            raise Forbidden(_OVER_QUOTA)

    async def _snapshot_volume(self, ctx: RequestContext, volume: dict[str, Any], name: str) -> str:
        """create_snapshot_force: Block Storage's refusals as Nova translates them."""
        body = {
            "snapshot": {
                "volume_id": volume["id"],
                "force": True,
                "name": f"snapshot for {name}",
                "description": volume.get("description"),
            }
        }
        try:
            made = await self.volumes.json("POST", "/v3/snapshots", ctx.auth_token, json=body)
        except ServiceError as exc:
            if exc.status == 413:
                raise Forbidden(_OVER_QUOTA) from None
            if exc.status in (400, 404):
                raise BadRequest(f"Invalid input received: {exc.body[:200]}") from None
            raise
        return made["snapshot"]["id"]

    async def _activate_snapshot_image(
        self, ctx: RequestContext, inst: Instance, image_id: str, snapshot_ids: list[str]
    ) -> None:
        """Once every snapshot is available, the image active with no data; or, when one
        fails, the image and the snapshots deleted and the failure recorded."""
        error = None
        try:
            for snapshot_id in snapshot_ids:
                await self._wait_snapshot(ctx, snapshot_id)
            await self.images.request(
                "PUT",
                url_path("/v2/images/{}/file", image_id),
                ctx.auth_token,
                content=b"",
                headers={"Content-Type": "application/octet-stream"},
            )
        except Exception as exc:  # noqa: BLE001 - a background job: the failure is recorded
            error = f"Snapshot of instance {inst.uuid} failed: {exc}"
            LOG.warning("%s", error)
        try:
            if error is None:
                await self._end_snapshot(ctx, inst, [], None, None, fault=False)
            else:
                await self._end_snapshot(ctx, inst, snapshot_ids, image_id, error, fault=True)
        except Exception:  # noqa: BLE001 - a background job: say so in the log
            LOG.exception("the snapshot of %s did not end cleanly", inst.uuid)

    async def _wait_snapshot(self, ctx: RequestContext, snapshot_id: str) -> None:
        path = url_path("/v3/snapshots/{}", snapshot_id)
        timeout = self.config.compute.build_timeout
        await wait_for_status(self.volumes, ctx.auth_token, path, "snapshot", "available", timeout)

    async def _end_snapshot(
        self,
        ctx: RequestContext,
        inst: Instance,
        snapshot_ids: list[str],
        image_id: str | None,
        error: str | None,
        *,
        fault: bool,
    ) -> None:
        """The image and snapshots given deleted (best effort), the task cleared (unless
        another action took the server), a fault with `fault`, the event finished."""
        if image_id:
            try:
                path = url_path("/v2/images/{}", image_id)
                await self.images.request("DELETE", path, ctx.auth_token, ok=(204, 404))
            except ServiceError as exc:
                LOG.warning("image %s of a failed snapshot not deleted: %s", image_id, exc)
        for snapshot_id in snapshot_ids:
            try:
                # Block Storage deletes a snapshot once it is made (or has failed).
                await self._wait_snapshot(ctx, snapshot_id)
            except (StatusWaitFailed, ServiceError):
                pass
            try:
                await self.volumes.request(
                    "DELETE",
                    url_path("/v3/snapshots/{}", snapshot_id),
                    ctx.auth_token,
                    ok=(202, 204, 404),
                )
            except ServiceError as exc:
                LOG.warning("snapshot %s of a failed snapshot not deleted: %s", snapshot_id, exc)
        async with self.db.write() as s:
            await s.execute(
                update(Instance)
                .where(Instance.uuid == inst.uuid, Instance.task_state == TaskState.IMAGE_SNAPSHOT)
                .values(task_state=None, updated_at=utcnow())
            )
            if fault and error:
                s.add(
                    InstanceFault(
                        instance_uuid=inst.uuid, code=500, message=error[:255], details=error
                    )
                )
        await self.conductor.action_event(
            self.rpc_context(ctx), inst.uuid, EVENT, finish=True, error=error
        )


def _true(value: Any) -> bool:
    """oslo's bool_from_string as Nova reads os_require_quiesce."""
    return str(value).strip().lower() in ("1", "t", "true", "on", "y", "yes")
