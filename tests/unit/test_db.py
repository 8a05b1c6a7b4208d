"""Database.run_write / run_read: one synchronous transaction in one call (SQLite)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from cumulo.common import db as db_module
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


async def test_first_session_writes_go_before_waiting_others_too(db):
    """db.write(first=True) (a session's transaction) overtakes them the same way."""
    order: list[str] = []

    async def write(name: str, first: bool = False) -> None:
        async with db.write(first):
            order.append(name)

    async with db.write():
        waiting = [
            asyncio.ensure_future(write("other")),
            asyncio.ensure_future(write("first", first=True)),
        ]
        await asyncio.sleep(0.01)
    await asyncio.gather(*waiting)
    assert order == ["first", "other"]


async def test_a_cancelled_waiter_does_not_keep_the_writer_lock(db):
    async with db.write():
        waiter = asyncio.ensure_future(db.run_write(_add_key, "never"))
        await asyncio.sleep(0.01)
        waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await asyncio.wait_for(db.run_write(_add_key, "after"), 5) == 1


# -- PostgreSQL: the checkout ping and reads without a transaction ---------------------


@pytest.fixture
def postgresql_url():
    from tests.databases import ServerUnavailable, fresh_database

    try:
        with fresh_database("postgresql") as url:
            yield url
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


def _backend(session) -> int:
    return session.scalar(text("SELECT pg_backend_pid()"))


def _in_a_transaction_block(session) -> bool:
    # Outside a transaction block each statement is a transaction of its own.
    xid = text("SELECT pg_current_xact_id()::text")
    return session.scalar(xid) == session.scalar(xid)


async def test_postgresql_reads_run_outside_a_transaction_and_writes_inside_one(postgresql_url):
    database = Database(postgresql_url, "compute")
    try:
        await database.migrate()
        assert await database.run_read(_in_a_transaction_block) is False
        async with database.read() as s:
            assert await s.run_sync(_in_a_transaction_block) is False
        assert await database.run_write(_in_a_transaction_block) is True
    finally:
        await database.dispose()


async def _terminate_pooled_backend(database: Database, url: str) -> int:
    """The server ends the backend of the pool's one connection (as a restart would)."""
    killed = await database.run_read(_backend)
    admin = create_async_engine(url.rsplit("/", 1)[0] + "/postgres")
    async with admin.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    await admin.dispose()
    await asyncio.sleep(0.2)
    return killed


async def test_postgresql_connection_killed_in_the_pool_is_replaced_on_checkout(postgresql_url):
    database = Database(postgresql_url, "compute")
    try:
        await database.migrate()
        killed = await _terminate_pooled_backend(database, postgresql_url)
        # The pool's one idle connection is dead: the checkout finds it, a new one serves.
        backends = {await database.run_read(_backend), await database.run_write(_backend)}
        assert killed not in backends
        assert await database.run_write(_add_key, "after") == 1
    finally:
        await database.dispose()


async def test_postgresql_connection_closed_by_the_server_is_replaced_without_a_ping(
    postgresql_url, monkeypatch
):
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 3600.0)  # no checkout pings at all
    database = Database(postgresql_url, "compute")
    try:
        await database.migrate()
        killed = await _terminate_pooled_backend(database, postgresql_url)
        # The server's end of the socket was read while it waited: known closed, replaced.
        assert await database.run_read(_backend) != killed
    finally:
        await database.dispose()


async def test_postgresql_connection_is_pinged_only_after_an_idle_while(
    postgresql_url, monkeypatch
):
    import asyncpg

    pings = []
    execute = asyncpg.Connection.execute

    async def counting(self, query, *args, **kwargs):
        if query == "SELECT 1":
            pings.append(query)
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", counting)
    database = Database(postgresql_url, "compute")
    try:
        await database.migrate()
        await database.run_read(_backend)
        pings.clear()
        await database.run_read(_backend)  # used a moment ago: no round trip for a ping
        await database.run_write(_backend)
        assert pings == []
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 0.0)
        await database.run_read(_backend)
        assert pings == ["SELECT 1"]
    finally:
        await database.dispose()
