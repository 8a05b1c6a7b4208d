"""The compute host's per-server locks (Nova's synchronized(instance.uuid)): one swap,
attach, detach or delete of a server at a time, and no lock kept for a server once no
task holds or awaits it."""

from __future__ import annotations

import asyncio
import gc

from cumulo.compute.manager import ComputeManager


def manager() -> ComputeManager:
    return ComputeManager("host1", None, None, None, None)  # type: ignore[arg-type]


async def test_one_task_at_a_time_per_server_also_across_a_released_lock() -> None:
    host = manager()
    running: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    order: list[str] = []

    async def work(name: str, server: str, hold: float) -> None:
        async with host._instance_lock(server):
            running.append(name)
            if len([r for r in running if r.startswith(server)]) > 1:
                overlaps.append(tuple(running))
            order.append(name)
            await asyncio.sleep(hold)
            running.remove(name)

    first = asyncio.create_task(work("s1-a", "s1", 0.05))
    await asyncio.sleep(0)
    second = asyncio.create_task(work("s1-b", "s1", 0.05))  # waits for the first
    other = asyncio.create_task(work("s2-a", "s2", 0.05))  # another server: no wait
    await asyncio.sleep(0.01)
    assert running == ["s1-a", "s2-a"]
    await first
    # The first let go while the second waited: a newcomer gets the same lock, not a
    # new one (the entry lives while a task awaits it).
    third = asyncio.create_task(work("s1-c", "s1", 0.01))
    await asyncio.gather(second, other, third)
    assert overlaps == []
    assert order.index("s1-a") < order.index("s1-b") < order.index("s1-c")


async def test_a_servers_lock_goes_once_no_task_holds_or_awaits_it() -> None:
    host = manager()
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    held: list[str] = []

    async def hold(name: str) -> None:
        async with host._instance_lock("s1"):
            held.append(name)
            await gates[name].wait()

    first, second = asyncio.create_task(hold("a")), asyncio.create_task(hold("b"))
    await asyncio.sleep(0.01)
    assert held == ["a"] and list(host._instance_locks) == ["s1"]
    gates["a"].set()
    await first
    await asyncio.sleep(0)
    assert held == ["a", "b"] and list(host._instance_locks) == ["s1"]  # b holds it
    gates["b"].set()
    await second
    gc.collect()
    assert list(host._instance_locks) == []
    # Many servers come and go: nothing is kept for them.
    for n in range(50):
        async with host._instance_lock(f"server-{n}"):
            pass
    gc.collect()
    assert len(host._instance_locks) == 0


async def test_the_device_metadata_locks_go_too() -> None:
    host = manager()

    class Conductor:
        async def instance_update(self, ctx, uuid, values, reply=True):
            return {"network_info": [], "device_metadata": []}

    host.conductor = Conductor()  # type: ignore[assignment]
    host._device_metadata = lambda *args: asyncio.sleep(0, [])  # type: ignore[method-assign]
    await asyncio.gather(*(host._refresh_device_metadata({}, f"s{n}") for n in range(10)))
    gc.collect()
    assert len(host._device_locks) == 0
