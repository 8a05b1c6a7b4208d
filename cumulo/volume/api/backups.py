"""Backups: create (full or incremental, of a volume or a snapshot), list (summary and
detail), show, update (3.9), delete, restore to the same or a new volume, and the admin
actions (Block Storage v3 api-ref, "Backups"). The data is objects in the owner's
Object Storage account (cumulo.volume.backup_store), written by the manager of the
volume's backend; the API keeps the rows and the statuses."""

from __future__ import annotations

import base64
import json as jsonlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, NotFound, PayloadTooLarge
from cumulo.common.openapi import describes, wrapped
from cumulo.volume import quotas, states
from cumulo.volume.api.common import (
    accepted,
    at_least,
    authorize,
    element,
    isotime,
    json,
    links,
    list_body,
    load_owned,
    owned_page,
    parse_bool,
    run_action,
    service_of,
)
from cumulo.volume.api.metadata import check_metadata
from cumulo.volume.api.volumes import check_backup_type, clone_key, drop_key, volume_type_for
from cumulo.volume.backup_store import backup_chain, object_prefix
from cumulo.volume.models import Backup, Snapshot, Volume, VolumeTypeEncryption
from cumulo.volume.scheduler import RequestSpec, place

DEFAULT_CONTAINER = "volumebackups"  # Cinder's backup_swift_container

SORT_COLUMNS = {
    "created_at": Backup.created_at,
    "updated_at": Backup.updated_at,
    "id": Backup.id,
    "name": Backup.name,
    "size": Backup.size,
    "status": Backup.status,
    "volume_id": Backup.volume_id,
}


async def load_backup(
    request: Request, backup_id: str, rule: str = "backup:get"
) -> tuple[RequestContext, Backup]:
    return await load_owned(request, Backup, backup_id, "Backup", "backup:get", rule)


def _summary(request: Request, b: Backup) -> dict[str, Any]:
    body: dict[str, Any] = {"id": b.id, "name": b.name, "links": links(request, "backups", b.id)}
    if at_least(request, 3, 43):
        body["metadata"] = jsonlib.loads(b.metadata_json or "{}")
    return body


def _detail(request: Request, b: Backup, dependents: int, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": b.id,
        "name": b.name,
        "description": b.description,
        "status": b.status,
        "fail_reason": b.fail_reason,
        "availability_zone": b.availability_zone,
        "container": b.container,
        "object_count": b.object_count,
        "size": b.size,
        "volume_id": b.volume_id,
        "snapshot_id": b.snapshot_id,
        "is_incremental": b.parent_id is not None,
        "has_dependent_backups": dependents > 0,
        "created_at": isotime(b.created_at),
        "updated_at": isotime(b.updated_at),
        "data_timestamp": isotime(b.data_timestamp),
        "links": links(request, "backups", b.id),
    }
    if at_least(request, 3, 18) and admin:
        body["os-backup-project-attr:project_id"] = b.project_id
    if at_least(request, 3, 43):
        body["metadata"] = jsonlib.loads(b.metadata_json or "{}")
    if at_least(request, 3, 56):
        body["user_id"] = b.user_id
    return body


async def _dependents(session: Any, ids: list[str]) -> dict[str, int]:
    rows = await session.execute(
        select(Backup.parent_id, func.count(Backup.id))
        .where(Backup.parent_id.in_(ids))
        .group_by(Backup.parent_id)
    )
    return dict(rows.all())


def _text(spec: dict[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 255):
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}.")
    return value


async def _check_quota(session: Any, service: Any, project_id: str, size: int) -> None:
    limit = await quotas.limits(session, service.config.volume.quota, project_id)
    count, gigabytes = (
        await session.execute(
            select(func.count(Backup.id), func.coalesce(func.sum(Backup.size), 0)).where(
                Backup.project_id == project_id
            )
        )
    ).one()
    if 0 <= limit["backups"] < count + 1:
        raise PayloadTooLarge(
            f"BackupLimitExceeded: Maximum number of backups allowed ({limit['backups']}) exceeded"
        )
    if 0 <= limit["backup_gigabytes"] < gigabytes + size:
        raise PayloadTooLarge(
            "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup "
            f"gigabytes quota. Requested {size}G, quota is {limit['backup_gigabytes']}G and "
            f"{gigabytes}G has been consumed."
        )


