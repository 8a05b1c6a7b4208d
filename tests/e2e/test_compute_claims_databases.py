"""Atomic claims where writers really run at once: PostgreSQL and MariaDB (SQLite
serializes its writers, so only these engines can show a double booking)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from cumulo.common.db import Database
from cumulo.compute.models import Allocation, ComputeNode
from tests.conftest import skip_or_fail
from tests.databases import ServerUnavailable, fresh_database
from tests.functional.test_compute_claims import boot_one, make_hosts

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
def test_200_concurrent_boots_onto_room_for_100(engine: str):
    try:
        with fresh_database(engine) as url:
            asyncio.run(_run(url))
    except ServerUnavailable as exc:
        skip_or_fail(f"{engine} is not reachable: {exc}")


async def _run(url: str) -> None:
    db = Database(url, "compute")
    await db.migrate()
    try:
        await make_hosts(db, 2, memory_mb=512 * 50)
        placed = await asyncio.gather(*(boot_one(db) for _ in range(200)))
        assert sum(1 for p in placed if p) == 100
        async with db.read() as s:
            nodes = (await s.scalars(select(ComputeNode))).all()
            allocations = await s.scalar(select(func.count()).select_from(Allocation))
        assert allocations == 100
        assert [n.memory_mb_used for n in nodes] == [n.memory_mb for n in nodes]
    finally:
        await db.dispose()
