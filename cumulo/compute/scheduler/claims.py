"""Atomic resource claims on compute nodes: the scheduler's ledger in the database.

A claim is one conditional UPDATE ("add these resources where they still fit")
plus the instance's allocation row, in one transaction. Two requests racing for
the last slot cannot both win, on SQLite, PostgreSQL or MariaDB alike.

claim and release are synchronous SQLAlchemy code on a Session: run them as a whole
transaction with `db.run_write(claim, ...)`, or inside an async transaction with
`await session.run_sync(release, ...)`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Integer, bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cumulo.common.db import utcnow
from cumulo.compute.models import Allocation, ComputeNode, ComputeService, Instance
from cumulo.compute.scheduler.host_state import HostState, RequestSpec

COMPUTE_BINARY = "cumulo-compute"


def resize_allocation(instance_uuid: str) -> str:
    """The key of the second allocation an instance holds while it is resized."""
    return f"{instance_uuid}.resize"


def _claim_statements():
    n = ComputeNode.__table__
    want = {k: bindparam(f"w_{k}", type_=Integer()) for k in ("vcpus", "memory_mb", "disk_gb")}
    s = ComputeService.__table__
    # A host disabled or forced down since the scheduler's cached view takes nothing: the
    # claim fails and the scheduler looks again (Nova's scheduler reads it per request).
    host_down = exists().where(
        s.c.host == n.c.host,
        s.c.binary == COMPUTE_BINARY,
        or_(s.c.disabled.is_(True), s.c.forced_down.is_(True)),
    )
    take = (
        update(n)
        .where(
            n.c.id == bindparam("node_id"),
            ~host_down,
            n.c.vcpus_used + want["vcpus"] <= n.c.vcpus * n.c.cpu_allocation_ratio,
            n.c.memory_mb_used + want["memory_mb"]
            <= (n.c.memory_mb - n.c.reserved_host_memory_mb) * n.c.ram_allocation_ratio,
            n.c.local_gb_used + want["disk_gb"]
            <= (n.c.local_gb - n.c.reserved_host_disk_gb) * n.c.disk_allocation_ratio,
        )
        .values(
            vcpus_used=n.c.vcpus_used + want["vcpus"],
            memory_mb_used=n.c.memory_mb_used + want["memory_mb"],
            local_gb_used=n.c.local_gb_used + want["disk_gb"],
            running_vms=n.c.running_vms + 1,
        )
    )
    return take, insert(Allocation.__table__)


# Built once: a claim is on the path of every boot.
_TAKE, _ALLOCATE = _claim_statements()


def claim(session: Session, node_id: int, instance_uuid: str, spec: RequestSpec) -> bool:
    """Take the resources of one instance on a node; False when they no longer fit."""
    conn = session.connection()
    wanted = {"vcpus": spec.vcpus, "memory_mb": spec.memory_mb, "disk_gb": spec.disk_gb}
    taken = conn.execute(_TAKE, {"node_id": node_id, **{f"w_{k}": v for k, v in wanted.items()}})
    if taken.rowcount != 1:
        return False
    allocation = {"instance_uuid": instance_uuid, "node_id": node_id, "created_at": utcnow()}
    conn.execute(_ALLOCATE, {**allocation, **wanted})
    return True


def release(session: Session, instance_uuid: str) -> bool:
    """Give back what an instance holds (idempotent); True when something was released."""
    alloc = session.get(Allocation, instance_uuid, with_for_update=True)
    if alloc is None:
        return False
    n = ComputeNode
    session.execute(
        update(n)
        .where(n.id == alloc.node_id)
        .values(
            vcpus_used=n.vcpus_used - alloc.vcpus,
            memory_mb_used=n.memory_mb_used - alloc.memory_mb,
            local_gb_used=n.local_gb_used - alloc.disk_gb,
            running_vms=n.running_vms - 1,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(Allocation).where(Allocation.instance_uuid == instance_uuid))
    return True


async def load_host_states(
    session: AsyncSession, now: datetime, service_down_time: timedelta
) -> list[HostState]:
    """Every compute node with its service's enabled/up state, as the filters see them.

    Plain column rows rather than ORM objects: the scheduler reads every host.
    """
    s = ComputeService
    services = {
        host: (zone, disabled, forced_down, seen)
        for host, zone, disabled, forced_down, seen in await session.execute(
            select(s.host, s.availability_zone, s.disabled, s.forced_down, s.last_seen_up).where(
                s.binary == COMPUTE_BINARY
            )
        )
    }
    n = ComputeNode
    rows = await session.execute(
        select(
            n.host,
            n.hypervisor_hostname,
            n.vcpus,
            n.memory_mb,
            n.local_gb,
            n.vcpus_used,
            n.memory_mb_used,
            n.local_gb_used,
            n.cpu_allocation_ratio,
            n.ram_allocation_ratio,
            n.disk_allocation_ratio,
            n.reserved_host_memory_mb,
            n.reserved_host_disk_gb,
            n.hypervisor_type,
            n.cpu_arch,
            n.traits,
        )
    )
    states = []
    for row in rows:
        service = services.get(row[0])
        if service is None:
            zone, enabled, up = "nova", False, False
        else:
            zone, disabled, forced_down, seen = service
            enabled = not disabled
            up = bool(not forced_down and seen is not None and now - seen <= service_down_time)
        states.append(
            HostState(
                host=row[0],
                node=row[1],
                vcpus=row[2],
                memory_mb=row[3],
                local_gb=row[4],
                vcpus_used=row[5],
                memory_mb_used=row[6],
                local_gb_used=row[7],
                cpu_allocation_ratio=row[8],
                ram_allocation_ratio=row[9],
                disk_allocation_ratio=row[10],
                reserved_host_memory_mb=row[11],
                reserved_host_disk_gb=row[12],
                availability_zone=zone,
                enabled=enabled,
                up=up,
                hypervisor_type=row[13],
                cpu_arch=row[14],
                traits=frozenset(row[15] or ()),
            )
        )
    return states


async def hosts_of_instances(session: AsyncSession, uuids: list[str]) -> set[str]:
    """Where these instances run now (for server-group affinity)."""
    if not uuids:
        return set()
    rows = await session.scalars(
        select(Instance.host).where(Instance.uuid.in_(uuids), Instance.host.is_not(None))
    )
    return set(rows)
