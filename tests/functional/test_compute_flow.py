"""The boot request flow over the bus: conductor -> scheduler (claims) -> compute host.

Two fake hosts, the in-process bus and a SQLite database; the API's part (writing
the instance and its action) is done by the test as the API will do it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from cumulo.common.db import Database
from cumulo.common.rpc import get_transport
from cumulo.compute import rpcapi
from cumulo.compute.conductor import ConductorManager, ConductorOptions
from cumulo.compute.image_cache import ImageCache
from cumulo.compute.manager import ComputeManager, HostOptions
from cumulo.compute.models import (
    Allocation,
    ComputeNode,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
)
from cumulo.compute.scheduler.manager import SchedulerManager
from cumulo.compute.states import PowerState, TaskState, VmState
from cumulo.compute.virt.fake import FakeDriver

FLAVOR = {
    "name": "m1.tiny",
    "vcpus": 1,
    "memory_mb": 512,
    "root_gb": 1,
    "ephemeral_gb": 0,
    "swap": 0,
    "extra_specs": {},
}


class Cell:
    """Conductor, scheduler and compute hosts on one bus and one database."""

    def __init__(self, tmp_path, hosts: dict[str, FakeDriver]) -> None:
        self.db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
        self.bus = get_transport("memory://")
        self.drivers = hosts
        self.managers: list[ComputeManager] = []
        self.tmp_path = tmp_path

    async def start(self) -> None:
        await self.db.migrate()
        self.conductor = ConductorManager(self.db, self.bus, ConductorOptions(build_timeout=0.5))
        await self.bus.serve(rpcapi.CONDUCTOR, self.conductor)
        await self.bus.serve(rpcapi.SCHEDULER, SchedulerManager(self.db))
        for host, driver in self.drivers.items():
            manager = ComputeManager(
                host,
                driver,
                self.bus,
                ImageCache(self.tmp_path / host, images=None),
                None,
                HostOptions(report_interval=3600),
            )
            await manager.start()
            self.managers.append(manager)

    async def stop(self) -> None:
        for m in self.managers:
            await m.stop()
        await self.bus.close()
        await self.db.dispose()

    async def boot(self, name: str = "vm") -> tuple[str, dict]:
        """What compute-api does: the instance row, its action, then a cast to the conductor."""
        instance_uuid = str(uuid.uuid4())
        ctx = {
            "request_id": f"req-{uuid.uuid4()}",
            "user_id": "u1",
            "project_id": "p1",
            "roles": ["member"],
            "auth_token": "token",
        }
        async with self.db.write() as s:
            s.add(
                Instance(
                    uuid=instance_uuid,
                    display_name=name,
                    hostname=name,
                    project_id="p1",
                    user_id="u1",
                    flavor=FLAVOR,
                    vm_state=VmState.BUILDING,
                    task_state=TaskState.SCHEDULING,
                    reservation_id="r-1",
                    requested_networks="none",
                )
            )
            s.add(
                InstanceAction(
                    instance_uuid=instance_uuid,
                    request_id=ctx["request_id"],
                    action="create",
                    project_id="p1",
                    user_id="u1",
                )
            )
        await rpcapi.ConductorAPI(self.bus).build_instances(
            ctx, [instance_uuid], {"flavor": FLAVOR}
        )
        return instance_uuid, ctx

    async def wait_for(self, instance_uuid: str, *states: str, timeout: float = 10) -> Instance:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            async with self.db.read() as s:
                inst = await s.scalar(select(Instance).where(Instance.uuid == instance_uuid))
            if inst.vm_state in states and inst.task_state is None:
                return inst
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{instance_uuid} stuck in {inst.vm_state}/{inst.task_state}")
            await asyncio.sleep(0.02)

    async def events(self, instance_uuid: str) -> list[tuple[str, str | None, str | None]]:
        """The action's events once all have finished (they finish just after the state)."""
        for _ in range(500):
            async with self.db.read() as s:
                rows = [
                    tuple(r)
                    for r in await s.execute(
                        select(
                            InstanceActionEvent.event,
                            InstanceActionEvent.result,
                            InstanceActionEvent.host,
                        )
                        .join(InstanceAction, InstanceAction.id == InstanceActionEvent.action_id)
                        .where(InstanceAction.instance_uuid == instance_uuid)
                        .order_by(InstanceActionEvent.id)
                    )
                ]
            if all(result is not None for _e, result, _h in rows):
                return rows
            await asyncio.sleep(0.02)
        raise AssertionError(f"events of {instance_uuid} never finished: {rows}")


@pytest.fixture
async def cell(tmp_path, request):
    hosts = getattr(request, "param", None) or {
        "host-a": FakeDriver("host-a"),
        "host-b": FakeDriver("host-b"),
    }
    c = Cell(tmp_path, hosts)
    await c.start()
    yield c
    await c.stop()


async def test_boot_walks_the_task_states_to_active(cell: Cell):
    instance_uuid, _ = await cell.boot()
    inst = await cell.wait_for(instance_uuid, VmState.ACTIVE)
    assert inst.power_state == PowerState.RUNNING and inst.host in ("host-a", "host-b")
    assert inst.launched_at is not None
    events = await cell.events(instance_uuid)
    assert [e for e, _r, _h in events] == [
        "conductor_build_instances",
        "compute_build_and_run_instance",
        "compute_networking",
        "compute_spawning",
    ]
    assert all(r == "Success" for _e, r, _h in events)
    assert instance_uuid in await cell.drivers[inst.host].list_guests()


