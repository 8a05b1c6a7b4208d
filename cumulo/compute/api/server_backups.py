"""createBackup (api-ref: Create Server Back Up (createBackup Action)).

A backup is a snapshot image (made as createImage makes one) marked
`image_type=backup` with its `backup_type`; once it is active, the server's older
backups of that type beyond `rotation` are deleted, newest kept, as Nova's compute
manager does after the upload. `rotation` 0 makes no image and only rotates. The
rotation runs in this API process after the snapshot finishes: if the process stops
first, the next backup of that type rotates them (it deletes every one beyond the
newest `rotation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.service_client import ServiceError, url_path
from cumulo.compute.api.common import compute_of
from cumulo.compute.models import Instance
from cumulo.compute.service import ComputeService

LOG = logging.getLogger(__name__)

JSON_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
_rotations: set[asyncio.Task] = set()  # running rotations (kept from the GC)


def _parse(args: Any) -> tuple[str, str, int, dict[str, str]]:
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute createBackup.")
    name, backup_type = args.get("name"), args.get("backup_type")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise BadRequest("Invalid input for field/attribute name: 1-255 characters.")
    if not isinstance(backup_type, str) or not backup_type:
        raise BadRequest("Invalid input for field/attribute backup_type.")
    rotation = args.get("rotation")
    if isinstance(rotation, str) and rotation.isdecimal():
        rotation = int(rotation)
    if not isinstance(rotation, int) or isinstance(rotation, bool) or rotation < 0:
        raise BadRequest("Invalid input for field/attribute rotation: a non-negative integer.")
    metadata = args.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise BadRequest("Invalid input for field/attribute metadata.")
    return name, backup_type, rotation, metadata


async def create_backup(request: Request, ctx: RequestContext, inst: Instance, args) -> str | None:
    """The backup image's id (None with rotation 0: no image is made)."""
    name, backup_type, rotation, metadata = _parse(args)
    if not inst.image_ref:  # Nova's compute API backup()
        raise BadRequest("Backup is not supported for volume-backed instances.")
    service = compute_of(request)
    if rotation == 0:
        await rotate(service, ctx, inst.uuid, backup_type, keep=0)
        return None
    image_id = await service.create_image(inst, ctx, name, metadata)
    assert service.images is not None  # create_image made an image
    await service.images.request(
        "PATCH",
        url_path("/v2/images/{}", image_id),
        ctx.auth_token,
        content=jsonlib.dumps(
            [
                {"op": "replace", "path": "/image_type", "value": "backup"},
                {"op": "add", "path": "/backup_type", "value": backup_type},
            ]
        ),
        headers=JSON_PATCH,
    )
    task = asyncio.create_task(
        _rotate_when_active(service, ctx, inst.uuid, image_id, backup_type, rotation)
    )
    _rotations.add(task)
    task.add_done_callback(_rotations.discard)
    return image_id


async def _rotate_when_active(
    service: ComputeService,
    ctx: RequestContext,
    instance_uuid: str,
    image_id: str,
    backup_type: str,
    rotation: int,
) -> None:
    assert service.images is not None
    deadline = time.monotonic() + service.config.compute.build_timeout
    try:
        while time.monotonic() < deadline:
            try:
                image = await service.images.json(
                    "GET", url_path("/v2/images/{}", image_id), ctx.auth_token
                )
            except ServiceError:
                return  # deleted: the backup failed, nothing to rotate against
            if image["status"] == "active":
                await rotate(service, ctx, instance_uuid, backup_type, keep=rotation)
                return
            if image["status"] in ("killed", "deleted", "deactivated"):
                return
            await asyncio.sleep(0.5)
    except Exception:  # noqa: BLE001 - a background job: say so in the log
        LOG.exception("rotation of %s backups of %s failed", backup_type, instance_uuid)


async def rotate(
    service: ComputeService, ctx: RequestContext, instance_uuid: str, backup_type: str, keep: int
) -> None:
    """Delete the server's backups of this type beyond the newest `keep`."""
    if service.images is None:
        return
    query = urlencode(
        {
            "instance_uuid": instance_uuid,
            "image_type": "backup",
            "backup_type": backup_type,
            "sort_key": "created_at",
            "sort_dir": "desc",
            "limit": 1000,
        }
    )
    listed = await service.images.json("GET", f"/v2/images?{query}", ctx.auth_token)
    for image in listed["images"][keep:]:
        with contextlib.suppress(ServiceError):  # already gone
            await service.images.request(
                "DELETE", url_path("/v2/images/{}", image["id"]), ctx.auth_token
            )
        LOG.info("backup %s of %s rotated out", image["id"], instance_uuid)