@describes(
    body=wrapped(
        "backup",
        (
            "volume_id",
            "container",
            "name",
            "description",
            "incremental",
            "force",
            "snapshot_id",
            "metadata",
            "availability_zone",
        ),
        required=("volume_id",),
    ),  # fmt: skip
    resource="backup",
)
async def create_backup(request: Request) -> Response:
    spec = await element(request, "backup")
    ctx = await authorize(request, "backup:create")
    volume_id = spec.get("volume_id")
    if not isinstance(volume_id, str):
        raise BadRequest(
            "Invalid input for field/attribute backup. 'volume_id' is a required property."
        )
    container = _text(spec, "container")
    if container is not None and ("/" in container or not container):
        raise BadRequest(f"Invalid input received: Invalid container name {container!r}.")
    asked = _BackupAsked(
        name=_text(spec, "name"),
        description=_text(spec, "description"),
        container=container,
        incremental=bool(parse_bool(str(spec.get("incremental", False)), "incremental")),
        force=bool(parse_bool(str(spec.get("force", False)), "force")),
        snapshot_id=_text(spec, "snapshot_id"),
        metadata=check_metadata(spec.get("metadata") or {}) if at_least(request, 3, 43) else {},
    )
    backup_id = str(uuid.uuid4())
    key_id = await _backup_key(request, ctx, volume_id, backup_id)
    try:
        return await _create_backup(request, ctx, asked, backup_id, volume_id, key_id)
    except BaseException:
        if key_id is not None:  # no backup: no key (nothing half-made)
            await drop_key(request, ctx, key_id)
        raise


async def _backup_key(
    request: Request, ctx: RequestContext, volume_id: str, backup_id: str
) -> str | None:
    """An encrypted volume's backup keeps a clone of its key (Cinder's: the backup
    outlives the volume, and a restore needs the key its container opens with)."""
    service = service_of(request)
    async with service.db.read() as session:
        volume = await session.get(Volume, volume_id)
    if volume is None or not volume.encryption_key_id:
        return None  # an unencrypted volume, or a 404 below
    if volume.project_id != ctx.project_id and not service.is_admin(ctx):
        return None
    return await clone_key(request, ctx, volume.encryption_key_id, f"backup-{backup_id}")


@dataclass(frozen=True)
class _BackupAsked:
    name: str | None
    description: str | None
    container: str | None
    incremental: bool
    force: bool
    snapshot_id: str | None
    metadata: dict[str, str]


async def _create_backup(
    request: Request,
    ctx: RequestContext,
    asked: _BackupAsked,
    backup_id: str,
    volume_id: str,
    key_id: str | None,
) -> Response:
    service = service_of(request)
    name, description, container = asked.name, asked.description, asked.container
    snapshot_id, metadata, force = asked.snapshot_id, asked.metadata, asked.force
    async with service.db.write() as session:
        volume = await session.get(Volume, volume_id)
        if volume is None or (volume.project_id != ctx.project_id and not service.is_admin(ctx)):
            raise NotFound(f"Volume {volume_id} could not be found.")
        if bool(volume.encryption_key_id) != bool(key_id):
            raise BadRequest("Invalid volume: the volume's encryption changed; try again.")
        data_timestamp = utcnow()
        if snapshot_id:
            snap = await session.get(Snapshot, snapshot_id)
            if snap is None or snap.volume_id != volume.id:
                raise NotFound(f"Snapshot {snapshot_id} could not be found.")
            if snap.status != states.AVAILABLE:
                raise BadRequest(
                    f"Invalid snapshot: Snapshot to be backed up must be available, but the "
                    f'current status is "{snap.status}".'
                )
            data_timestamp = snap.created_at
        elif volume.status == states.IN_USE and not force:
            raise BadRequest("Invalid volume: Backing up an in-use volume must use the force flag.")
        elif volume.status not in states.BACKUPABLE_FORCED:
            raise BadRequest(
                f"Invalid volume: Volume to be backed up must be available or in-use, but "
                f'the current status is "{volume.status}".'
            )
        states.require_not_migrating(volume.id, volume.migration_status, "back up")
        parent = None
        if asked.incremental:
            parent = await session.scalar(
                select(Backup)
                .where(Backup.volume_id == volume.id, Backup.status == states.AVAILABLE)
                .order_by(Backup.data_timestamp.desc(), Backup.created_at.desc())
                .limit(1)
            )
            if parent is None:
                raise BadRequest(
                    "Invalid backup: No backups available to do an incremental backup."
                )
            container = container or parent.container
        await _check_quota(session, service, volume.project_id, volume.size)
        back_to = volume.status
        if not snapshot_id:
            # The volume is read while it is backing-up (Cinder's previous_status after).
            volume.status, volume.updated_at = states.BACKING_UP, utcnow()
        now = utcnow()
        session.add(
            Backup(
                id=backup_id,
                project_id=volume.project_id,
                user_id=ctx.user_id,
                volume_id=volume.id,
                snapshot_id=snapshot_id,
                name=name,
                description=description,
                status=states.CREATING,
                availability_zone=volume.availability_zone,
                host=volume.host,
                account=f"{service.config.object_store.reseller_prefix}{volume.project_id}",
                container=container or DEFAULT_CONTAINER,
                object_prefix=object_prefix(
                    volume.id, backup_id, volume.availability_zone, now.strftime("%Y%m%d%H%M%S")
                ),
                size=volume.size,
                object_count=0,
                parent_id=parent.id if parent is not None else None,
                metadata_json=jsonlib.dumps(metadata),
                volume_type_id=volume.type_id,
                encryption_key_id=key_id,
                data_timestamp=data_timestamp,
                created_at=now,
            )
        )
        host = volume.host
        chain = [parent.container, parent.object_prefix] if parent is not None else None
    await service.volume_rpc.create_backup(
        ctx.to_dict(), host, backup_id, volume_id=volume_id,
        back_to=back_to if not snapshot_id else states.BACKING_UP, parent=chain,
    )  # fmt: skip
    async with service.db.read() as session:
        row = await session.get(Backup, backup_id)
    assert row is not None
    return json({"backup": _summary(request, row)}, 202)


