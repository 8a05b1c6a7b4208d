"""Volumes: create (empty, from image, snapshot or volume), list, show, update,
delete (cascade), and their metadata (Block Storage v3 api-ref, "Volumes")."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable
from typing import Any

import httpx
from sqlalchemy import func, or_, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Forbidden, NotFound, ServiceUnavailable
from cumulo.common.key_manager_client import delete_secret
from cumulo.common.openapi import describes, wrapped
from cumulo.common.service_client import ServiceError, url_path
from cumulo.volume import encryption, messages, quotas, states
from cumulo.volume.api import views
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    json,
    list_body,
    page_of,
    page_params,
    parse_bool,
    parse_int,
    service_of,
    sort_keys,
)
from cumulo.volume.api.metadata import MetadataRoutes, check_metadata
from cumulo.volume.backup_store import backup_chain
from cumulo.volume.drivers.driver import GiB
from cumulo.volume.models import (
    Attachment,
    Backup,
    Group,
    GroupVolumeType,
    Snapshot,
    Volume,
    VolumeMetadata,
    VolumeType,
    VolumeTypeAccess,
    VolumeTypeEncryption,
    VolumeTypeExtraSpec,
)
from cumulo.volume.scheduler import RequestSpec, place, type_multiattach

LOG = logging.getLogger(__name__)

SORT_COLUMNS = {
    "created_at": Volume.created_at,
    "updated_at": Volume.updated_at,
    "id": Volume.id,
    "name": Volume.name,
    "display_name": Volume.name,
    "size": Volume.size,
    "status": Volume.status,
    "availability_zone": Volume.availability_zone,
    "bootable": Volume.bootable,
}
# Image properties Glance owns that a volume does not copy into its image metadata.
_IMAGE_META_SKIP = {
    "id", "name", "status", "visibility", "owner", "tags", "self", "file", "schema",
    "created_at", "updated_at", "protected", "os_hidden", "os_hash_algo", "os_hash_value",
    "virtual_size", "locations", "direct_url", "stores",
}  # fmt: skip


async def load_volume(
    request: Request, volume_id: str, rule: str = "volume:get"
) -> tuple[RequestContext, Volume]:
    """The volume, if the caller may see it (404 otherwise, even when it exists elsewhere)."""
    ctx = await authorize(request, "volume:get")
    service = service_of(request)
    async with service.db.read() as session:
        volume = await session.get(Volume, volume_id)
    if volume is None or (
        volume.project_id != ctx.project_id and not service.sees_every_project(ctx)
    ):
        raise NotFound(f"Volume {volume_id} could not be found.")
    if rule != "volume:get":
        await authorize(request, rule, volume.project_id)
    return ctx, volume


async def volume_body(
    request: Request,
    ctx: RequestContext,
    volumes: list[Volume],
    *,
    extended: bool = True,
    legacy: bool = False,
) -> list[dict]:
    """Detail views of several volumes, with three queries for all of them (extended:
    as show and list detail answer, legacy: as manage does, see views.volume_detail)."""
    service = service_of(request)
    ids = [v.id for v in volumes]
    meta: dict[str, dict[str, dict[str, str]]] = {
        i: {"user": {}, "image": {}, "admin": {}} for i in ids
    }
    attachments: dict[str, list[Attachment]] = {i: [] for i in ids}
    async with service.db.read() as session:
        types = {t.id: t for t in await session.scalars(select(VolumeType))}
        if ids:
            for m in await session.scalars(
                select(VolumeMetadata).where(VolumeMetadata.volume_id.in_(ids))
            ):
                meta[m.volume_id][m.kind][m.key] = m.value
            for a in await session.scalars(
                select(Attachment)
                .where(Attachment.volume_id.in_(ids))
                .order_by(Attachment.created_at)
            ):
                attachments[a.volume_id].append(a)
    admin = service.sees_every_project(ctx)  # services: Compute reads migration_status
    # Cinder shows attachments' host to admins and to services (Glance, Nova) too.
    sees_hosts = admin or "service" in ctx.roles
    return [
        views.volume_detail(
            request,
            v,
            vtype=types[v.type_id],
            # Cinder shows the admin metadata keys readonly and attached_mode to users.
            metadata={**meta[v.id]["user"], **meta[v.id]["admin"]},
            image_metadata=meta[v.id]["image"],
            attachments=attachments[v.id],
            admin=admin,
            sees_hosts=sees_hosts,
            extended=extended,
            legacy=legacy,
        )
        for v in volumes
    ]


async def volume_response(
    request: Request,
    ctx: RequestContext,
    volume_id: str,
    *,
    extended: bool = True,
    legacy: bool = False,
) -> dict[str, Any]:
    async with service_of(request).db.read() as session:
        volume = await session.get(Volume, volume_id)
    assert volume is not None
    body = await volume_body(request, ctx, [volume], extended=extended, legacy=legacy)
    return {"volume": body[0]}


# -- create --------------------------------------------------------------------


def _text(spec: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = spec.get(name)
        if value is not None:
            if not isinstance(value, str) or len(value) > 255:
                raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value}.")
            return value
    return None


async def volume_type_for(
    session: Any,
    request: Request,
    ctx: RequestContext,
    ref: str | None,
    *,
    encrypted_ok: bool = False,
) -> tuple[VolumeType, dict[str, str]]:
    """The type asked for (or the default) and its extra specs, in one query; a private
    type only for admins and the projects given access (404 to the rest, as Cinder).
    An encrypted type only where the caller makes or carries its volume's key
    (encrypted_ok); manage cannot adopt data as an encrypted volume (Cinder refuses it
    too)."""
    service = service_of(request)
    name = ref or service.config.volume.default_volume_type
    rows = (
        await session.execute(
            select(VolumeType, VolumeTypeExtraSpec.key, VolumeTypeExtraSpec.value)
            .outerjoin(VolumeTypeExtraSpec, VolumeTypeExtraSpec.type_id == VolumeType.id)
            .where(or_(VolumeType.id == name, VolumeType.name == name))
        )
    ).all()
    if not rows or not await type_usable(session, service, ctx, rows[0][0]):
        raise NotFound(f"Volume type with name {name} could not be found.")
    if not encrypted_ok and await session.get(VolumeTypeEncryption, rows[0][0].id) is not None:
        raise BadRequest(
            f"Invalid input received: volume type {name} is encrypted: this operation "
            "cannot make an encrypted volume yet."
        )
    return rows[0][0], {key: value for _, key, value in rows if key is not None}


async def check_group_member(
    session: Any, ctx: RequestContext, service: Any, group_id: str, type_id: str
) -> None:
    """A volume may join a group of its project whose volume types include its own."""
    group = await session.get(Group, group_id)
    if group is None or (group.project_id != ctx.project_id and not service.is_admin(ctx)):
        raise NotFound(f"Group {group_id} could not be found.")
    types = set(
        await session.scalars(
            select(GroupVolumeType.volume_type_id).where(GroupVolumeType.group_id == group_id)
        )
    )
    if type_id not in types:
        raise BadRequest(
            f"Invalid volume type: the volume type {type_id} is not one of group {group_id}'s."
        )
    if group.status not in ("available", "in-use"):
        raise BadRequest(f"Invalid group: group {group_id} is {group.status}.")


async def type_usable(session: Any, service: Any, ctx: RequestContext, vtype: VolumeType) -> bool:
    if vtype.is_public or service.is_admin(ctx):
        return True
    key = {"type_id": vtype.id, "project_id": ctx.project_id or ""}
    return await session.get(VolumeTypeAccess, key) is not None


async def _image(request: Request, ctx: RequestContext, image_ref: str) -> dict[str, Any]:
    images = service_of(request).images
    if images is None:
        raise BadRequest("Invalid input received: this cloud has no Image service.")
    try:
        image = await images.json("GET", url_path("/v2/images/{}", image_ref), ctx.auth_token)
    except ServiceError as exc:
        if exc.status == 404:
            raise NotFound(f"Image {image_ref} could not be found.") from None
        raise BadRequest(
            f"Invalid image identifier or unable to access requested image: {exc}"
        ) from None
    if image.get("status") != "active":
        raise BadRequest(
            f"Invalid input received: Image {image_ref} is not active "
            f"(status {image.get('status')})."
        )
    return image


def _image_gb(image: dict[str, Any]) -> int:
    size = image.get("virtual_size") or image.get("size") or 0
    if encryption.image_key_id(image):  # a container: its header is not the volume's
        size = max(size - encryption.LUKS2_HEADER, 0)
    return math.ceil(size / GiB)


async def image_for_volume(
    request: Request, ctx: RequestContext, image_ref: str, size: int | None
) -> dict[str, Any]:
    """The active image to write onto a volume of `size` GB (None: sized after it), 400
    when it does not fit (Cinder's check_image_metadata)."""
    image = await _image(request, ctx, image_ref)
    if size is not None and _image_gb(image) > size:
        raise BadRequest(
            f"Invalid input received: Size of specified image {_image_gb(image)} GB is larger "
            f"than volume size {size} GB."
        )
    if size is not None and (image.get("min_disk") or 0) > size:
        raise BadRequest(
            f"Invalid input received: Volume size {size} GB cannot be smaller than the "
            f"image minDisk size {image['min_disk']} GB."
        )
    return image


def image_metadata_of(image: dict[str, Any]) -> dict[str, str]:
    meta = {
        k: str(v)
        for k, v in image.items()
        # os_glance_* are Glance's own reserved properties (import progress)
        if k not in _IMAGE_META_SKIP and not k.startswith("os_glance") and v is not None
    }
    meta.update(image_id=image["id"], image_name=image.get("name") or "")
    return meta


async def _image_metadata_of(session: Any, volume_id: str) -> dict[str, str]:
    rows = await session.scalars(
        select(VolumeMetadata).where(
            VolumeMetadata.volume_id == volume_id, VolumeMetadata.kind == "image"
        )
    )
    return {m.key: m.value for m in rows}


# -- encrypted volumes' keys (cumulo.volume.encryption) --------------------------------


def require_unencrypted(volume: Volume, action: str) -> None:
    """What cannot carry an encrypted volume's key along yet is refused (400)."""
    if volume.encryption_key_id:
        raise BadRequest(f"Invalid volume: {action} an encrypted volume is not supported yet.")


async def _source_key(
    session: Any, snapshot_id: str | None, source_volid: str | None
) -> str | None:
    """The key of the volume a new one copies (a snapshot's volume, or the source)."""
    source = source_volid
    if snapshot_id:
        snap = await session.get(Snapshot, snapshot_id)
        source = snap.volume_id if snap is not None else None
    volume = await session.get(Volume, source) if source else None
    return volume.encryption_key_id if volume is not None else None


async def _volume_key(
    request: Request,
    ctx: RequestContext,
    spec: dict[str, Any],
    volume_id: str,
    snapshot_id: str | None,
    source_volid: str | None,
    image: dict[str, Any] | None,
    backup_id: str | None,
) -> str | None:
    """A new volume's key in the Key Manager, made with the caller's token before the
    volume is (None for an unencrypted type): fresh random bytes, or a copy of the
    source's key when the volume copies an encrypted snapshot, volume, backup or image
    (a copy of a container opens with the same passphrase). What cannot be encrypted is
    a 400 here, before anything is made."""
    service = service_of(request)
    async with service.db.read() as session:
        vtype, _ = await volume_type_for(
            session, request, ctx, _text(spec, "volume_type"), encrypted_ok=True
        )
        wanted = await session.get(VolumeTypeEncryption, vtype.id)
        source_key = await _source_key(session, snapshot_id, source_volid)
        backup = await session.get(Backup, backup_id) if backup_id else None
    if backup is not None and backup.project_id != ctx.project_id and not service.is_admin(ctx):
        backup = None  # another project's: a 404 below, no key touched
    if backup is not None:
        source_key = backup.encryption_key_id
        check_backup_type(backup, vtype.id, wanted is not None)
    source_key = source_key or encryption.image_key_id(image)
    if wanted is None:
        if source_key:
            raise BadRequest(
                "Invalid input received: a volume made from an encrypted volume, snapshot, "
                "backup or image must be of an encrypted volume type."
            )
        return None
    try:
        provider = encryption.provider_of(wanted.provider)
        encryption.check_spec(wanted.cipher, wanted.key_size)
    except encryption.EncryptionError as exc:
        raise BadRequest(str(exc)) from None
    if wanted.control_location != "front-end":
        raise BadRequest(
            "Invalid input received: back-end encryption is not supported by this cloud's "
            "volume backends (front-end only: the compute host decrypts)."
        )
    if (snapshot_id or source_volid) and not source_key:
        raise BadRequest(
            "Invalid input received: an encrypted volume cannot be made from an "
            "unencrypted volume or snapshot."
        )
    if image is not None and not source_key and provider == "luks2":
        raise BadRequest(
            "Invalid input received: an image cannot be written into a LUKS2 volume here "
            "(only dm-crypt opens LUKS2, and the volume hosts have no device-mapper); use "
            "a luks (LUKS1) volume type."
        )
    name = f"volume-{volume_id}"
    if source_key:
        return await clone_key(request, ctx, source_key, name)
    bits = wanted.key_size or encryption.DEFAULT_KEY_SIZE
    return await keep_key(encryption.create_key(service.key_manager, ctx.auth_token, bits, name))


def check_backup_type(backup: Backup, type_id: str, encrypted: bool) -> None:
    """An encrypted backup is restored only into a volume of the type it was taken of,
    and an unencrypted one never into an encrypted volume (Cinder's
    EncryptedBackupOperationFailed, refused here before anything is written)."""
    if backup.encryption_key_id and backup.volume_type_id != type_id:
        raise BadRequest(
            "Invalid volume: Backup operation of an encrypted volume failed: The source "
            f"volume type '{backup.volume_type_id}' is different than the destination "
            f"volume type '{type_id}'."
        )
    if encrypted and not backup.encryption_key_id:
        raise BadRequest(
            "Invalid volume: an unencrypted backup cannot be restored into an encrypted volume."
        )


async def keep_key(made: Awaitable[str]) -> str:
    """The id of a key the Key Manager made with the caller's token; its refusals as
    the API's errors (403, 503)."""
    try:
        return await made
    except ServiceError as exc:
        if exc.status in (401, 403):
            raise Forbidden(f"The Key Manager refused to keep this key: {exc.body[:200]}") from None
        raise ServiceUnavailable(
            f"The Key Manager could not keep this key ({exc.status})."
        ) from None
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"The Key Manager cannot be reached: {exc}") from None


