"""The volume scheduler: which backend gets a new volume (Cinder's FilterScheduler).

Backends report their capacity and capabilities with every heartbeat (rows of
`volume_service`, written by each backend's volume manager). For a new volume the
scheduler keeps the backends that pass every filter — up and enabled, in the
volume's availability zone, the source's backend for a clone or a volume from a
snapshot, capabilities matching the volume type's extra specs (incl.
`volume_backend_name`), room for the size asked — and takes the one with the most
free capacity.

What a backend has given away ("allocated") is the sum of the sizes of the volumes
placed on it, counted from the volume rows in the transaction that writes the new
volume with its backend (the API's create), with the backends' rows locked: two
creates never both take the last gigabytes of a small backend, whatever the age of
its last report. The scheduler thus runs in the API process, one database
transaction per placement, no bus hop (`cinder-scheduler` in os-services is that).
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from cumulo.common.db import Database, utcnow
from cumulo.volume.models import Volume, VolumeServiceRow

LOG = logging.getLogger(__name__)

SCHEDULER_BINARY = "cinder-scheduler"
VOLUME_BINARY = "cinder-volume"
NO_VALID_BACKEND = "No valid backend was found."


@dataclass
class BackendState:
    """One backend (a single pool) as the scheduler sees it."""

    host: str  # host@backend
    availability_zone: str
    capabilities: dict[str, Any]
    allocated_gb: int = 0  # sizes of the volumes placed on it
    up: bool = True
    disabled: bool = False

    @property
    def pool(self) -> str:
        return self.capabilities.get("pool_name") or self.host.partition("@")[2]

    @property
    def pool_host(self) -> str:
        """What volumes record as their host: host@backend#pool."""
        return f"{self.host}#{self.pool}"

    def _float(self, key: str, default: float = 0.0) -> float:
        try:
            return float(self.capabilities.get(key, default))
        except (TypeError, ValueError):
            return default

    @property
    def total_gb(self) -> float:
        return self._float("total_capacity_gb")

    @property
    def free_gb(self) -> float:
        return self._float("free_capacity_gb")

    @property
    def usable_gb(self) -> float:
        """Capacity less the reserved share."""
        return self.total_gb * (1 - self._float("reserved_percentage") / 100)

    @property
    def thin(self) -> bool:
        return bool(self.capabilities.get("thin_provisioning_support")) and self.ratio > 1

    @property
    def ratio(self) -> float:
        return max(self._float("max_over_subscription_ratio", 1.0), 1.0)

    @property
    def virtual_free_gb(self) -> float:
        """What can still be promised: thin backends may overcommit up to the ratio; the
        free space reported bounds thick ones too (someone else may fill the disk)."""
        if self.thin:
            return self.usable_gb * self.ratio - self.allocated_gb
        return min(self.usable_gb - self.allocated_gb, self.free_gb)

    def to_pool(self, detail: bool) -> dict[str, Any]:
        pool: dict[str, Any] = {"name": self.pool_host}
        if detail:
            caps = dict(self.capabilities)
            caps["allocated_capacity_gb"] = self.allocated_gb
            caps["provisioned_capacity_gb"] = self.allocated_gb
            pool["capabilities"] = caps
        return pool


@dataclass
class RequestSpec:
    size: int
    availability_zone: str | None = None
    extra_specs: dict[str, str] = field(default_factory=dict)
    # A clone or a volume from a snapshot stays on its source's backend (host@backend).
    backend: str | None = None


# -- filters -------------------------------------------------------------------------


def backend_up_filter(state: BackendState, spec: RequestSpec) -> bool:
    return state.up and not state.disabled


def availability_zone_filter(state: BackendState, spec: RequestSpec) -> bool:
    return not spec.availability_zone or state.availability_zone == spec.availability_zone


def same_backend_filter(state: BackendState, spec: RequestSpec) -> bool:
    return not spec.backend or state.host == spec.backend.partition("#")[0]


def capacity_filter(state: BackendState, spec: RequestSpec) -> bool:
    """Room for the size asked (Cinder's CapacityFilter, thin and thick)."""
    if state.total_gb <= 0:
        return False
    if state.thin:
        # The sizes promised stay within ratio x capacity, and the space really free
        # still covers the new volume once overcommitted.
        return (
            state.allocated_gb + spec.size <= state.usable_gb * state.ratio
            and spec.size <= state.free_gb * state.ratio
        )
    return state.virtual_free_gb >= spec.size


