"""Per-project quotas: configured defaults, overrides in the database, usage counted
from the rows themselves inside the writing transaction (no usage table to drift)."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.faults import PayloadTooLarge
from cumulo.volume.models import Backup, QuotaClass, QuotaLimit, Snapshot, Volume, VolumeType

RESOURCES = (
    "volumes",
    "snapshots",
    "gigabytes",
    "per_volume_gigabytes",
    "backups",
    "backup_gigabytes",
    "groups",
)


PER_TYPE = ("volumes", "snapshots", "gigabytes")  # Cinder's volumes_<type name>, ...
DEFAULT_CLASS = "default"


async def type_names(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(VolumeType.name).order_by(VolumeType.name)))


async def class_limits(
    session: AsyncSession, configured: dict[str, int], class_name: str = DEFAULT_CLASS
) -> dict[str, int]:
    """A quota class's limits: the configured defaults (per-type limits unlimited),
    overridden by the class's rows (class "default" is what every project starts from).
    Per-type limits are shown and kept but not enforced yet."""
    out = {r: configured.get(r, -1) for r in RESOURCES}
    for name in await type_names(session):
        out.update({f"{r}_{name}": -1 for r in PER_TYPE})
    for row in await session.scalars(select(QuotaClass).where(QuotaClass.class_name == class_name)):
        if row.resource in out:
            out[row.resource] = row.hard_limit
    return out


async def limits(session: AsyncSession, configured: dict[str, int], project_id: str) -> dict:
    out = await class_limits(session, configured)
    for row in await session.scalars(select(QuotaLimit).where(QuotaLimit.project_id == project_id)):
        if row.resource in out:
            out[row.resource] = row.hard_limit
    return out


# The new volume a migration fills uses no quota (Cinder's use_quota=False).
_COUNTED = or_(Volume.migration_status.is_(None), ~Volume.migration_status.startswith("target:"))


async def usage(session: AsyncSession, project_id: str) -> dict[str, int]:
    volumes, volume_gb = (
        await session.execute(
            select(func.count(Volume.id), func.coalesce(func.sum(Volume.size), 0)).where(
                Volume.project_id == project_id, _COUNTED
            )
        )
    ).one()
    snapshots, snapshot_gb = (
        await session.execute(
            select(func.count(Snapshot.id), func.coalesce(func.sum(Snapshot.size), 0)).where(
                Snapshot.project_id == project_id
            )
        )
    ).one()
    backups, backup_gb = (
        await session.execute(
            select(func.count(Backup.id), func.coalesce(func.sum(Backup.size), 0)).where(
                Backup.project_id == project_id
            )
        )
    ).one()
    used = {
        "volumes": int(volumes),
        "snapshots": int(snapshots),
        "gigabytes": int(volume_gb) + int(snapshot_gb),
        "per_volume_gigabytes": 0,
        "backups": int(backups),
        "backup_gigabytes": int(backup_gb),
        "groups": 0,
    }
    for name in await type_names(session):
        used.update({f"{r}_{name}": 0 for r in PER_TYPE})
    by_type = await session.execute(
        select(VolumeType.name, func.count(Volume.id), func.coalesce(func.sum(Volume.size), 0))
        .join(Volume, Volume.type_id == VolumeType.id)
        .where(Volume.project_id == project_id, _COUNTED)
        .group_by(VolumeType.name)
    )
    for name, count, size in by_type:
        used[f"volumes_{name}"], used[f"gigabytes_{name}"] = int(count), int(size)
    return used


async def check(
    session: AsyncSession,
    defaults: dict[str, int],
    project_id: str,
    *,
    volumes: int = 0,
    snapshots: int = 0,
    gigabytes: int = 0,
    size: int | None = None,
) -> None:
    """413 with Cinder's message when the change would exceed a limit."""
    limit = await limits(session, defaults, project_id)
    if size is not None and 0 <= limit["per_volume_gigabytes"] < size:
        raise PayloadTooLarge(
            f"VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum "
            f"allowed limit {limit['per_volume_gigabytes']}G."
        )
    used = await usage(session, project_id)
    if 0 <= limit["gigabytes"] < used["gigabytes"] + gigabytes:
        raise PayloadTooLarge(
            f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
            f"gigabytes quota. Requested {gigabytes}G, quota is {limit['gigabytes']}G and "
            f"{used['gigabytes']}G has been consumed."
        )
    if volumes and 0 <= limit["volumes"] < used["volumes"] + volumes:
        raise PayloadTooLarge(
            f"VolumeLimitExceeded: Maximum number of volumes allowed ({limit['volumes']}) exceeded"
        )
    if snapshots and 0 <= limit["snapshots"] < used["snapshots"] + snapshots:
        raise PayloadTooLarge(
            "SnapshotLimitExceeded: Maximum number of snapshots allowed "
            f"({limit['snapshots']}) exceeded"
        )