async def test_hosts_report_capacity_and_claims_are_recorded(cell: Cell):
    instance_uuid, _ = await cell.boot()
    await cell.wait_for(instance_uuid, VmState.ACTIVE)
    async with cell.db.read() as s:
        nodes = {n.host: n for n in await s.scalars(select(ComputeNode))}
        alloc = await s.get(Allocation, instance_uuid)
    assert set(nodes) == {"host-a", "host-b"}
    assert alloc is not None and alloc.memory_mb == 512
    assert sum(n.memory_mb_used for n in nodes.values()) == 512


@pytest.mark.parametrize(
    "cell",
    [
        {
            "bad": FakeDriver("bad", fail_spawn=True, memory_mb=10**6),
            "good": FakeDriver("good", memory_mb=1024),
        }
    ],
    indirect=True,
)
async def test_a_failing_host_makes_the_conductor_retry_elsewhere(cell: Cell):
    # "bad" has far more free memory, so spreading picks it first.
    instance_uuid, _ = await cell.boot()
    inst = await cell.wait_for(instance_uuid, VmState.ACTIVE)
    assert inst.host == "good"
    events = await cell.events(instance_uuid)
    assert ("compute_build_and_run_instance", "Error", "bad") in events
    assert ("compute_build_and_run_instance", "Success", "good") in events
    async with cell.db.read() as s:
        bad = await s.scalar(select(ComputeNode).where(ComputeNode.host == "bad"))
    assert bad.memory_mb_used == 0  # the failed host's claim was released


@pytest.mark.parametrize(
    "cell",
    [{"bad1": FakeDriver("bad1", fail_spawn=True), "bad2": FakeDriver("bad2", fail_spawn=True)}],
    indirect=True,
)
async def test_no_host_left_means_error_with_a_fault(cell: Cell):
    instance_uuid, _ = await cell.boot()
    inst = await cell.wait_for(instance_uuid, VmState.ERROR)
    async with cell.db.read() as s:
        faults = (
            await s.scalars(
                select(InstanceFault).where(InstanceFault.instance_uuid == instance_uuid)
            )
        ).all()
        allocations = (await s.scalars(select(Allocation))).all()
    [fault] = faults
    assert fault.message.startswith("Exhausted all hosts available for retrying build failures")
    assert "fail every spawn" in fault.details
    assert allocations == []
    assert inst.vm_state == VmState.ERROR


@pytest.mark.parametrize("cell", [{"tiny": FakeDriver("tiny", memory_mb=256)}], indirect=True)
async def test_no_valid_host(cell: Cell):
    instance_uuid, _ = await cell.boot()
    await cell.wait_for(instance_uuid, VmState.ERROR)
    async with cell.db.read() as s:
        fault = await s.scalar(
            select(InstanceFault).where(InstanceFault.instance_uuid == instance_uuid)
        )
    assert fault.message.startswith("No valid host was found")


async def test_power_actions_and_terminate(cell: Cell):
    instance_uuid, ctx = await cell.boot()
    inst = await cell.wait_for(instance_uuid, VmState.ACTIVE)
    compute = rpcapi.ComputeAPI(cell.bus)
    for action, vm_state, power in [
        ("stop", VmState.STOPPED, PowerState.SHUTDOWN),
        ("start", VmState.ACTIVE, PowerState.RUNNING),
        ("pause", VmState.PAUSED, PowerState.PAUSED),
        ("unpause", VmState.ACTIVE, PowerState.RUNNING),
    ]:
        await compute.power_action(ctx, inst.host, instance_uuid, action)
        await asyncio.sleep(0)
        done = await cell.wait_for(instance_uuid, vm_state)
        assert done.power_state == power
    # Nova's tail: the last N pieces between newlines, the empty one after the last too.
    output = await compute.get_console_output(ctx, inst.host, instance_uuid, 2)
    assert output == "power on\n"
    await compute.terminate_instance(ctx, inst.host, instance_uuid)
    await cell.wait_for(instance_uuid, VmState.DELETED)
    async with cell.db.read() as s:
        assert await s.get(Allocation, instance_uuid) is None
    assert instance_uuid not in await cell.drivers[inst.host].list_guests()


async def test_a_guest_that_dies_is_reported_shutoff(cell: Cell):
    instance_uuid, _ = await cell.boot()
    inst = await cell.wait_for(instance_uuid, VmState.ACTIVE)
    await cell.drivers[inst.host].destroy(instance_uuid)  # the guest vanished
    manager = next(m for m in cell.managers if m.host == inst.host)
    await manager.sync_power_states()
    inst = await cell.wait_for(instance_uuid, VmState.STOPPED)
    assert inst.power_state == PowerState.NOSTATE


@pytest.mark.parametrize("cell", [{"stuck": FakeDriver("stuck", spawn_delay=3600)}], indirect=True)
async def test_a_build_that_never_finishes_goes_to_error_after_the_timeout(cell: Cell):
    instance_uuid, _ = await cell.boot()
    for _ in range(100):  # wait until the host is spawning (and then hangs there)
        async with cell.db.read() as s:
            inst = await s.scalar(select(Instance).where(Instance.uuid == instance_uuid))
        if inst.task_state == TaskState.SPAWNING:
            break
        await asyncio.sleep(0.02)
    assert await cell.conductor.expire_stuck_builds() == []  # not stale yet
    await asyncio.sleep(0.6)
    assert await cell.conductor.expire_stuck_builds() == [instance_uuid]
    inst = await cell.wait_for(instance_uuid, VmState.ERROR)
    async with cell.db.read() as s:
        fault = await s.scalar(
            select(InstanceFault).where(InstanceFault.instance_uuid == instance_uuid)
        )
        assert await s.get(Allocation, instance_uuid) is None
    assert "timed out" in fault.message