async def _list(request: Request, detail: bool) -> Response:
    await authorize(request, "backup:get_all")
    service = service_of(request)
    ctx, ids, backups, more = await owned_page(
        request, Backup, ("name", "status", "volume_id"), SORT_COLUMNS
    )
    admin = service.is_admin(ctx)
    page = [b.id for b in backups]
    dependents: dict[str, int] = {}
    if detail:
        async with service.db.read() as session:
            dependents = await _dependents(session, page)
    items = [
        _detail(request, b, dependents.get(b.id, 0), admin) if detail else _summary(request, b)
        for b in backups
    ]
    collection = "backups/detail" if detail else "backups"
    body = list_body(request, "backups", items, collection, page, more)
    if at_least(request, 3, 45) and parse_bool(
        request.query_params.get("with_count"), "with_count"
    ):
        body["count"] = len(ids)
    return json(body)


async def list_backups(request: Request) -> Response:
    return await _list(request, detail=False)


async def list_backups_detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def show_backup(request: Request) -> Response:
    ctx, backup = await load_backup(request, request.path_params["id"])
    service = service_of(request)
    async with service.db.read() as session:
        dependents = await _dependents(session, [backup.id])
    body = _detail(request, backup, dependents.get(backup.id, 0), service.is_admin(ctx))
    return json({"backup": body})


async def update_backup(request: Request) -> Response:
    if not at_least(request, 3, 9):
        raise NotFound("The resource could not be found.")
    spec = await element(request, "backup")
    _, backup = await load_backup(request, request.path_params["id"], "backup:update")
    values: dict[str, Any] = {"updated_at": utcnow()}
    for key in ("name", "description"):
        if key in spec:
            values[key] = _text(spec, key)
    if "metadata" in spec and at_least(request, 3, 43):
        values["metadata_json"] = jsonlib.dumps(check_metadata(spec["metadata"] or {}))
    async with service_of(request).db.write() as session:
        await session.execute(update(Backup).where(Backup.id == backup.id).values(**values))
        row = await session.get(Backup, backup.id)
        assert row is not None
        body = _summary(request, row)
    return json({"backup": body})


async def delete_backup(request: Request) -> Response:
    ctx, backup = await load_backup(request, request.path_params["id"], "backup:delete")
    await _delete(request, ctx, backup.id, force=False)
    return accepted()


async def _delete(request: Request, ctx: RequestContext, backup_id: str, force: bool) -> None:
    service = service_of(request)
    async with service.db.write() as session:
        row = await session.get(Backup, backup_id)
        if row is None:
            raise NotFound(f"Backup {backup_id} could not be found.")
        if not force and row.status not in states.BACKUP_DELETABLE:
            raise BadRequest("Invalid backup: Backup status must be available or error")
        if force and row.status not in (*states.BACKUP_DELETABLE, states.CREATING,
                                        states.ERROR_DELETING):  # fmt: skip
            raise BadRequest(
                "Invalid backup: Backup status must be available, error, creating or "
                "error_deleting to be force deleted"
            )
        if await session.scalar(select(func.count(Backup.id)).where(Backup.parent_id == row.id)):
            raise BadRequest("Invalid backup: Incremental backups exist for this backup.")
        row.status, row.updated_at = states.DELETING, utcnow()
        host = row.host
    await service.volume_rpc.delete_backup(ctx.to_dict(), host, backup_id)