async def clone_key(request: Request, ctx: RequestContext, key_id: str, name: str) -> str:
    """A copy of an encrypted volume's (backup's, image's) key under a new id, made with
    the caller's token (Cinder's clone_encryption_key: each owner deletes its own)."""
    client = service_of(request).key_manager
    return await keep_key(encryption.clone_key(client, ctx.auth_token, key_id, name))


async def drop_key(request: Request, ctx: RequestContext, key_id: str) -> None:
    try:
        await delete_secret(service_of(request).key_manager, ctx.auth_token, key_id)
    except Exception:  # noqa: BLE001 - the error being raised matters more; logged
        LOG.exception("the key %s of a volume never made stays in the Key Manager", key_id)


@describes(
    body=wrapped(
        "volume",
        (
            "size",
            "name",
            "description",
            "volume_type",
            "snapshot_id",
            "source_volid",
            "imageRef",
            "availability_zone",
            "metadata",
            "multiattach",
            "backup_id",
            "consistencygroup_id",
            "group_id",
        ),
    ),
    resource="volume",
)
async def create_volume(request: Request) -> Response:
    body = await json_body(request)
    spec = body.get("volume") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise BadRequest("Missing required element 'volume' in request body.")
    ctx = await authorize(request, "volume:create")
    service = service_of(request)
    name = _text(spec, "name", "display_name")
    description = _text(spec, "description", "display_description")
    metadata = check_metadata(spec.get("metadata") or {})
    snapshot_id = _text(spec, "snapshot_id")
    source_volid = _text(spec, "source_volid")
    image_ref = _text(spec, "imageRef", "image_id")
    backup_id = _text(spec, "backup_id") if at_least(request, 3, 47) else None
    if sum(bool(x) for x in (snapshot_id, source_volid, image_ref, backup_id)) > 1:
        raise BadRequest(
            "Invalid input received: only one of snapshot_id, source_volid, imageRef and "
            "backup_id may be given."
        )
    size = None if spec.get("size") is None else parse_int(spec["size"], "size", minimum=1)
    multiattach = (
        parse_bool(str(spec["multiattach"]), "multiattach") if "multiattach" in spec else False
    )
    zone = _text(spec, "availability_zone") or service.config.volume.availability_zone
    image = await image_for_volume(request, ctx, image_ref, size) if image_ref else None
    if image is not None:
        size = size or max(_image_gb(image), image.get("min_disk") or 0, 1)
    volume_id = str(uuid.uuid4())
    source_backend: str | None = None
    inherited: dict[str, str] | None = None  # a bootable source's image metadata
    key_id = await _volume_key(
        request, ctx, spec, volume_id, snapshot_id, source_volid, image, backup_id
    )
    try:
        async with service.db.write() as session:
            vtype, extra_specs = await volume_type_for(
                session, request, ctx, _text(spec, "volume_type"), encrypted_ok=True
            )
            if snapshot_id:
                snap = await session.get(Snapshot, snapshot_id)
                if snap is None or (
                    snap.project_id != ctx.project_id and not service.is_admin(ctx)
                ):
                    raise NotFound(f"Snapshot {snapshot_id} could not be found.")
                if snap.status != states.AVAILABLE:
                    raise BadRequest(
                        f"Invalid snapshot: Originating snapshot status must be one of 'available' "
                        f"values, but is {snap.status}."
                    )
                size = size or snap.size
                origin = await session.get(Volume, snap.volume_id)
                source_backend = origin.host if origin else None
                # As Cinder: the new volume boots when the snapshot's volume did, with its
                # image metadata.
                if origin is not None and origin.bootable:
                    inherited = await _image_metadata_of(session, origin.id)
                if size < snap.size:
                    raise BadRequest(
                        f"Invalid input received: Volume size '{size}'GB cannot be smaller than "
                        f"the snapshot size {snap.size}GB. They must be >= original snapshot size."
                    )
            if source_volid:
                src = await session.get(Volume, source_volid)
                if src is None or (src.project_id != ctx.project_id and not service.is_admin(ctx)):
                    raise NotFound(f"Volume {source_volid} could not be found.")
                states.require_volume_status(src.status, states.CLONABLE, "clone it")
                states.require_not_migrating(src.id, src.migration_status, "clone")
                size = size or src.size
                source_backend = src.host
                if size < src.size:
                    raise BadRequest(
                        f"Invalid input received: Volume size '{size}'GB cannot be smaller than "
                        f"original volume size {src.size}GB. They must be >= original volume size."
                    )
                if src.bootable:
                    inherited = await _image_metadata_of(session, src.id)
            backup = chain = None
            if backup_id:
                backup = await session.get(Backup, backup_id)
                if backup is None or (
                    backup.project_id != ctx.project_id and not service.is_admin(ctx)
                ):
                    raise NotFound(f"Backup {backup_id} could not be found.")
                if backup.status != states.AVAILABLE:
                    raise BadRequest("Invalid backup: Backup status must be available")
                size = size or backup.size
                if size < backup.size:
                    raise BadRequest(
                        f"Invalid input received: Volume size {size}GB cannot be smaller than "
                        f"the backup size {backup.size}GB."
                    )
                chain = await backup_chain(session, backup)
            group_id = _text(spec, "group_id")
            if group_id:
                await check_group_member(session, ctx, service, group_id, vtype.id)
            if size is None:
                raise BadRequest("Invalid input for field/attribute size. Value: None.")
            await quotas.check(
                session,
                service.config.volume.quota,
                ctx.project_id or "",
                volumes=1,
                gigabytes=size,
                size=size,
            )
            request_spec = RequestSpec(size, zone, extra_specs, backend=source_backend or None)
            best, backends = await place(
                session, volume_id, request_spec, service.config.volume.service_down_time
            )
            if backup is not None and best is not None:
                backup.status, backup.updated_at = states.RESTORING, utcnow()
            # Zones: the configured one and every one a backend reports from.
            if zone not in {service.config.volume.availability_zone}.union(
                b.availability_zone for b in backends
            ):
                raise BadRequest(f"Invalid input received: Availability zone '{zone}' is invalid.")
            session.add(
                Volume(
                    id=volume_id,
                    project_id=ctx.project_id,
                    user_id=ctx.user_id,
                    name=name,
                    description=description,
                    size=size,
                    # No valid backend: error at once, nothing to make (Cinder's outcome).
                    status=(states.RESTORING_BACKUP if backup else states.CREATING)
                    if best
                    else states.ERROR,
                    availability_zone=zone,
                    type_id=vtype.id,
                    host=best.pool_host if best else "",
                    bootable=bool(image) or inherited is not None,
                    # The type decides (the request's `multiattach` is Cinder's deprecated form).
                    multiattach=bool(multiattach) or type_multiattach(extra_specs),
                    snapshot_id=snapshot_id,
                    source_volid=source_volid,
                    image_id=image["id"] if image else None,
                    group_id=group_id or None,
                    encryption_key_id=key_id,
                )
            )
            await session.flush()
            if best is None:
                messages.record(
                    session,
                    ctx,
                    messages.SCHEDULE_ALLOCATE_VOLUME,
                    messages.NO_BACKEND_AVAILABLE,
                    volume_id,
                )
            image_meta = image_metadata_of(image) if image else {}
            if inherited is not None:
                image_meta = inherited
            for key, value in metadata.items():
                session.add(VolumeMetadata(volume_id=volume_id, kind="user", key=key, value=value))
            for key, value in image_meta.items():
                session.add(VolumeMetadata(volume_id=volume_id, kind="image", key=key, value=value))
    except BaseException:
        if key_id is not None:  # no volume: no key (nothing half-made)
            await drop_key(request, ctx, key_id)
        raise
    try:
        if best is not None and backup is not None:
            # Made and filled by the restore (3.47), as `backup restore` to a new volume.
            await service.volume_rpc.restore_backup(
                ctx.to_dict(), best.pool_host, backup.id, volume_id=volume_id, chain=chain,
                size=backup.size, create=True,
            )  # fmt: skip
        elif best is not None:
            await service.volume_rpc.create_volume(
                ctx.to_dict(),
                best.pool_host,
                volume_id,
                size=size,
                snapshot_id=snapshot_id,
                source_volid=source_volid,
                image=image,
            )
    except Exception:
        LOG.exception("volume %s could not be handed to its backend", volume_id)
        async with service.db.write() as session:
            await session.execute(
                update(Volume).where(Volume.id == volume_id).values(status=states.ERROR)
            )
            if backup is not None:
                await session.execute(
                    update(Backup)
                    .where(Backup.id == backup.id, Backup.status == states.RESTORING)
                    .values(status=states.AVAILABLE)
                )
    return accepted(await volume_response(request, ctx, volume_id, extended=False))


