"""Atomic resource claims on compute nodes: the scheduler's ledger in the database.

A claim is one conditional UPDATE ("add these resources where they still fit")
plus the instance's allocation row, in one transaction. Two requests racing for
the last slot cannot both win, on SQLite, PostgreSQL or MariaDB alike.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.compute.models import Allocation, ComputeNode, ComputeService, Instance
from cumulo.compute.scheduler.host_state import HostState, RequestSpec

COMPUTE_BINARY = "cumulo-compute"


def resize_allocation(instance_uuid: str) -> str:
    """The key of the second allocation an instance holds while it is resized."""
    return f"{instance_uuid}.resize"


async def claim(session: AsyncSession, node_id: int, instance_uuid: str, spec: RequestSpec) -> bool:
    """Take the resources of one instance on a node; False when they no longer fit."""
    n = ComputeNode
    result = await session.execute(
        update(n)
        .where(
            n.id == node_id,
            n.vcpus_used + spec.vcpus <= n.vcpus * n.cpu_allocation_ratio,
            n.memory_mb_used + spec.memory_mb
            <= (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio,
            n.local_gb_used + spec.disk_gb
            <= (n.local_gb - n.reserved_host_disk_gb) * n.disk_allocation_ratio,
        )
        .values(
            vcpus_used=n.vcpus_used + spec.vcpus,
            memory_mb_used=n.memory_mb_used + spec.memory_mb,
            local_gb_used=n.local_gb_used + spec.disk_gb,
            running_vms=n.running_vms + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.add(
        Allocation(
            instance_uuid=instance_uuid,
            node_id=node_id,
            vcpus=spec.vcpus,
            memory_mb=spec.memory_mb,
            disk_gb=spec.disk_gb,
        )
    )
    return True


async def release(session: AsyncSession, instance_uuid: str) -> bool:
    """Give back what an instance holds (idempotent); True when something was released."""
    alloc = await session.get(Allocation, instance_uuid, with_for_update=True)
    if alloc is None:
        return False
    n = ComputeNode
    await session.execute(
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
    await session.execute(delete(Allocation).where(Allocation.instance_uuid == instance_uuid))
    return True


async def load_host_states(
    session: AsyncSession, now: datetime, service_down_time: timedelta
) -> list[HostState]:
    """Every compute node with its service's enabled/up state, as the filters see them."""
    services = {
        s.host: s
        for s in await session.scalars(
            select(ComputeService).where(ComputeService.binary == COMPUTE_BINARY)
        )
    }
    states = []
    for node in await session.scalars(select(ComputeNode)):
        service = services.get(node.host)
        up = bool(
            service
            and not service.forced_down
            and service.last_seen_up is not None
            and now - service.last_seen_up <= service_down_time
        )
        states.append(
            HostState(
                host=node.host,
                node=node.hypervisor_hostname,
                vcpus=node.vcpus,
                memory_mb=node.memory_mb,
                local_gb=node.local_gb,
                vcpus_used=node.vcpus_used,
                memory_mb_used=node.memory_mb_used,
                local_gb_used=node.local_gb_used,
                cpu_allocation_ratio=node.cpu_allocation_ratio,
                ram_allocation_ratio=node.ram_allocation_ratio,
                disk_allocation_ratio=node.disk_allocation_ratio,
                reserved_host_memory_mb=node.reserved_host_memory_mb,
                reserved_host_disk_gb=node.reserved_host_disk_gb,
                availability_zone=service.availability_zone if service else "nova",
                enabled=bool(service and not service.disabled),
                up=up,
                hypervisor_type=node.hypervisor_type,
                cpu_arch=node.cpu_arch,
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
