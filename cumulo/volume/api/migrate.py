"""Moving volumes between backends: `os-migrate_volume` and
`os-migrate_volume_completion` (admin actions), and `os-retype`, which moves the
volume when the new type wants another backend and `migration_policy` is on-demand
(Block Storage v3 api-ref: "Migrate a volume", "Complete migration of a volume",
"Retype a volume").

The API checks, places the new volume on the destination with the scheduler (in the
transaction that marks the volume `starting`, so capacity is never promised twice),
then casts: the destination creates the new volume, the source backend fills it and
swaps it in (cumulo.volume.manager_moves); an attached volume's data is copied by
Compute (its swap volume, which calls os-migrate_volume_completion when done), as
Cinder moves one.
"""

from __future__ import annotations

import json as jsonlib
import logging
import uuid
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest
from cumulo.volume import attach, rpcapi, states
from cumulo.volume.api.common import accepted, at_least, json, parse_bool, service_of
from cumulo.volume.api.volumes import load_volume, volume_type_for
from cumulo.volume.models import Snapshot, Volume, VolumeServiceRow, VolumeTypeEncryption
from cumulo.volume.scheduler import (
    NO_VALID_BACKEND,
    VOLUME_BINARY,
    BackendState,
    RequestSpec,
    backend_accepts,
    is_up,
    place_move,
    type_multiattach,
)

LOG = logging.getLogger(__name__)


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {value}.")
    parsed = parse_bool(value, key)
    return bool(parsed)


async def _has_snapshots(session: Any, volume_id: str) -> bool:
    count = await session.scalar(
        select(func.count(Snapshot.id)).where(Snapshot.volume_id == volume_id)
    )
    return bool(count)


def _new_volume(volume: Volume, dest: BackendState, type_id: str) -> Volume:
    """The volume a migration fills on the destination (Cinder's temporary volume: the
    same name and owner, outside quota, `target:<id>` until it is swapped in)."""
    return Volume(
        id=str(uuid.uuid4()),
        project_id=volume.project_id,
        user_id=volume.user_id,
        name=volume.name,
        description=volume.description,
        size=volume.size,
        status=states.CREATING,
        availability_zone=dest.availability_zone,
        type_id=type_id,
        host=dest.pool_host,
        bootable=volume.bootable,
        multiattach=volume.multiattach,
        migration_status=f"{states.MIGRATION_TARGET}{volume.id}",
        # Cinder's too: the moved container keeps its key (the volume's, not a clone).
        encryption_key_id=volume.encryption_key_id,
    )


def require_detached_if_encrypted(volume: Volume) -> None:
    """An attached encrypted volume would move through Compute's swap, which mirrors
    what the guest reads into a new container opened with the volume's key: the swap
    is asked with this service's token, which the owner's key in the Key Manager does
    not let in, and the new volume would have to be formatted with that key too. Nova
    refuses to swap natively opened LUKS volumes as well. Detached ones move as their
    containers' bytes (no key needed)."""
    if volume.encryption_key_id and (
        volume.status == states.IN_USE or volume.attach_status != states.DETACHED
    ):
        raise BadRequest(
            "Invalid volume: an attached encrypted volume cannot be moved to another "
            "backend (Compute's swap of an encrypted volume is not supported); detach it "
            "first."
        )


async def _hand_over(
    request: Request, ctx: RequestContext, volume: Volume, new: Volume, new_type_id: str | None
) -> None:
    """The destination makes the new volume, the source fills it and takes its place."""
    service = service_of(request)
    try:
        await service.volume_rpc.create_volume(ctx.to_dict(), new.host, new.id, size=new.size)
        await service.volume_rpc.migrate_volume(
            ctx.to_dict(), volume.host, volume.id, new.id, new_type_id
        )
    except Exception:
        LOG.exception("migration of volume %s could not be handed to its backends", volume.id)
        async with service.db.write() as session:
            row = await session.get(Volume, volume.id)
            if row is not None and row.migration_status == states.MIGRATION_STARTING:
                row.migration_status = states.MIGRATION_ERROR
                if row.status in (states.RETYPING, states.MAINTENANCE):
                    row.status = row.previous_status or states.AVAILABLE
            temp = await session.get(Volume, new.id)
            if temp is not None:
                temp.status = states.ERROR


