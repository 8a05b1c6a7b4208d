"""Database.run_write / run_read: one synchronous transaction in one call (SQLite)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select

from cumulo.common.db import Database
from cumulo.compute.models import KeyPair


def _add_key(session, name: str, fail: bool = False) -> int:
    session.execute(insert(KeyPair).values(name=name, user_id="u", fingerprint="f", public_key="k"))
    if fail:
        raise RuntimeError("after the insert")
    return session.scalar(select(func.count()).select_from(KeyPair))


def _names(session) -> list[str]:
    return list(session.scalars(select(KeyPair.name).order_by(KeyPair.name)))


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await database.migrate()
    yield database
    await database.dispose()


async def test_run_write_commits_and_returns(db):
    assert await db.run_write(_add_key, "a") == 1
    assert await db.run_read(_names) == ["a"]
    async with db.read() as s:  # the aiosqlite side sees it too
        assert list(await s.scalars(select(KeyPair.name))) == ["a"]


async def test_run_write_rolls_back_on_error(db):
    with pytest.raises(RuntimeError, match="after the insert"):
        await db.run_write(_add_key, "a", fail=True)
    assert await db.run_read(_names) == []


async def test_run_write_and_write_share_one_writer(db):
    """Many writers through both interfaces at once: no 'database is locked', none lost."""

    async def through_write(i: int) -> None:
        async with db.write() as s:
            s.add(KeyPair(name=f"w{i:03}", user_id="u", fingerprint="f", public_key="k"))
            await asyncio.sleep(0)  # yield while holding the writer lock

    await asyncio.gather(
        *(db.run_write(_add_key, f"r{i:03}") for i in range(50)),
        *(through_write(i) for i in range(50)),
    )
    names = await db.run_read(_names)
    assert len(names) == 100 and len(set(names)) == 100


async def test_cancelled_caller_keeps_the_lock_until_the_transaction_ends(db):
    def slow(session) -> None:
        import time

        time.sleep(0.2)
        _add_key(session, "slow")

    task = asyncio.ensure_future(db.run_write(slow))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The transaction finished in its thread and was committed; the next write waits for it.
    assert await db.run_write(_add_key, "after") == 2


async def test_first_writes_go_before_waiting_others(db):
    """run_write(first=True) overtakes waiting writes that are not `first`."""
    order: list[str] = []

    def record(session, name: str) -> None:
        order.append(name)

    async with db.write():  # hold the writer lock while the others queue up
        waiting = [
            asyncio.ensure_future(db.run_write(record, "other1")),
            asyncio.ensure_future(db.run_write(record, "other2")),
            asyncio.ensure_future(db.run_write(record, "first", first=True)),
        ]
        await asyncio.sleep(0.01)
    await asyncio.gather(*waiting)
    assert order == ["first", "other1", "other2"]


async def test_a_cancelled_waiter_does_not_keep_the_writer_lock(db):
    async with db.write():
        waiter = asyncio.ensure_future(db.run_write(_add_key, "never"))
        await asyncio.sleep(0.01)
        waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await asyncio.wait_for(db.run_write(_add_key, "after"), 5) == 1
