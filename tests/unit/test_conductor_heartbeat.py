"""A compute host's heartbeat (conductor.compute_node_report): one statement when only
the service's heartbeat changes, the full read and write when the node or the zone
does. SQLite, and PostgreSQL and MariaDB when they are reachable."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, insert, select

from cumulo.common.db import Database
from cumulo.common.rpc import get_transport
from cumulo.compute.conductor import ConductorManager
from cumulo.compute.models import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    ComputeNode,
    ComputeService,
)

RESOURCES = {
    "hypervisor_hostname": "node-1",
    "hypervisor_type": "fake",
    "hypervisor_version": 1,
    "vcpus": 8,
    "memory_mb": 16384,
    "local_gb": 100,
    "cpu_arch": "x86_64",
    "cpu_info": {"model": "fake", "features": ["vmx"]},
    "cpu_allocation_ratio": 4.0,
    "ram_allocation_ratio": 1.5,
    "disk_allocation_ratio": 1.0,
    "reserved_host_memory_mb": 512,
    "reserved_host_disk_gb": 0,
    "traits": ["COMPUTE_RESCUE_BFV"],
}


@pytest.fixture
async def conductor(each_database_url):
    db = Database(each_database_url, "compute")
    await db.migrate()
    yield ConductorManager(db, get_transport("memory://"))
    await db.dispose()


def _count_statements(db: Database) -> list[str]:
    statements: list[str] = []
    engines = [db.engine.sync_engine]
    if db.is_sqlite:
        engines.append(db._sync_engine)  # run_write's engine on SQLite
    for engine in engines:
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0]))
    return statements


async def _service_and_node(db: Database):
    async with db.read() as s:
        service = await s.scalar(select(ComputeService).where(ComputeService.host == "h1"))
        node = await s.scalar(select(ComputeNode).where(ComputeNode.host == "h1"))
    return service, node


async def test_an_unchanged_heartbeat_is_one_statement_and_changes_are_written(conductor):
    db = conductor.db
    await conductor.compute_node_report({}, "h1", RESOURCES, "nova")
    first, node = await _service_and_node(db)
    assert first.report_count == 1 and node.vcpus == 8 and node.traits == ["COMPUTE_RESCUE_BFV"]

    statements = _count_statements(db)
    await conductor.compute_node_report({}, "h1", RESOURCES, "nova")
    assert statements == ["UPDATE"]
    service, _ = await _service_and_node(db)
    assert service.report_count == 2 and service.last_seen_up > first.last_seen_up

    changed = {**RESOURCES, "vcpus": 16, "traits": [], "cpu_info": {"model": "other"}}
    await conductor.compute_node_report({}, "h1", changed, "nova")
    service, node = await _service_and_node(db)
    assert service.report_count == 3
    assert (node.vcpus, node.traits, node.cpu_info) == (16, [], {"model": "other"})

    statements.clear()
    await conductor.compute_node_report({}, "h1", changed, "nova")
    assert statements == ["UPDATE"]
    assert (await _service_and_node(db))[0].report_count == 4


async def test_a_heartbeat_puts_the_host_in_its_aggregates_zone(conductor):
    db = conductor.db
    await conductor.compute_node_report({}, "h1", RESOURCES, "nova")
    async with db.write() as s:
        aggregate = (
            await s.execute(
                insert(Aggregate)
                .values(uuid=str(uuid.uuid4()), name="rack-1")
                .returning(Aggregate.id)
            )
        ).scalar_one()
        await s.execute(insert(AggregateHost).values(aggregate_id=aggregate, host="h1"))
        await s.execute(
            insert(AggregateMetadata).values(
                aggregate_id=aggregate, key="availability_zone", value="zone-b"
            )
        )
    await conductor.compute_node_report({}, "h1", RESOURCES, "nova")
    assert (await _service_and_node(db))[0].availability_zone == "zone-b"
    async with db.write() as s:
        await s.execute(AggregateMetadata.__table__.delete())
    await conductor.compute_node_report({}, "h1", RESOURCES, "nova")
    assert (await _service_and_node(db))[0].availability_zone == "nova"