async def migrate_volume(request: Request, volume_id: str, args: Any) -> Response:
    """os-migrate_volume (admin): to `host` (host@backend[#pool]); `lock_volume` shows an
    available volume `maintenance` meanwhile; `force_host_copy` is what every migration
    here does (the source copies the data through the destination's connection)."""
    ctx, _ = await load_volume(
        request, volume_id, "volume_extension:volume_admin_actions:migrate_volume"
    )
    allowed = {"host", "force_host_copy", "lock_volume"} | (
        {"cluster"} if at_least(request, 3, 16) else set()
    )
    if not isinstance(args, dict) or set(args) - allowed:
        raise BadRequest(
            f"Invalid input for field/attribute os-migrate_volume. Allowed: {sorted(allowed)}."
        )
    host, cluster = args.get("host"), args.get("cluster")
    if at_least(request, 3, 16) and bool(host) == bool(cluster):
        raise BadRequest(
            "Invalid input received: One and only one of cluster and host must be set."
        )
    if not at_least(request, 3, 16) and not host:
        raise BadRequest("Invalid input received: Host field is missing.")
    target = host or cluster
    if not isinstance(target, str) or len(target) > 255:
        raise BadRequest(f"Invalid input for field/attribute host. Value: {target}.")
    _flag(args, "force_host_copy")
    lock = _flag(args, "lock_volume")
    service = service_of(request)
    down_time = service.config.volume.service_down_time
    async with service.db.write() as session:
        volume = await session.scalar(
            select(Volume).where(Volume.id == volume_id).with_for_update()
        )
        assert volume is not None
        require_detached_if_encrypted(volume)
        # Cinder: an up and enabled cinder-volume service of that name, else InvalidHost.
        row = await session.scalar(
            select(VolumeServiceRow).where(
                VolumeServiceRow.binary == VOLUME_BINARY,
                VolumeServiceRow.host == rpcapi.backend_of(target),
            )
        )
        pool = target.partition("#")[2]
        if (
            host is None
            or row is None
            or row.disabled
            or not is_up(row.updated_at, utcnow(), down_time)
            or (pool and pool != row.pool)
        ):
            raise BadRequest(f"Invalid host: No available service named '{target}'")
        if (
            volume.status not in states.MIGRATABLE
            or states.is_migrating(volume.migration_status)
            or rpcapi.backend_of(volume.host) == rpcapi.backend_of(target)
            or volume.group_id
            or await _has_snapshots(session, volume_id)
        ):
            raise BadRequest(
                f"Invalid volume: Volume {volume_id} status must be available or in-use, must "
                "not be migrating, have snapshots, be replicated, be part of a group and "
                "destination host/cluster must be different than the current one"
            )
        _, specs = await volume_type_for(session, request, ctx, volume.type_id, encrypted_ok=True)
        spec = RequestSpec(volume.size, volume.availability_zone, specs)
        dest = await place_move(
            session, volume_id, spec, down_time, source=volume.host, target=target
        )
        volume.previous_status, volume.updated_at = volume.status, utcnow()
        if dest is None:
            # As Cinder's scheduler: accepted, then the migration is in error.
            volume.migration_status = states.MIGRATION_ERROR
            return accepted()
        new = _new_volume(volume, dest, volume.type_id)
        session.add(new)
        volume.migration_status = states.MIGRATION_STARTING
        if lock and volume.status == states.AVAILABLE:
            volume.status = states.MAINTENANCE
    await _hand_over(request, ctx, volume, new, None)
    return accepted()


async def migrate_volume_completion(request: Request, volume_id: str, args: Any) -> Response:
    """os-migrate_volume_completion (admin): `error` true ends the migration (the new
    volume is deleted); false swaps the copied data in, refused while the copy runs or
    when it never finished. Outside a migration (neither volume migrating: Compute
    swapped one server volume for another) the attachments move to the new volume, as
    Cinder's, and the new volume's id is answered."""
    ctx, volume = await load_volume(
        request, volume_id, "volume_extension:volume_admin_actions:migrate_volume_completion"
    )
    if not isinstance(args, dict) or set(args) - {"new_volume", "error"}:
        raise BadRequest("Invalid input for field/attribute os-migrate_volume_completion.")
    new_id = args.get("new_volume")
    if not isinstance(new_id, str):
        raise BadRequest("Invalid input for field/attribute new_volume. 'new_volume' is required.")
    error = args.get("error")
    failed = error if isinstance(error, bool) else bool(parse_bool(error, "error"))
    _, new = await load_volume(request, new_id)
    if not (volume.migration_status or new.migration_status):
        if not failed:
            await _move_attachments(request, ctx, volume, new)
        return json({"save_volume_id": new.id})
    if not volume.migration_status:
        raise BadRequest("Invalid volume: Source volume not mid-migration.")
    if not new.migration_status:
        raise BadRequest("Invalid volume: Destination volume not mid-migration.")
    expected = f"{states.MIGRATION_TARGET}{volume_id}"
    if new.migration_status != expected:
        raise BadRequest(
            f"Invalid volume: Destination has migration_status {new.migration_status}, "
            f"expected {expected}."
        )
    service = service_of(request)
    call = service.volume_rpc.migrate_volume_completion(
        ctx.to_dict(), volume.host, volume_id, new_id, failed
    )
    saved = await attach.backend_call(call, refusals=("MigrationFailed",))
    return json({"save_volume_id": saved})


