"""Attaching volumes to servers: the rules both the v3 attachments API and the older
os-reserve/os-attach/os-detach actions call (no HTTP here).

A volume goes available -> reserved (attachment made) -> attaching (a host's
connector given, connection info handed out) -> in-use (completed) and back to
available when its last attachment is deleted. Each step is a compare-and-swap
on the statuses it expects, inside one transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.db import utcnow
from cumulo.common.faults import ApiError, BadRequest, NotFound, ServiceUnavailable
from cumulo.common.rpc import RemoteError, RpcTimeout
from cumulo.volume import states
from cumulo.volume.core import VolumeService
from cumulo.volume.models import Attachment, Volume, VolumeMetadata

T = TypeVar("T")


async def _locked_volume(session: AsyncSession, volume_id: str) -> Volume:
    volume = await session.scalar(select(Volume).where(Volume.id == volume_id).with_for_update())
    if volume is None:
        raise NotFound(f"Volume {volume_id} could not be found.")
    return volume


async def reserve(
    service: VolumeService,
    volume_id: str,
    instance_uuid: str | None,
    *,
    mode: str = "rw",
    status: str = states.RESERVED,
) -> Attachment:
    """A new attachment in `reserved`; the volume `reserved` (or `attaching` for os-reserve)."""
    async with service.db.write() as session:
        volume = await _locked_volume(session, volume_id)
        if not str(volume.migration_status).startswith(states.MIGRATION_TARGET):
            # The new volume of a migration is attached by Compute's swap volume.
            states.require_not_migrating(volume_id, volume.migration_status, "attach")
        allowed = states.ATTACHABLE_MULTI if volume.multiattach else states.ATTACHABLE
        if instance_uuid and not volume.multiattach and volume.status in states.ATTACHABLE_MULTI:
            # Cinder: a second attachment for the same server (Compute swaps attachments
            # so, e.g. when it rebuilds a volume-backed server).
            others = await session.scalar(
                select(func.count(Attachment.id)).where(
                    Attachment.volume_id == volume_id,
                    or_(
                        Attachment.instance_uuid.is_(None),
                        Attachment.instance_uuid != instance_uuid,
                    ),
                )
            )
            if not others:
                allowed = states.ATTACHABLE_MULTI
        if volume.status not in allowed:
            raise BadRequest(
                f"Invalid volume: Volume {volume_id} status must be {' or '.join(allowed)} "
                f"to reserve, but the current status is {volume.status}."
            )
        if instance_uuid and volume.multiattach:
            same = await session.scalar(
                select(func.count(Attachment.id)).where(
                    Attachment.volume_id == volume_id, Attachment.instance_uuid == instance_uuid
                )
            )
            if same:
                raise BadRequest(
                    f"Invalid volume: volume {volume_id} is already attached to {instance_uuid}."
                )
        if mode == "rw" and volume.readonly:
            mode = "ro"
        attachment = Attachment(
            id=str(uuid.uuid4()),
            volume_id=volume_id,
            project_id=volume.project_id,
            instance_uuid=instance_uuid,
            status=states.RESERVED,
            attach_mode=mode,
        )
        session.add(attachment)
        if volume.status == states.AVAILABLE:
            volume.status = status
            volume.attach_status = "attaching"
        volume.updated_at = utcnow()
    return attachment


async def backend_call(call: Awaitable[T], refusals: tuple[str, ...] = ()) -> T:
    """A call to the storage host holding the volume; its failure is Cinder's 500
    (the backend could not do it) or 503 (no answer); a `refusals` exception (the
    request's fault, e.g. InvalidReference) is 400 with its message."""
    try:
        return await call
    except RpcTimeout:
        raise ServiceUnavailable("The volume backend did not answer in time.") from None
    except RemoteError as exc:
        if exc.type in refusals:
            raise BadRequest(exc.message) from None
        raise ApiError(f"The volume backend failed: {exc.message}") from None


async def _volume_host(service: VolumeService, volume_id: str) -> str:
    async with service.db.read() as session:
        host = await session.scalar(select(Volume.host).where(Volume.id == volume_id))
    if not host:
        raise BadRequest(f"Invalid volume: volume {volume_id} is on no backend.")
    return host


async def connect(
    service: VolumeService,
    attachment_id: str,
    connector: dict[str, Any],
    context: dict[str, Any] | None = None,
) -> Attachment:
    """Give the attachment a host: the backend holding the volume exports it (on its
    storage host), connection info recorded."""
    if not isinstance(connector, dict) or not connector:
        raise BadRequest("Invalid input received: connector is required.")
    async with service.db.read() as session:
        attachment = await session.get(Attachment, attachment_id)
    if attachment is None:
        raise NotFound(f"VolumeAttachment {attachment_id} could not be found.")
    host = await _volume_host(service, attachment.volume_id)
    ctx = context or {}
    info = await backend_call(
        service.volume_rpc.initialize_connection(
            ctx, host, attachment.volume_id, attachment.id, connector, attachment.attach_mode
        ),
        refusals=("InvalidConnector",),
    )
    info["data"]["attachment_id"] = attachment.id
    async with service.db.write() as session:
        attachment = await session.get(Attachment, attachment_id)
        if attachment is None:
            await service.volume_rpc.terminate_connection(
                ctx, host, info["data"]["volume_id"], attachment_id
            )
            raise NotFound(f"VolumeAttachment {attachment_id} could not be found.")
        volume = await _locked_volume(session, attachment.volume_id)
        attachment.connector = json.dumps(connector)
        attachment.connection_info = json.dumps(info)
        attachment.attached_host = connector.get("host")
        attachment.mountpoint = connector.get("mountpoint") or attachment.mountpoint
        if attachment.status == states.RESERVED:
            attachment.status = states.ATTACHING
        if volume.status in (states.RESERVED, states.AVAILABLE):
            volume.status = states.ATTACHING
        attachment.updated_at = volume.updated_at = utcnow()
    return attachment


async def complete(
    service: VolumeService, attachment_id: str, mountpoint: str | None = None
) -> Attachment:
    """The host has attached it: attachment `attached`, volume `in-use`."""
    async with service.db.write() as session:
        attachment = await session.get(Attachment, attachment_id)
        if attachment is None:
            raise NotFound(f"VolumeAttachment {attachment_id} could not be found.")
        volume = await _locked_volume(session, attachment.volume_id)
        attachment.status = states.ATTACHED
        attachment.attached_at = attachment.updated_at = utcnow()
        if mountpoint:
            attachment.mountpoint = mountpoint
        volume.status = states.IN_USE
        volume.attach_status = states.ATTACHED
        volume.updated_at = utcnow()
        # Cinder's admin metadata users see: readonly (kept) and the attached mode.
        await set_admin_metadata(session, volume.id, "readonly", str(volume.readonly))
        await set_admin_metadata(session, volume.id, "attached_mode", attachment.attach_mode)
    return attachment


async def set_admin_metadata(
    session: AsyncSession, volume_id: str, key: str, value: str | None
) -> None:
    """Admin metadata (kind "admin"): None removes the key."""
    await session.execute(
        delete(VolumeMetadata).where(
            VolumeMetadata.volume_id == volume_id,
            VolumeMetadata.kind == "admin",
            VolumeMetadata.key == key,
        )
    )
    if value is not None:
        session.add(VolumeMetadata(volume_id=volume_id, kind="admin", key=key, value=value))


async def remove(
    service: VolumeService, attachment_id: str, context: dict[str, Any] | None = None
) -> None:
    """Detach: the export is removed (on the storage host), the attachment deleted, the
    volume `available` again when it was the last one."""
    async with service.db.read() as session:
        attachment = await session.get(Attachment, attachment_id)
    if attachment is None:
        raise NotFound(f"VolumeAttachment {attachment_id} could not be found.")
    host = await _volume_host(service, attachment.volume_id)
    await backend_call(
        service.volume_rpc.terminate_connection(
            context or {}, host, attachment.volume_id, attachment_id
        )
    )
    async with service.db.write() as session:
        attachment = await session.get(Attachment, attachment_id)
        if attachment is None:
            return
        volume = await _locked_volume(session, attachment.volume_id)
        await session.delete(attachment)
        await session.flush()
        left = list(
            await session.scalars(select(Attachment).where(Attachment.volume_id == volume.id))
        )
        if not left and states.is_migrating(volume.migration_status):
            # Cinder hides the detach of a volume Compute is swapping away from (its
            # migration ends it in-use, attached to the new attachment).
            volume.attach_status = states.DETACHED
        elif not left:
            volume.status, volume.attach_status = states.AVAILABLE, states.DETACHED
            await set_admin_metadata(session, volume.id, "attached_mode", None)
        elif any(a.status == states.ATTACHED for a in left):
            volume.status, volume.attach_status = states.IN_USE, states.ATTACHED
        else:
            volume.status, volume.attach_status = states.RESERVED, "attaching"
        volume.updated_at = utcnow()


async def set_volume_status(
    service: VolumeService, volume_id: str, expected: tuple[str, ...], new: str, action: str
) -> None:
    async with service.db.write() as session:
        volume = await _locked_volume(session, volume_id)
        states.require_volume_status(volume.status, expected, action)
        volume.status = new
        volume.updated_at = utcnow()


async def attachments_of(service: VolumeService, volume_id: str) -> list[Attachment]:
    async with service.db.read() as session:
        return list(
            await session.scalars(select(Attachment).where(Attachment.volume_id == volume_id))
        )