# -- list / show / update / delete --------------------------------------------------


def _filters(request: Request, ctx: RequestContext) -> list[Any]:
    service = service_of(request)
    params = request.query_params
    admin = service.is_admin(ctx)
    all_projects = admin and parse_bool(params.get("all_tenants"), "all_tenants")
    where: list[Any] = []
    if not all_projects:
        project = params.get("project_id") if admin and params.get("project_id") else None
        where.append(Volume.project_id == (project or ctx.project_id))
    elif params.get("project_id"):
        where.append(Volume.project_id == params["project_id"])
    for key in ("name", "display_name"):
        if params.get(key) is not None:
            where.append(Volume.name == params[key])
    if params.get("name~"):
        where.append(Volume.name.contains(params["name~"]))
    if params.get("status"):
        where.append(Volume.status == params["status"])
    if params.get("availability_zone"):
        where.append(Volume.availability_zone == params["availability_zone"])
    if params.get("bootable") is not None:
        where.append(Volume.bootable == parse_bool(params["bootable"], "bootable"))
    if params.get("user_id"):
        where.append(Volume.user_id == params["user_id"])
    if params.get("metadata"):
        for key, value in _query_dict(params["metadata"]).items():
            rows = select(VolumeMetadata.volume_id).where(
                VolumeMetadata.kind == "user",
                VolumeMetadata.key == key,
                VolumeMetadata.value == str(value),
            )
            where.append(Volume.id.in_(rows))
    return where