_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_STR_OPS: dict[str, Callable[[str, str], bool]] = {
    "s==": operator.eq,
    "s!=": operator.ne,
    "s>=": operator.ge,
    "s<=": operator.le,
    "s>": operator.gt,
    "s<": operator.lt,
}


def _truth(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on", "t")


def type_multiattach(specs: dict[str, Any]) -> bool:
    """A volume type whose volumes may be attached to several servers (Cinder's
    `multiattach` extra spec, `<is> True`)."""
    return "multiattach" in specs and spec_matches(True, str(specs["multiattach"]))


def spec_matches(capability: Any, requirement: str) -> bool:
    """Cinder's extra spec operators: `<is> True`, `<in> x`, `<or> a <or> b`,
    `== 3` / `>= 3` ... (numeric), `s== x` ... (strings); otherwise string equality."""
    words = requirement.split()
    if not words:
        return str(capability) == requirement
    op = words[0]
    if op == "<is>" and len(words) == 2:
        return _truth(capability) == _truth(words[1])
    if op == "<in>":
        return requirement.partition("<in>")[2].strip() in str(capability)
    if op == "<or>":
        choices = [c.strip() for c in requirement.split("<or>") if c.strip()]
        return str(capability) in choices
    if op in _OPS and len(words) == 2:
        try:
            return _OPS[op](float(capability), float(words[1]))
        except (TypeError, ValueError):
            return False
    if op in _STR_OPS and len(words) == 2:
        return _STR_OPS[op](str(capability), words[1])
    if isinstance(capability, bool):
        return capability == _truth(requirement)
    return str(capability) == requirement


def capabilities_filter(state: BackendState, spec: RequestSpec) -> bool:
    """Every unscoped (or `capabilities:`) extra spec matches a reported capability;
    other scopes (qos:, hw:, ...) are for other services."""
    for key, requirement in spec.extra_specs.items():
        scope, _, name = key.rpartition(":")
        if scope and scope != "capabilities":
            continue
        capability = state.capabilities.get(name)
        if capability is None:
            return False
        if not spec_matches(capability, str(requirement)):
            return False
    return True


FILTERS = (
    backend_up_filter,
    availability_zone_filter,
    same_backend_filter,
    capabilities_filter,
    capacity_filter,
)


def free_capacity_weigher(state: BackendState) -> float:
    """Spread: the backend with the most room left wins (Cinder's CapacityWeigher)."""
    return state.virtual_free_gb


def select_backend(
    backends: list[BackendState], spec: RequestSpec
) -> tuple[BackendState | None, str]:
    """The best backend for the request, or None and which filter left none."""
    candidates = list(backends)
    for f in FILTERS:
        candidates = [b for b in candidates if f(b, spec)]
        if not candidates:
            return None, f.__name__
    best = max(candidates, key=lambda b: (free_capacity_weigher(b), b.host))
    return best, ""


# -- the database side ----------------------------------------------------------------


async def record_heartbeat(
    db: Database,
    host: str,
    binary: str,
    zone: str,
    capabilities: str | None = None,
    pool: str | None = None,
) -> None:
    """A service's heartbeat row (os-services), with a backend's capabilities (JSON)."""
    async with db.write() as session:
        row = await session.scalar(
            select(VolumeServiceRow).where(
                VolumeServiceRow.host == host, VolumeServiceRow.binary == binary
            )
        )
        if row is None:
            session.add(
                VolumeServiceRow(
                    host=host,
                    binary=binary,
                    pool=pool,
                    availability_zone=zone,
                    capabilities=capabilities,
                )
            )
        else:
            row.updated_at, row.availability_zone = utcnow(), zone
            if capabilities is not None:
                row.capabilities, row.pool = capabilities, pool


def is_up(updated_at: datetime | None, now: datetime, down_time: float) -> bool:
    return updated_at is not None and now - updated_at <= timedelta(seconds=down_time)


async def backend_states(
    session: Any, down_time: float, *, lock: bool = False
) -> list[BackendState]:
    """Every backend that has reported, with what is allocated on it; `lock`: their rows
    locked until the transaction ends (placement)."""
    # One round trip: each backend's row with the sizes of the volumes on its pool.
    allocated = (
        select(Volume.host.label("pool_host"), func.sum(Volume.size).label("gb"))
        .where(Volume.host != "")
        .group_by(Volume.host)
        .subquery()
    )
    query = (
        select(VolumeServiceRow, allocated.c.gb)
        .outerjoin(
            allocated,
            allocated.c.pool_host == VolumeServiceRow.host + "#" + VolumeServiceRow.pool,
        )
        .where(VolumeServiceRow.binary == VOLUME_BINARY)
        .order_by(VolumeServiceRow.id)
    )
    dialect = session.get_bind().dialect.name
    if lock and dialect != "sqlite":  # SQLite: one writer at a time already
        # Lock first, then sum in a statement of its own: a statement's snapshot is
        # taken before it waits for a lock, so a sum in the locking statement would
        # miss what the transaction we waited for placed.
        await session.execute(
            select(VolumeServiceRow.id)
            .where(VolumeServiceRow.binary == VOLUME_BINARY)
            .order_by(VolumeServiceRow.id)
            .with_for_update()
        )
    if lock and dialect in ("mysql", "mariadb"):
        # REPEATABLE READ: plain reads see the snapshot of the transaction's first read
        # (before the lock); a locking read sees the latest commits.
        sums = select(Volume.host, func.sum(Volume.size)).where(Volume.host != "")
        locked = sums.group_by(Volume.host).with_for_update(read=True)
        by_pool = {h: gb for h, gb in await session.execute(locked)}
        services = await session.scalars(
            select(VolumeServiceRow)
            .where(VolumeServiceRow.binary == VOLUME_BINARY)
            .order_by(VolumeServiceRow.id)
        )
        rows = [(r, by_pool.get(f"{r.host}#{r.pool}")) for r in services]
    else:
        rows = list(await session.execute(query))
    now = utcnow()
    out = []
    for row, gb in rows:
        caps = json.loads(row.capabilities or "{}")
        caps["pool_name"] = row.pool or caps.get("pool_name")
        out.append(
            BackendState(
                host=row.host,
                availability_zone=row.availability_zone,
                capabilities=caps,
                allocated_gb=int(gb or 0),
                up=is_up(row.updated_at, now, down_time),
                disabled=row.disabled,
            )
        )
    return out


async def place(
    session: Any, volume_id: str, spec: RequestSpec, down_time: float
) -> tuple[BackendState | None, list[BackendState]]:
    """The backend for a new volume, chosen inside the caller's transaction with the
    backends' rows locked until it ends: the caller records `pool_host` on the volume
    in that same transaction, so the next placement counts it. None: no valid backend.
    Also every backend, for the caller's own checks (zones)."""
    backends = await backend_states(session, down_time, lock=True)
    best, failed = select_backend(backends, spec)
    if best is None:
        LOG.warning(
            "volume %s (%s GiB): %s (%d backends, none passed %s)",
            volume_id, spec.size, NO_VALID_BACKEND, len(backends), failed or "-",
        )  # fmt: skip
    return best, backends


async def backend_fits(session: Any, pool_host: str, extra_gb: int, down_time: float) -> bool:
    """Whether the backend holding a volume has room for it to grow by extra_gb (its
    row locked until the transaction ends, as placement does)."""
    for state in await backend_states(session, down_time, lock=True):
        if state.pool_host == pool_host:
            return backend_up_filter(state, RequestSpec(extra_gb)) and capacity_filter(
                state, RequestSpec(extra_gb)
            )
    return False


async def backend_accepts(
    session: Any, pool_host: str, extra_specs: dict[str, str], down_time: float
) -> bool:
    """Whether the backend holding a volume matches a volume type's extra specs (a
    retype that needs no migration)."""
    for state in await backend_states(session, down_time):
        if state.pool_host == pool_host:
            return capabilities_filter(state, RequestSpec(0, extra_specs=extra_specs))
    return False


def backend_named(backends: list[BackendState], host: str) -> BackendState | None:
    """The backend a host@backend or host@backend#pool names (a pool given must be its)."""
    name, _, pool = host.partition("#")
    for state in backends:
        if state.host == name and (not pool or pool == state.pool):
            return state
    return None


async def place_move(
    session: Any,
    volume_id: str,
    spec: RequestSpec,
    down_time: float,
    *,
    source: str,
    target: str | None = None,
) -> BackendState | None:
    """The destination of a volume moving off `source` (its host@backend#pool): the
    backend `target` names when given, else the best other one; filtered and locked as
    place() does, so the caller writes the new volume there in the same transaction.
    None: no valid backend."""
    backends = await backend_states(session, down_time, lock=True)
    here = source.partition("#")[0]
    candidates = [b for b in backends if b.host != here]
    if target is not None:
        named = backend_named(candidates, target)
        candidates = [named] if named is not None else []
    best, failed = select_backend(candidates, spec)
    if best is None:
        LOG.warning(
            "volume %s (%s GiB) cannot move off %s: %s (none passed %s)",
            volume_id, spec.size, here, NO_VALID_BACKEND, failed or "-",
        )  # fmt: skip
    return best
