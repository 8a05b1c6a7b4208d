"""Compute quotas: per-project limits (defaults, overridden per project) and usage.

Synchronous SQLAlchemy code on a Session: call it from db.run_write/run_read, or as
`await session.run_sync(quotas.usage, ...)` inside an async transaction.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cumulo.compute.models import Instance, KeyPair, Quota, ServerGroup

# Nova's defaults; -1 is unlimited.
DEFAULTS: dict[str, int] = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "metadata_items": 128,
    "key_pairs": 100,
    "server_groups": 10,
    "server_group_members": 10,
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
}


class QuotaExceeded(Exception):
    def __init__(self, resource: str, requested: int, used: int, limit: int) -> None:
        self.resource, self.requested, self.used, self.limit = resource, requested, used, limit
        super().__init__(
            f"Quota exceeded for {resource}: Requested {requested}, but already used "
            f"{used} of {limit} {resource}"
        )


# A quota class's limits are kept as the quota rows of this key (no project id holds a
# colon); the "default" class overrides DEFAULTS for every project (Nova's quota classes).
CLASS_PREFIX = "class:"
DEFAULT_CLASS = "default"


def class_key(name: str) -> str:
    return CLASS_PREFIX + name


def _rows(session: Session, key: str) -> dict[str, int]:
    query = select(Quota.resource, Quota.hard_limit).where(Quota.project_id == key)
    return {resource: limit for resource, limit in session.execute(query)}


def defaults(session: Session) -> dict[str, int]:
    """Every project's limits unless overridden: DEFAULTS, then the default class."""
    return {**DEFAULTS, **_rows(session, class_key(DEFAULT_CLASS))}


def class_limits(session: Session, name: str) -> dict[str, int]:
    """A quota class's limits (another class than `default` affects no project)."""
    return {**defaults(session), **_rows(session, class_key(name))}


def limits(session: Session, project_id: str) -> dict[str, int]:
    return {**defaults(session), **_rows(session, project_id)}


def usage(
    session: Session,
    project_id: str,
    user_id: str | None = None,
    resources: set[str] | None = None,
) -> dict[str, int]:
    """What the project uses now (key pairs are counted for the user, as Nova does);
    only `resources` when given."""
    used: dict[str, int] = {}
    if resources is None or resources & {"instances", "cores", "ram"}:
        instances, cores, ram = session.execute(
            select(
                func.count(Instance.id),
                func.coalesce(func.sum(Instance.vcpus), 0),
                func.coalesce(func.sum(Instance.memory_mb), 0),
            ).where(Instance.project_id == project_id, Instance.deleted.is_(False))
        ).one()
        used.update(instances=int(instances), cores=int(cores), ram=int(ram))
    if resources is None or "server_groups" in resources:
        used["server_groups"] = (
            session.scalar(
                select(func.count(ServerGroup.id)).where(ServerGroup.project_id == project_id)
            )
            or 0
        )
    if user_id is not None and (resources is None or "key_pairs" in resources):
        used["key_pairs"] = (
            session.scalar(select(func.count(KeyPair.id)).where(KeyPair.user_id == user_id)) or 0
        )
    return used


def check(
    session: Session, project_id: str, deltas: dict[str, int], user_id: str | None = None
) -> None:
    """Raise QuotaExceeded for the first resource the deltas would push past its limit.

    Synchronous (run it with db.run_write, or AsyncSession.run_sync); usage is only
    counted for the resources that have a limit.
    """
    limit = limits(session, project_id)
    limited = {r for r in deltas if limit.get(r, -1) >= 0}
    if not limited:
        return
    used = usage(session, project_id, user_id, limited)
    for resource, delta in deltas.items():
        hard = limit.get(resource, -1)
        if hard >= 0 and used.get(resource, 0) + delta > hard:
            raise QuotaExceeded(resource, delta, used.get(resource, 0), hard)