def _query_dict(raw: str) -> dict[str, Any]:
    """Cinder's dict-valued query parameters: a Python/JSON literal like {'k': 'v'}."""
    import ast

    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise BadRequest(f"Invalid input received: Invalid filter value {raw}.") from None
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input received: Invalid filter value {raw}.")
    return value


async def _list(request: Request, detail: bool) -> Response:
    ctx = await authorize(request, "volume:get_all")
    service = service_of(request)
    limit, marker, offset = page_params(request, service.config.volume.list_limit)
    where = _filters(request, ctx)
    order = sort_keys(request, SORT_COLUMNS)
    async with service.db.read() as session:
        ids = list(await session.scalars(select(Volume.id).where(*where).order_by(*order)))
        page, more = page_of(ids, marker, limit, offset)
        rows = {v.id: v for v in await session.scalars(select(Volume).where(Volume.id.in_(page)))}
    volumes = [rows[i] for i in page if i in rows]
    items = (
        await volume_body(request, ctx, volumes)
        if detail
        else [views.volume_summary(request, v) for v in volumes]
    )
    collection = "volumes/detail" if detail else "volumes"
    body = list_body(request, "volumes", items, collection, page, more)
    if parse_bool(request.query_params.get("with_count"), "with_count"):
        body["count"] = len(ids)
    return json(body)