@describes(body=wrapped("restore", ("volume_id", "name")), resource="restore")
async def restore_backup(request: Request) -> Response:
    spec = await element(request, "restore")
    ctx, backup = await load_backup(request, request.path_params["id"], "backup:restore")
    volume_id, name = _text(spec, "volume_id"), _text(spec, "name")
    create = not volume_id
    volume_id = volume_id or str(uuid.uuid4())
    # The restored volume's own copy of an encrypted backup's key (Cinder clones it
    # again for every restore: each volume deletes its own).
    key_id = None
    if backup.encryption_key_id:
        key_id = await clone_key(request, ctx, backup.encryption_key_id, f"volume-{volume_id}")
    try:
        return await _restore(request, ctx, backup.id, volume_id, name, create, key_id)
    except BaseException:
        if key_id is not None:
            await drop_key(request, ctx, key_id)
        raise


async def _restore(
    request: Request,
    ctx: RequestContext,
    backup_id: str,
    volume_id: str,
    name: str | None,
    create: bool,
    key_id: str | None,
) -> Response:
    service = service_of(request)
    async with service.db.write() as session:
        row = await session.get(Backup, backup_id)
        assert row is not None
        if row.status != states.AVAILABLE:
            raise BadRequest("Invalid backup: Backup status must be available")
        chain = await backup_chain(session, row)
        if create:
            await quotas.check(session, service.config.volume.quota, ctx.project_id or "",
                               volumes=1, gigabytes=row.size, size=row.size)  # fmt: skip
            # An encrypted backup comes back as a volume of the type it was taken of.
            vtype, extra_specs = await volume_type_for(
                session, request, ctx, row.volume_type_id if key_id else None, encrypted_ok=True
            )
            encrypted = await session.get(VolumeTypeEncryption, vtype.id) is not None
            check_backup_type(row, vtype.id, encrypted)
            zone = service.config.volume.availability_zone
            best, _ = await place(session, volume_id, RequestSpec(row.size, zone, extra_specs),
                                  service.config.volume.service_down_time)  # fmt: skip
            if best is None:
                raise BadRequest("Invalid input received: No valid backend was found.")
            volume = Volume(
                id=volume_id, project_id=ctx.project_id, user_id=ctx.user_id,
                name=name or f"restore_backup_{row.id}", description=None, size=row.size,
                status=states.RESTORING_BACKUP, availability_zone=zone, type_id=vtype.id,
                host=best.pool_host, encryption_key_id=key_id,
            )  # fmt: skip
            session.add(volume)
        else:
            volume = await session.get(Volume, volume_id)
            if volume is None or (
                volume.project_id != ctx.project_id and not service.is_admin(ctx)
            ):
                raise NotFound(f"Volume {volume_id} could not be found.")
            if volume.status != states.AVAILABLE:
                raise BadRequest(
                    f"Invalid volume: Volume to be restored to must be available, but the "
                    f'current status is "{volume.status}".'
                )
            if volume.size < row.size:
                raise BadRequest(
                    f"Invalid volume: volume size {volume.size} is too small to restore "
                    f"backup of size {row.size}."
                )
            check_backup_type(row, volume.type_id, bool(volume.encryption_key_id))
            volume.status, volume.updated_at = states.RESTORING_BACKUP, utcnow()
        row.status, row.updated_at = states.RESTORING, utcnow()
        host, volume_name, size = volume.host, volume.name, row.size
    # Restored onto an existing encrypted volume: its manager gives it the new key (and
    # deletes the one it had) once the backup's container is its data.
    await service.volume_rpc.restore_backup(
        ctx.to_dict(), host, backup_id, volume_id=volume_id, chain=chain, size=size,
        create=create, **({"key_id": key_id} if key_id and not create else {}),
    )  # fmt: skip
    body = {"backup_id": backup_id, "volume_id": volume_id, "volume_name": volume_name or ""}
    return json({"restore": body}, 202)


async def reset_backup_status(request: Request, backup_id: str, args: Any) -> Response:
    await load_backup(request, backup_id, "volume_extension:backup_admin_actions:reset_status")
    status = args.get("status") if isinstance(args, dict) else None
    if status not in (states.AVAILABLE, states.ERROR):
        raise BadRequest(f"Invalid input received: Invalid status '{status}'.")
    async with service_of(request).db.write() as session:
        await session.execute(
            update(Backup).where(Backup.id == backup_id).values(status=status, updated_at=utcnow())
        )
    return accepted()


