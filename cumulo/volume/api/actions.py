"""`POST /v3/volumes/{id}/action`: extend, read-only flag, bootable, image metadata,
upload to image, reimage (3.68), reset status, and the attach/detach actions compute uses
(os-reserve, os-initialize_connection, os-attach, os-begin_detaching,
os-roll_detaching, os-detach, os-terminate_connection, os-unreserve); retype and
migration are in cumulo.volume.api.migrate, unmanage in cumulo.volume.api.manage."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound, PayloadTooLarge
from cumulo.common.service_client import ServiceError
from cumulo.volume import attach, encryption, messages, quotas, states
from cumulo.volume.api import manage, migrate
from cumulo.volume.api.common import (
    Action,
    accepted,
    at_least,
    json,
    parse_bool,
    parse_int,
    run_action,
    service_of,
)
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.api.volumes import (
    clone_key,
    drop_key,
    image_for_volume,
    image_metadata_of,
    load_volume,
    remove_volume,
)
from cumulo.volume.models import Attachment, Volume, VolumeMetadata
from cumulo.volume.scheduler import NO_VALID_BACKEND, backend_fits

LOG = logging.getLogger(__name__)
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx")


def _bool(args: Any, key: str) -> bool:
    if not isinstance(args, dict) or key not in args:
        raise BadRequest(f"Invalid input received: '{key}' is required.")
    value = args[key]
    parsed = value if isinstance(value, bool) else parse_bool(str(value), key)
    assert parsed is not None
    return parsed


async def _set(request: Request, volume_id: str, **values: Any) -> None:
    async with service_of(request).db.write() as session:
        await session.execute(
            update(Volume).where(Volume.id == volume_id).values(updated_at=utcnow(), **values)
        )


async def extend(request: Request, volume_id: str, args: Any) -> Response:
    ctx, volume = await load_volume(request, volume_id, "volume:extend")
    if not isinstance(args, dict):
        raise BadRequest("Invalid input received: 'new_size' is required.")
    new_size = parse_int(args.get("new_size"), "new_size", minimum=1)
    service = service_of(request)
    allowed = states.EXTENDABLE_IN_USE if at_least(request, 3, 42) else states.EXTENDABLE
    async with service.db.write() as session:
        volume = await session.get(Volume, volume_id)
        assert volume is not None
        states.require_volume_status(volume.status, allowed, "extend it")
        states.require_not_migrating(volume_id, volume.migration_status, "extend")
        if new_size <= volume.size:
            raise BadRequest(
                f"Invalid input received: New size for extend must be greater than current "
                f"size. (current: {volume.size}, extended: {new_size})."
            )
        await quotas.check(
            session,
            service.config.volume.quota,
            volume.project_id,
            gigabytes=new_size - volume.size,
            size=new_size,
        )
        if not await backend_fits(
            session, volume.host, new_size - volume.size, service.config.volume.service_down_time
        ):
            # As Cinder's scheduler: accepted, the volume keeps its size and status, and
            # the user gets a message.
            messages.record(
                session, ctx, messages.EXTEND_VOLUME, messages.NO_BACKEND_AVAILABLE, volume_id
            )
            LOG.warning(
                "extend of volume %s to %s GB: %s (its backend has no room for %s GB more)",
                volume_id, new_size, NO_VALID_BACKEND, new_size - volume.size,
            )  # fmt: skip
            return accepted()
        back_to = volume.status
        volume.status, volume.updated_at = states.EXTENDING, utcnow()
    await service.volume_rpc.extend_volume(ctx.to_dict(), volume.host, volume_id, new_size, back_to)
    if back_to == states.IN_USE:
        service.volume_extended_later(volume_id, new_size)
    return accepted()


async def extend_volume_completion(request: Request, volume_id: str, args: Any) -> Response:
    """os-extend_volume_completion (3.71's action, admin): Compute's answer to a
    volume-extended event for a backend that waits for it. No backend here waits (the
    file backend grows the volume itself, then tells Compute), so, as Cinder answers for
    such a backend, there is never an extend to complete."""
    await load_volume(
        request, volume_id, "volume_extension:volume_admin_actions:extend_volume_completion"
    )
    if args is not None and (not isinstance(args, dict) or set(args) - {"error"}):
        raise BadRequest("Invalid input for field/attribute os-extend_volume_completion.")
    async with service_of(request).db.read() as session:
        volume = await session.get(Volume, volume_id)
    if volume is None or volume.status != states.EXTENDING:
        raise BadRequest("Invalid volume: Volume is not being extended.")
    raise BadRequest("Invalid volume: Required volume admin metadata is malformed or missing.")


async def update_readonly_flag(request: Request, volume_id: str, args: Any) -> Response:
    _, volume = await load_volume(request, volume_id, "volume:update_readonly_flag")
    readonly = _bool(args, "readonly")
    states.require_volume_status(volume.status, states.READONLY_SETTABLE, "update readonly flag")
    async with service_of(request).db.write() as session:
        await session.execute(
            update(Volume)
            .where(Volume.id == volume_id)
            .values(readonly=readonly, updated_at=utcnow())
        )
        await attach.set_admin_metadata(session, volume_id, "readonly", str(readonly))
    return accepted()


async def set_bootable(request: Request, volume_id: str, args: Any) -> Response:
    await load_volume(request, volume_id, "volume:update")
    await _set(request, volume_id, bootable=_bool(args, "bootable"))
    return Response(status_code=200)


async def _image_meta(request: Request, volume_id: str) -> dict[str, str]:
    async with service_of(request).db.read() as session:
        rows = await session.scalars(
            select(VolumeMetadata).where(
                VolumeMetadata.volume_id == volume_id, VolumeMetadata.kind == "image"
            )
        )
        return {r.key: r.value for r in rows}


async def set_image_metadata(request: Request, volume_id: str, args: Any) -> Response:
    await load_volume(request, volume_id, "volume:set_image_metadata")
    items = check_metadata((args or {}).get("metadata") if isinstance(args, dict) else None)
    async with service_of(request).db.write() as session:
        await session.execute(
            delete(VolumeMetadata).where(
                VolumeMetadata.volume_id == volume_id,
                VolumeMetadata.kind == "image",
                VolumeMetadata.key.in_(items),
            )
        )
        for key, value in items.items():
            session.add(VolumeMetadata(volume_id=volume_id, kind="image", key=key, value=value))
    return json({"metadata": await _image_meta(request, volume_id)})


async def unset_image_metadata(request: Request, volume_id: str, args: Any) -> Response:
    await load_volume(request, volume_id, "volume:set_image_metadata")
    key = args.get("key") if isinstance(args, dict) else None
    async with service_of(request).db.write() as session:
        result = await session.execute(
            delete(VolumeMetadata).where(
                VolumeMetadata.volume_id == volume_id,
                VolumeMetadata.kind == "image",
                VolumeMetadata.key == key,
            )
        )
        if result.rowcount == 0:
            raise NotFound(f"Glance metadata for volume {volume_id} with key {key} not found.")
    return Response(status_code=200)


async def show_image_metadata(request: Request, volume_id: str, _args: Any) -> Response:
    await load_volume(request, volume_id)
    return json({"metadata": await _image_meta(request, volume_id)})


async def upload_image(request: Request, volume_id: str, args: Any) -> Response:
    ctx, volume = await load_volume(
        request, volume_id, "volume_extension:volume_actions:upload_image"
    )
    if not isinstance(args, dict) or not isinstance(args.get("image_name"), str):
        raise BadRequest("Invalid input received: 'image_name' is required.")
    force = _bool(args, "force") if "force" in args else False
    disk_format = args.get("disk_format", "raw")
    container_format = args.get("container_format", "bare")
    if disk_format not in DISK_FORMATS:
        raise BadRequest(f"Invalid input received: Invalid disk-format '{disk_format}'.")
    if container_format != "bare":
        raise BadRequest(f"Invalid input received: Invalid container-format '{container_format}'.")
    if volume.encryption_key_id and disk_format != "raw":
        # Cinder's words: the image is the container's bytes, never converted.
        raise BadRequest(
            "An encrypted volume uploaded as an image must use 'raw' disk_format and 'bare' "
            "container_format, which are the defaults for these options."
        )
    service = service_of(request)
    if service.images is None:
        raise BadRequest("Invalid input received: this cloud has no Image service.")
    allowed = states.UPLOADABLE_FORCED if force else states.UPLOADABLE
    states.require_volume_status(volume.status, allowed, "upload it to an image")
    states.require_not_migrating(volume_id, volume.migration_status, "upload")
    image_meta = await _image_meta(request, volume_id)
    new_image: dict[str, Any] = {
        "name": args["image_name"],
        "disk_format": disk_format,
        "container_format": container_format,
        "min_disk": volume.size,
    }
    for key in ("visibility", "protected"):
        if key in args:
            new_image[key] = args[key]
    for key, value in image_meta.items():
        if key not in ("image_id", "image_name", "checksum", "size", "disk_format",
                       "container_format", "min_disk", "min_ram"):  # fmt: skip
            new_image[key] = value
    key_id = None
    if volume.encryption_key_id:
        # The image holds the container: it names its own clone of the volume's key,
        # which the Image service deletes with the image (Cinder's properties).
        key_id = await clone_key(
            request, ctx, volume.encryption_key_id, f"image-of-volume-{volume_id}"
        )
        new_image["cinder_encryption_key_id"] = key_id
        new_image["cinder_encryption_key_deletion_policy"] = "on_image_deletion"
    try:
        image = await service.images.json("POST", "/v2/images", ctx.auth_token, json=new_image)
    except ServiceError as exc:
        if key_id is not None:
            await drop_key(request, ctx, key_id)
        if exc.status == 413:
            raise PayloadTooLarge(f"The Image service refused: {exc.body}") from None
        raise BadRequest(f"Invalid input received: the Image service refused: {exc.body}") from None
    back_to = volume.status
    async with service.db.write() as session:
        result = await session.execute(
            update(Volume)
            .where(Volume.id == volume_id, Volume.status == back_to)
            .values(status=states.UPLOADING, updated_at=utcnow())
        )
        if result.rowcount != 1:
            await service.images.request("DELETE", f"/v2/images/{image['id']}", ctx.auth_token)
            raise BadRequest("Invalid volume: the volume changed status; try again.")
    await service.volume_rpc.upload_to_image(
        ctx.to_dict(), volume.host, volume_id, image["id"], disk_format, back_to
    )
    body = {
        "id": volume_id,
        "updated_at": volume.updated_at.isoformat() if volume.updated_at else None,
        "status": states.UPLOADING,
        "display_description": volume.description,
        "size": volume.size,
        "volume_type": None,
        "image_id": image["id"],
        "container_format": container_format,
        "disk_format": disk_format,
        "image_name": args["image_name"],
    }
    if at_least(request, 3, 1):
        body.update(visibility=image.get("visibility"), protected=image.get("protected"))
    return accepted({"os-volume_upload_image": body})


async def reimage(request: Request, volume_id: str, args: Any) -> Response:
    """os-reimage (3.68): the volume's data replaced by the image's; `downloading`
    meanwhile, then back to the status it had (an `error` volume comes back
    `available`). `reimage_reserved` also lets a `reserved` volume be reimaged: Compute
    rebuilding a volume-backed server reserves its root volume first (api-ref:
    Reimage a volume)."""
    if not at_least(request, 3, 68):
        raise NotFound("There is no such action: os-reimage")
    ctx, volume = await load_volume(request, volume_id, "volume:reimage")
    if not isinstance(args, dict) or set(args) - {"image_id", "reimage_reserved"}:
        raise BadRequest("Invalid input received: os-reimage takes image_id and reimage_reserved.")
    image_id = args.get("image_id")
    if not isinstance(image_id, str) or not image_id:
        raise BadRequest("Invalid input received: 'image_id' is a required property.")
    reserved = _bool(args, "reimage_reserved") if "reimage_reserved" in args else False
    if reserved:
        await load_volume(request, volume_id, "volume:reimage_reserved")
    image = await image_for_volume(request, ctx, image_id, volume.size)
    if encryption.image_key_id(image):
        raise BadRequest(
            "Invalid input received: an image of an encrypted volume's container cannot "
            "reimage a volume (it would need the image's key); create a volume from it."
        )
    allowed = states.REIMAGEABLE_RESERVED if reserved else states.REIMAGEABLE
    service = service_of(request)
    async with service.db.write() as session:
        locked = await session.scalar(
            select(Volume).where(Volume.id == volume_id).with_for_update()
        )
        assert locked is not None
        states.require_volume_status(locked.status, allowed, "reimage it")
        states.require_not_migrating(volume_id, locked.migration_status, "reimage")
        back_to = states.AVAILABLE if locked.status == states.ERROR else locked.status
        locked.status, locked.updated_at = states.DOWNLOADING, utcnow()
    await service.volume_rpc.reimage_volume(
        ctx.to_dict(), volume.host, volume_id, image, back_to, image_metadata_of(image)
    )
    service.volume_reimaged_later(volume_id)
    return accepted()


async def reset_status(request: Request, volume_id: str, args: Any) -> Response:
    await load_volume(request, volume_id, "volume_extension:volume_admin_actions:reset_status")
    if not isinstance(args, dict) or not args:
        raise BadRequest(
            "Invalid input received: Must specify 'status', 'attach_status' or "
            "'migration_status' for update."
        )
    values: dict[str, Any] = {}
    if "status" in args:
        if args["status"] not in states.VOLUME_STATUSES:
            raise BadRequest(f"Invalid input received: Invalid status '{args['status']}'.")
        values["status"] = args["status"]
    if "attach_status" in args:
        if args["attach_status"] not in (states.ATTACHED, states.DETACHED):
            raise BadRequest(
                f"Invalid input received: Invalid attach status '{args['attach_status']}'."
            )
        values["attach_status"] = args["attach_status"]
    if "migration_status" in args:
        # An admin ends a migration stuck by hand ("none" clears it), as in Cinder.
        wanted = str(args["migration_status"]).lower()
        if wanted not in states.MIGRATION_STATUSES:
            raise BadRequest(
                f"Invalid input received: Volume migration status: {wanted} is invalid, valid "
                f"statuses are: {states.MIGRATION_STATUSES}."
            )
        values["migration_status"] = None if wanted == "none" else wanted
    await _set(request, volume_id, **values)
    return accepted()


# -- the attach/detach actions compute uses (pre-3.27 flow) ------------------------------


async def _attach_rule(request: Request, volume_id: str) -> tuple[RequestContext, Volume]:
    return await load_volume(request, volume_id, "volume_extension:volume_actions:attach")


async def reserve(request: Request, volume_id: str, _args: Any) -> Response:
    _, volume = await _attach_rule(request, volume_id)
    states.require_not_migrating(volume_id, volume.migration_status, "reserve")
    service = service_of(request)
    await attach.set_volume_status(
        service, volume_id, states.ATTACHABLE, states.ATTACHING, "reserve it"
    )
    return accepted()


async def unreserve(request: Request, volume_id: str, _args: Any) -> Response:
    await _attach_rule(request, volume_id)
    service = service_of(request)
    if not await attach.attachments_of(service, volume_id):
        await attach.set_volume_status(
            service,
            volume_id,
            (states.ATTACHING, states.RESERVED),
            states.AVAILABLE,
            "unreserve it",
        )
    return accepted()


def _legacy_export(volume_id: str, connector: dict[str, Any]) -> str:
    return f"legacy-{volume_id}-{connector.get('host') or 'local'}"


async def initialize_connection(request: Request, volume_id: str, args: Any) -> Response:
    ctx, volume = await _attach_rule(request, volume_id)
    connector = args.get("connector") if isinstance(args, dict) else None
    if not isinstance(connector, dict):
        raise BadRequest("Invalid input received: 'connector' is required.")
    states.require_volume_status(
        volume.status,
        (states.ATTACHING, states.RESERVED, states.IN_USE, states.AVAILABLE),
        "initialize a connection",
    )
    mode = "ro" if volume.readonly else "rw"
    info = await attach.backend_call(
        service_of(request).volume_rpc.initialize_connection(
            ctx.to_dict(),
            volume.host,
            volume_id,
            _legacy_export(volume_id, connector),
            connector,
            mode,
        )
    )
    return json({"connection_info": info})


async def terminate_connection(request: Request, volume_id: str, args: Any) -> Response:
    ctx, volume = await _attach_rule(request, volume_id)
    connector = args.get("connector") if isinstance(args, dict) else None
    if not isinstance(connector, dict):
        raise BadRequest("Invalid input received: 'connector' is required.")
    await attach.backend_call(
        service_of(request).volume_rpc.terminate_connection(
            ctx.to_dict(), volume.host, volume_id, _legacy_export(volume_id, connector)
        )
    )
    return accepted()


async def os_attach(request: Request, volume_id: str, args: Any) -> Response:
    _, volume = await _attach_rule(request, volume_id)
    if not isinstance(args, dict) or not (args.get("instance_uuid") or args.get("host_name")):
        raise BadRequest(
            "Invalid input received: Invalid request to attach volume to an invalid target."
        )
    mode = args.get("mode", "rw")
    if mode not in ("rw", "ro"):
        raise BadRequest(f"Invalid input received: Invalid attaching mode '{mode}'.")
    if mode == "rw" and volume.readonly:
        raise BadRequest(f"Invalid volume: Volume {volume_id} is read-only: attach it read-only.")
    service = service_of(request)
    if volume.status == states.ATTACHING:
        # Reserved by os-reserve: the attachment picks the reservation up.
        await attach.set_volume_status(
            service, volume_id, (states.ATTACHING,), states.AVAILABLE, "attach"
        )
    attachment = await attach.reserve(service, volume_id, args.get("instance_uuid"), mode=mode)
    await attach.complete(service, attachment.id, args.get("mountpoint"))
    if args.get("host_name"):
        async with service.db.write() as session:
            await session.execute(
                update(Attachment)
                .where(Attachment.id == attachment.id)
                .values(attached_host=args["host_name"])
            )
    return accepted()


async def begin_detaching(request: Request, volume_id: str, _args: Any) -> Response:
    _, volume = await _attach_rule(request, volume_id)
    if states.is_migrating(volume.migration_status):
        # Cinder: a volume Compute swaps away from during its migration keeps its status.
        return accepted()
    await attach.set_volume_status(
        service_of(request), volume_id, (states.IN_USE,), states.DETACHING, "begin detaching"
    )
    return accepted()


async def roll_detaching(request: Request, volume_id: str, _args: Any) -> Response:
    await _attach_rule(request, volume_id)
    service = service_of(request)
    async with service.db.read() as session:
        volume = await session.get(Volume, volume_id)
    if volume is not None and volume.status == states.DETACHING:
        await attach.set_volume_status(
            service, volume_id, (states.DETACHING,), states.IN_USE, "roll back detaching"
        )
    return accepted()


async def os_detach(request: Request, volume_id: str, args: Any) -> Response:
    ctx, volume = await _attach_rule(request, volume_id)
    service = service_of(request)
    attachments = await attach.attachments_of(service, volume_id)
    wanted = args.get("attachment_id") if isinstance(args, dict) else None
    if wanted:
        attachments = [a for a in attachments if a.id == wanted]
        if not attachments:
            raise BadRequest(f"Invalid volume: attachment {wanted} is not of volume {volume_id}.")
    elif len(attachments) > 1:
        raise BadRequest("Invalid volume: the volume has several attachments: give attachment_id.")
    # A volume no longer attached is left as it is (Cinder's manager logs and returns).
    for a in attachments:
        await attach.remove(service, a.id, ctx.to_dict())
    return accepted()


async def force_detach(request: Request, volume_id: str, args: Any) -> Response:
    """os-force_detach (admin): the attachment given, or every one, removed whatever the
    volume's status."""
    ctx, _ = await load_volume(
        request, volume_id, "volume_extension:volume_admin_actions:force_detach"
    )
    service = service_of(request)
    attachments = await attach.attachments_of(service, volume_id)
    wanted = args.get("attachment_id") if isinstance(args, dict) else None
    if wanted:
        attachments = [a for a in attachments if a.id == wanted]
        if not attachments:
            raise NotFound(f"VolumeAttachment {wanted} could not be found.")
    for a in attachments:
        await attach.remove(service, a.id, ctx.to_dict())
    return accepted()


async def force_delete(request: Request, volume_id: str, _args: Any) -> Response:
    ctx, _ = await load_volume(
        request, volume_id, "volume_extension:volume_admin_actions:force_delete"
    )
    await remove_volume(request, ctx, volume_id, cascade=False, force=True)
    return accepted()


ACTIONS: dict[str, Action] = {
    "os-extend": extend,
    "os-extend_volume_completion": extend_volume_completion,
    "os-retype": migrate.retype,
    "os-migrate_volume": migrate.migrate_volume,
    "os-migrate_volume_completion": migrate.migrate_volume_completion,
    "os-unmanage": manage.unmanage_volume,
    "os-update_readonly_flag": update_readonly_flag,
    "os-set_bootable": set_bootable,
    "os-set_image_metadata": set_image_metadata,
    "os-unset_image_metadata": unset_image_metadata,
    "os-show_image_metadata": show_image_metadata,
    "os-volume_upload_image": upload_image,
    "os-reimage": reimage,
    "os-reset_status": reset_status,
    "os-force_delete": force_delete,
    "os-force_detach": force_detach,
    "os-reserve": reserve,
    "os-unreserve": unreserve,
    "os-initialize_connection": initialize_connection,
    "os-terminate_connection": terminate_connection,
    "os-attach": os_attach,
    "os-begin_detaching": begin_detaching,
    "os-roll_detaching": roll_detaching,
    "os-detach": os_detach,
}


async def volume_action(request: Request) -> Response:
    return await run_action(request, ACTIONS)


routes = [Route("/v3/volumes/{id}/action", volume_action, methods=["POST"])]