async def list_volumes(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_volumes_detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def volume_summary(request: Request) -> Response:
    """GET /volumes/summary (3.12): count and size of the caller's volumes (every
    project's with all_tenants for admins); their distinct metadata from 3.36."""
    if not at_least(request, 3, 12):
        raise NotFound("Volume summary could not be found.")
    ctx = await authorize(request, "volume:get_all")
    where = _filters(request, ctx)
    async with service_of(request).db.read() as session:
        count, size = (
            await session.execute(
                select(func.count(Volume.id), func.coalesce(func.sum(Volume.size), 0)).where(*where)
            )
        ).one()
        summary: dict[str, Any] = {"total_size": int(size), "total_count": count}
        if at_least(request, 3, 36):
            metadata: dict[str, list[str]] = {}
            rows = await session.execute(
                select(VolumeMetadata.key, VolumeMetadata.value)
                .where(VolumeMetadata.kind == "user", VolumeMetadata.volume_id.in_(
                    select(Volume.id).where(*where)
                ))
                .distinct()
            )  # fmt: skip
            for key, value in rows:
                metadata.setdefault(key, []).append(value)
            summary["metadata"] = metadata
    return json({"volume-summary": summary})


async def show_volume(request: Request) -> Response:
    ctx, volume = await load_volume(request, request.path_params["id"])
    return json({"volume": (await volume_body(request, ctx, [volume]))[0]})


async def update_volume(request: Request) -> Response:
    body = await json_body(request)
    spec = body.get("volume") if isinstance(body, dict) else None
    if not isinstance(spec, dict) or not spec:
        raise BadRequest("Missing required element 'volume' in request body.")
    ctx, volume = await load_volume(request, request.path_params["id"], "volume:update")
    values: dict[str, Any] = {}
    for field, names in (("name", ("name", "display_name")),
                         ("description", ("description", "display_description"))):  # fmt: skip
        if any(n in spec for n in names):
            values[field] = _text(spec, *names)
    metadata = check_metadata(spec["metadata"]) if "metadata" in spec else None
    async with service_of(request).db.write() as session:
        await session.execute(
            update(Volume).where(Volume.id == volume.id).values(updated_at=utcnow(), **values)
        )
        if metadata is not None:
            await volume_metadata.write(session, volume.id, metadata, replace=True)
    return json(await volume_response(request, ctx, volume.id, extended=False))


async def delete_volume(request: Request) -> Response:
    ctx, volume = await load_volume(request, request.path_params["id"], "volume:delete")
    cascade = parse_bool(request.query_params.get("cascade"), "cascade")
    # 3.23: ?force=true, as os-force_delete (admin).
    force = at_least(request, 3, 23) and parse_bool(request.query_params.get("force"), "force")
    if force:
        await authorize(
            request, "volume_extension:volume_admin_actions:force_delete", volume.project_id
        )
    await remove_volume(request, ctx, volume.id, cascade=bool(cascade), force=bool(force))
    return accepted()


async def remove_volume(
    request: Request, ctx: RequestContext, volume_id: str, *, cascade: bool, force: bool
) -> None:
    """Delete (force: os-force_delete, any status but attached, as Cinder)."""
    service = service_of(request)
    async with service.db.write() as session:
        volume = await session.get(Volume, volume_id)
        if volume is None:
            raise NotFound(f"Volume {volume_id} could not be found.")
        if (
            (not force and volume.status not in states.DELETABLE)
            or volume.attach_status == states.ATTACHED
            or states.is_migrating(volume.migration_status)
        ):
            raise BadRequest(
                "Invalid volume: Volume status must be available or error or error_restoring or "
                "error_extending or error_managing and must not be migrating, attached, belong "
                "to a group, have snapshots, awaiting a transfer, or be disassociated from "
                f"snapshots after volume transfer (status: {volume.status})."
            )
        snapshots = list(
            await session.scalars(select(Snapshot).where(Snapshot.volume_id == volume.id))
        )
        if snapshots and not cascade:
            raise BadRequest(
                f"Invalid volume: Volume still has {len(snapshots)} dependent snapshots."
            )
        for snap in snapshots:
            states.require_snapshot_status(snap.status, states.SNAPSHOT_DELETABLE, "delete it")
            snap.status = states.DELETING
        unplaced_key = None if volume.host else volume.encryption_key_id
        if not volume.host:
            # Never placed (no valid backend): nothing on any backend to remove.
            await session.delete(volume)
        else:
            volume.status = states.DELETING
            volume.updated_at = utcnow()
    if not volume.host:
        if unplaced_key:  # its key goes with it (the backend deletes a placed one's)
            await drop_key(request, ctx, unplaced_key)
        return
    await service.volume_rpc.delete_volume(
        ctx.to_dict(), volume.host, volume.id, [s.id for s in snapshots]
    )


async def _metadata_owner(request: Request, volume_id: str, write: bool) -> str:
    rule = "volume:update_volume_metadata" if write else "volume:get_volume_metadata"
    _, volume = await load_volume(request, volume_id, rule)
    if write and volume.status in (states.DELETING, states.ERROR_DELETING):
        states.require_volume_status(
            volume.status, (states.AVAILABLE, states.IN_USE), "update metadata"
        )
    return volume.project_id


volume_metadata = MetadataRoutes(
    "volumes", VolumeMetadata, "volume_id", _metadata_owner, kind="user"
)

# -- encryption metadata (what Compute opens an encrypted volume with) ---------------


async def _encryption_metadata(request: Request) -> dict[str, Any]:
    """Cinder's os-volume-encryption-metadata: the key's id and the type's encryption;
    only the key's id (null) for an unencrypted volume."""
    _, volume = await load_volume(
        request,
        request.path_params["id"],
        "volume_extension:volume_encryption_metadata",
    )
    body: dict[str, Any] = {"encryption_key_id": volume.encryption_key_id}
    if volume.encryption_key_id:
        async with service_of(request).db.read() as session:
            row = await session.get(VolumeTypeEncryption, volume.type_id)
        if row is not None:
            body |= {
                "provider": row.provider,
                "cipher": row.cipher,
                "key_size": row.key_size,
                "control_location": row.control_location,
            }
    return body


async def show_encryption_metadata(request: Request) -> Response:
    return json(await _encryption_metadata(request))


async def show_encryption_metadata_key(request: Request) -> Response:
    body = await _encryption_metadata(request)
    key = request.path_params["key"]
    if key not in body:
        raise NotFound(f"Volume {request.path_params['id']} has no encryption key {key}.")
    return json({key: body[key]})


routes = [
    Route("/v3/volumes", create_volume, methods=["POST"]),
    Route("/v3/volumes", list_volumes, methods=["GET"]),
    Route("/v3/volumes/detail", list_volumes_detail, methods=["GET"]),
    Route("/v3/volumes/summary", volume_summary, methods=["GET"]),
    Route("/v3/volumes/{id}", show_volume, methods=["GET"]),
    Route("/v3/volumes/{id}", update_volume, methods=["PUT"]),
    Route("/v3/volumes/{id}", delete_volume, methods=["DELETE"]),
    Route("/v3/volumes/{id}/encryption", show_encryption_metadata, methods=["GET"]),
    Route("/v3/volumes/{id}/encryption/{key}", show_encryption_metadata_key, methods=["GET"]),
    *volume_metadata.routes(),
]
