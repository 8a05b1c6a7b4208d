"""Claims are atomic: many concurrent boots onto hosts that fit fewer never overcommit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import func, select

from cumulo.common.db import Database, utcnow
from cumulo.compute.models import Allocation, ComputeNode, ComputeService
from cumulo.compute.scheduler.claims import (
    COMPUTE_BINARY,
    claim,
    load_host_states,
    release,
)
from cumulo.compute.scheduler.host_state import RequestSpec
from cumulo.compute.scheduler.select import NoValidHost, select_destinations

SPEC = RequestSpec(vcpus=1, memory_mb=512, disk_gb=1)


async def make_hosts(db: Database, count: int, memory_mb: int) -> None:
    async with db.write() as s:
        for i in range(count):
            s.add(
                ComputeService(
                    uuid=str(uuid.uuid4()),
                    host=f"host{i}",
                    binary=COMPUTE_BINARY,
                    topic=f"compute.host{i}",
                    last_seen_up=utcnow(),
                )
            )
            s.add(
                ComputeNode(
                    uuid=str(uuid.uuid4()),
                    host=f"host{i}",
                    hypervisor_hostname=f"host{i}",
                    hypervisor_type="fake",
                    vcpus=64,
                    memory_mb=memory_mb,
                    local_gb=1000,
                )
            )


async def boot_one(db: Database) -> str | None:
    """Schedule and claim like the conductor does: retry when a claim loses a race."""
    instance = str(uuid.uuid4())
    for _attempt in range(5):
        async with db.read() as s:
            hosts = await load_host_states(s, utcnow(), timedelta(seconds=60))
        try:
            [chosen] = select_destinations(hosts, RequestSpec(1, 512, 1), [instance])
        except NoValidHost:
            return None
        async with db.read() as s:
            node_id = await s.scalar(
                select(ComputeNode.id).where(ComputeNode.hypervisor_hostname == chosen.node)
            )
        # As the scheduler claims: one whole transaction through run_write.
        if await db.run_write(claim, node_id, instance, SPEC):
            return chosen.host
    return None


async def test_200_concurrent_boots_onto_room_for_100(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await db.migrate()
    try:
        await make_hosts(db, 2, memory_mb=512 * 50)  # 2 hosts x 50 instances
        placed = await asyncio.gather(*(boot_one(db) for _ in range(200)))
        assert sum(1 for p in placed if p) == 100
        async with db.read() as s:
            nodes = (await s.scalars(select(ComputeNode))).all()
            allocations = await s.scalar(select(func.count()).select_from(Allocation))
        assert allocations == 100
        assert all(n.memory_mb_used == n.memory_mb for n in nodes)
        assert all(n.running_vms == 50 for n in nodes)
    finally:
        await db.dispose()


async def test_release_gives_resources_back_once(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await db.migrate()
    try:
        await make_hosts(db, 1, memory_mb=512)
        async with db.write() as s:
            node_id = await s.scalar(select(ComputeNode.id))
            assert await s.run_sync(claim, node_id, "i1", SPEC)
            assert not await s.run_sync(claim, node_id, "i2", SPEC)  # full
        assert await db.run_write(release, "i1")
        assert not await db.run_write(release, "i1")
        async with db.read() as s:
            node = await s.scalar(select(ComputeNode))
        assert (node.memory_mb_used, node.vcpus_used, node.running_vms) == (0, 0, 0)
    finally:
        await db.dispose()


async def test_a_host_disabled_or_forced_down_since_it_was_chosen_takes_no_claim(tmp_path):
    """The scheduler's view of the hosts may be up to a second old: the claim itself
    refuses a host disabled (or forced down) meanwhile, so the scheduler looks again."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await db.migrate()
    try:
        await make_hosts(db, 1, memory_mb=4096)
        async with db.read() as s:
            node_id = await s.scalar(select(ComputeNode.id))
        for change in ({"disabled": True}, {"disabled": False, "forced_down": True}):
            async with db.write() as s:
                svc = await s.scalar(select(ComputeService))
                for attr, value in change.items():
                    setattr(svc, attr, value)
            assert not await db.run_write(claim, node_id, str(uuid.uuid4()), SPEC)
        async with db.write() as s:
            (await s.scalar(select(ComputeService))).forced_down = False
        assert await db.run_write(claim, node_id, "i1", SPEC)
        async with db.read() as s:
            node = await s.scalar(select(ComputeNode))
            allocations = await s.scalar(select(func.count()).select_from(Allocation))
        assert (node.running_vms, allocations) == (1, 1)  # only the last claim took
    finally:
        await db.dispose()


async def test_hosts_without_a_recent_heartbeat_are_down(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await db.migrate()
    try:
        await make_hosts(db, 2, memory_mb=4096)
        async with db.write() as s:
            svc = await s.scalar(select(ComputeService).where(ComputeService.host == "host0"))
            svc.last_seen_up = utcnow() - timedelta(minutes=5)
        async with db.read() as s:
            states = {h.host: h for h in await load_host_states(s, utcnow(), timedelta(seconds=60))}
        assert not states["host0"].up and states["host1"].up
    finally:
        await db.dispose()


async def test_a_move_holds_both_claims_until_it_ends(tmp_path):
    """The destination's claim sits beside the server's own until the move ends:
    keep_new (confirm, live migration done) hands it over, drop_new (revert, failure)
    gives it back, release (offload) frees both."""
    from cumulo.compute.conductor_moves import _complete_move
    from cumulo.compute.scheduler.claims import resize_allocation

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await db.migrate()
    try:
        await make_hosts(db, 2, memory_mb=512)
        async with db.read() as s:
            source, dest = (await s.scalars(select(ComputeNode.id).order_by(ComputeNode.id))).all()

        async def used() -> list[int]:
            async with db.read() as s:
                nodes = await s.scalars(select(ComputeNode).order_by(ComputeNode.id))
                return [n.memory_mb_used for n in nodes]

        async def end(allocation: str) -> None:
            await db.run_write(_complete_move, "i1", {}, None, None, allocation, None, None)

        assert await db.run_write(claim, source, "i1", SPEC)
        assert await db.run_write(claim, dest, resize_allocation("i1"), SPEC)
        assert await used() == [512, 512]
        await end("drop_new")  # reverted: the source keeps it
        assert await used() == [512, 0]
        assert await db.run_write(claim, dest, resize_allocation("i1"), SPEC)
        await end("keep_new")  # confirmed: the destination has it, under the server's key
        assert await used() == [0, 512]
        async with db.read() as s:
            keys = (await s.scalars(select(Allocation.instance_uuid))).all()
        assert keys == ["i1"]
        await end("release")  # offloaded: nothing held anywhere
        assert await used() == [0, 0]
    finally:
        await db.dispose()