async def _move_attachments(
    request: Request, ctx: RequestContext, volume: Volume, new: Volume
) -> None:
    """Compute's swap outside a migration: the volume's attachments are detached and
    the new volume attached to their servers where it is not yet (Cinder detaches and
    attaches so that neither is left `detaching` nor `attaching`)."""
    service = service_of(request)
    attached_to = {a.instance_uuid for a in await attach.attachments_of(service, new.id)}
    for old in await attach.attachments_of(service, volume.id):
        await attach.remove(service, old.id, ctx.to_dict())
        if old.instance_uuid in attached_to:
            continue
        made = await attach.reserve(service, new.id, old.instance_uuid, mode=old.attach_mode)
        if old.connector:
            await attach.connect(service, made.id, jsonlib.loads(old.connector), ctx.to_dict())
        await attach.complete(service, made.id, old.mountpoint)


def _encryption_spec(row: VolumeTypeEncryption | None) -> tuple | None:
    if row is None:
        return None
    return (row.provider, row.cipher, row.key_size, row.control_location)


async def retype(request: Request, volume_id: str, args: Any) -> Response:
    """os-retype: the volume takes the new type in place when its backend matches the
    type's extra specs; otherwise, with `migration_policy` on-demand, it moves to a
    backend that does (status `retyping` meanwhile, the type changing when it lands),
    and with `never` (the default) it is refused."""
    ctx, _ = await load_volume(request, volume_id, "volume:retype")
    new_type = args.get("new_type") if isinstance(args, dict) else None
    if not isinstance(new_type, str) or not new_type:
        raise BadRequest("Invalid input received: 'new_type' must be specified.")
    policy = args.get("migration_policy") or "never"
    if policy not in ("never", "on-demand"):
        raise BadRequest(f"Invalid input received: Invalid migration_policy {policy}.")
    service = service_of(request)
    down_time = service.config.volume.service_down_time
    async with service.db.write() as session:
        volume = await session.scalar(
            select(Volume).where(Volume.id == volume_id).with_for_update()
        )
        assert volume is not None
        states.require_volume_status(volume.status, states.RETYPABLE, "retype it")
        states.require_not_migrating(volume_id, volume.migration_status, "retype")
        vtype, specs = await volume_type_for(session, request, ctx, new_type, encrypted_ok=True)
        if vtype.id == volume.type_id:
            raise BadRequest(
                "Invalid input received: New volume type must be different from the original."
            )
        if _encryption_spec(await session.get(VolumeTypeEncryption, vtype.id)) != _encryption_spec(
            await session.get(VolumeTypeEncryption, volume.type_id)
        ):
            # Cinder's answer: the data would have to be re-encrypted (or decrypted).
            raise BadRequest(
                "Invalid input received: Retype cannot change encryption requirements."
            )
        multiattach = type_multiattach(specs)
        if multiattach != volume.multiattach and volume.status != states.AVAILABLE:
            raise BadRequest(
                "Invalid volume: retyping an attached volume cannot change whether it may be "
                "attached to several servers (multiattach)."
            )
        if await backend_accepts(session, volume.host, specs, down_time):
            volume.type_id, volume.multiattach, volume.updated_at = vtype.id, multiattach, utcnow()
            return accepted()
        require_detached_if_encrypted(volume)
        moving = f"Invalid volume: retyping volume {volume_id} to {vtype.name} needs a move to "
        if policy == "never":
            raise BadRequest(moving + "another backend, and migration_policy is never.")
        if volume.group_id or await _has_snapshots(session, volume_id):
            raise BadRequest(moving + "another backend, and it has snapshots or is in a group.")
        spec = RequestSpec(volume.size, volume.availability_zone, specs)
        dest = await place_move(session, volume_id, spec, down_time, source=volume.host)
        if dest is None:
            raise BadRequest(moving + f"another backend: {NO_VALID_BACKEND}")
        new = _new_volume(volume, dest, vtype.id)
        session.add(new)
        volume.previous_status, volume.status = volume.status, states.RETYPING
        volume.migration_status, volume.updated_at = states.MIGRATION_STARTING, utcnow()
    await _hand_over(request, ctx, volume, new, vtype.id)
    return accepted()