async def force_delete_backup(request: Request, backup_id: str, _args: Any) -> Response:
    ctx, backup = await load_backup(
        request, backup_id, "volume_extension:backup_admin_actions:force_delete"
    )
    await _delete(request, ctx, backup.id, force=True)
    return accepted()


BACKUP_SERVICE = "cinder.backup.drivers.swift.SwiftBackupDriver"  # what its objects are
# What an exported record carries (Cinder's backup_url: the backup's row as base64 JSON).
RECORD_FIELDS = ("id", "user_id", "project_id", "volume_id", "snapshot_id", "name",
                 "description", "fail_reason", "availability_zone", "host", "account",
                 "container", "object_prefix", "size", "object_count", "parent_id",
                 "metadata_json", "volume_type_id", "encryption_key_id")  # fmt: skip


async def export_record(request: Request) -> Response:
    """An admin's copy of the backup's record, to import it again after losing the
    database (or into another cloud reading the same object store)."""
    _, backup = await load_backup(request, request.path_params["id"], "backup:export-import")
    if backup.status != states.AVAILABLE:
        raise BadRequest("Invalid backup: Backup status must be available and not restoring.")
    record = {key: getattr(backup, key) for key in RECORD_FIELDS}
    record["data_timestamp"] = isotime(backup.data_timestamp)
    record["created_at"] = isotime(backup.created_at)
    url = base64.b64encode(jsonlib.dumps(record).encode()).decode()
    return json({"backup-record": {"backup_service": BACKUP_SERVICE, "backup_url": url}})


async def import_record(request: Request) -> Response:
    """A backup made again from an exported record: same id, the same objects; owned by
    the importing project (Cinder's import_record)."""
    ctx = await authorize(request, "backup:export-import")
    spec = await element(request, "backup-record")
    if spec.get("backup_service") != BACKUP_SERVICE:
        raise BadRequest(
            f"Invalid input received: Unsupported backup service {spec.get('backup_service')}."
        )
    try:
        record = jsonlib.loads(base64.b64decode(str(spec.get("backup_url", "")), validate=True))
        if not isinstance(record, dict) or not all(
            record.get(k) for k in ("id", "account", "container", "object_prefix", "size")
        ):
            raise ValueError
        for key in RECORD_FIELDS:
            kind = int if key in ("size", "object_count") else str
            if record.get(key) is not None and type(record[key]) is not kind:
                raise ValueError
        uuid.UUID(str(record["id"]))
    except ValueError:
        raise BadRequest("Invalid input received: Can't parse backup record.") from None
    service = service_of(request)
    async with service.db.write() as session:
        if await session.get(Backup, record["id"]) is not None:
            raise BadRequest("Invalid backup: Backup already exists in database.")
        when = utcnow()
        row = Backup(
            **{k: record.get(k) for k in RECORD_FIELDS if k not in ("user_id", "project_id")},
            user_id=ctx.user_id, project_id=ctx.project_id, status=states.AVAILABLE,
            data_timestamp=_timestamp(record.get("data_timestamp")) or when, created_at=when,
        )  # fmt: skip
        row.metadata_json = row.metadata_json or "{}"
        row.object_count = int(row.object_count or 0)
        session.add(row)
        await session.flush()
        body = _summary(request, row)
    return json({"backup": body}, 201)


def _timestamp(raw: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


BACKUP_ACTIONS = {"os-reset_status": reset_backup_status, "os-force_delete": force_delete_backup}


async def backup_action(request: Request) -> Response:
    return await run_action(request, BACKUP_ACTIONS)


routes = [
    Route("/v3/backups", create_backup, methods=["POST"]),
    Route("/v3/backups", list_backups, methods=["GET"]),
    Route("/v3/backups/detail", list_backups_detail, methods=["GET"]),
    Route("/v3/backups/import_record", import_record, methods=["POST"]),
    Route("/v3/backups/{id}/export_record", export_record, methods=["GET"]),
    Route("/v3/backups/{id}", show_backup, methods=["GET"]),
    Route("/v3/backups/{id}", update_backup, methods=["PUT"]),
    Route("/v3/backups/{id}", delete_backup, methods=["DELETE"]),
    Route("/v3/backups/{id}/restore", restore_backup, methods=["POST"]),
    Route("/v3/backups/{id}/action", backup_action, methods=["POST"]),
]
