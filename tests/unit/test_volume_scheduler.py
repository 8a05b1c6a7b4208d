"""The volume scheduler: its filters and weigher on backend states, and placement
against a real (SQLite) database: allocated capacity counted from the volumes, and
concurrent creates never overcommitting a small backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cumulo.common.db import Database, utcnow
from cumulo.volume import states
from cumulo.volume.models import Volume, VolumeServiceRow, VolumeType
from cumulo.volume.scheduler import (
    VOLUME_BINARY,
    BackendState,
    RequestSpec,
    availability_zone_filter,
    backend_fits,
    backend_states,
    backend_up_filter,
    capabilities_filter,
    capacity_filter,
    place,
    same_backend_filter,
    select_backend,
    spec_matches,
)
from tests.databases import ServerUnavailable, fresh_database


def backend(
    host: str = "h@a",
    *,
    total: float = 100,
    free: float | None = None,
    allocated: int = 0,
    ratio: float = 1.0,
    reserved: int = 0,
    zone: str = "nova",
    up: bool = True,
    **caps,
) -> BackendState:
    return BackendState(
        host=host,
        availability_zone=zone,
        capabilities={
            "volume_backend_name": host.partition("@")[2],
            "total_capacity_gb": total,
            "free_capacity_gb": total if free is None else free,
            "max_over_subscription_ratio": ratio,
            "reserved_percentage": reserved,
            "thin_provisioning_support": True,
            **caps,
        },
        allocated_gb=allocated,
        up=up,
    )


def test_thick_capacity_counts_allocated_and_reserved():
    assert capacity_filter(backend(total=10, allocated=8), RequestSpec(2))
    assert not capacity_filter(backend(total=10, allocated=9), RequestSpec(2))
    # 20 % of 10 GB reserved: 8 usable.
    assert capacity_filter(backend(total=10, reserved=20), RequestSpec(8))
    assert not capacity_filter(backend(total=10, reserved=20), RequestSpec(9))
    # The disk itself is nearly full (something else wrote to it).
    assert not capacity_filter(backend(total=10, free=1), RequestSpec(2))
    assert not capacity_filter(backend(total=0), RequestSpec(1))


def test_thin_capacity_overcommits_up_to_the_ratio():
    thin = backend(total=10, ratio=20.0, allocated=150)
    assert capacity_filter(thin, RequestSpec(50))
    assert not capacity_filter(thin, RequestSpec(51))
    # Really free space x ratio must still cover the new volume.
    assert not capacity_filter(backend(total=10, free=1, ratio=20.0), RequestSpec(21))


def test_capabilities_and_extra_spec_operators():
    b = backend("h@fast", volume_format="qcow2", iops=500, multiattach=True)
    assert capabilities_filter(b, RequestSpec(1, extra_specs={"volume_backend_name": "fast"}))
    assert not capabilities_filter(b, RequestSpec(1, extra_specs={"volume_backend_name": "slow"}))
    assert capabilities_filter(b, RequestSpec(1, extra_specs={"capabilities:iops": ">= 400"}))
    assert not capabilities_filter(b, RequestSpec(1, extra_specs={"iops": ">= 600"}))
    assert capabilities_filter(b, RequestSpec(1, extra_specs={"multiattach": "<is> True"}))
    # A capability the backend does not report fails; other scopes are not ours.
    assert not capabilities_filter(b, RequestSpec(1, extra_specs={"tier": "ssd"}))
    assert capabilities_filter(b, RequestSpec(1, extra_specs={"qos:read_iops": "9"}))
    assert spec_matches("qcow2", "<or> raw <or> qcow2")
    assert spec_matches("raw", "s== raw") and not spec_matches("raw", "s!= raw")
    assert spec_matches("fast-ssd", "<in> ssd")
    assert not spec_matches("abc", ">= 3")


def test_zone_up_and_same_backend_filters():
    b = backend("h@a", zone="az1")
    assert availability_zone_filter(b, RequestSpec(1, availability_zone="az1"))
    assert not availability_zone_filter(b, RequestSpec(1, availability_zone="az2"))
    assert availability_zone_filter(b, RequestSpec(1))
    assert not backend_up_filter(backend(up=False), RequestSpec(1))
    assert same_backend_filter(b, RequestSpec(1, backend="h@a#a"))
    assert not same_backend_filter(b, RequestSpec(1, backend="h@b#b"))


def test_the_weigher_picks_the_most_free_and_reports_the_failing_filter():
    small, big = backend("h@small", total=10), backend("h@big", total=100, allocated=50)
    best, _ = select_backend([small, big], RequestSpec(1))
    assert best is big
    best, failed = select_backend([small, big], RequestSpec(1, extra_specs={"x": "y"}))
    assert best is None and failed == "capabilities_filter"
    best, failed = select_backend([small, big], RequestSpec(60))
    assert best is None and failed == "capacity_filter"
    best, failed = select_backend([backend(up=False)], RequestSpec(1))
    assert best is None and failed == "backend_up_filter"


# -- placement against the database ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path: Path):
    """SQLite (one writer), PostgreSQL and MariaDB (concurrent transactions: the row
    locks count)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/volume.db"
        return
    try:
        with fresh_database(request.param) as url:
            yield url
    except ServerUnavailable as exc:
        pytest.skip(f"{request.param} is not reachable: {exc}")


@pytest.fixture
async def db(db_url: str):
    database = Database(db_url, "volume")
    await database.migrate()
    async with database.write() as session:
        session.add(VolumeType(id="t", name="__DEFAULT__", is_public=True))
    yield database
    await database.dispose()


async def report(db: Database, host: str, total: float, *, age: float = 0, ratio=1.0) -> None:
    caps = backend(host, total=total, ratio=ratio).capabilities
    async with db.write() as session:
        session.add(
            VolumeServiceRow(
                host=host,
                binary=VOLUME_BINARY,
                pool=host.partition("@")[2],
                availability_zone="nova",
                capabilities=json.dumps(caps),
                updated_at=utcnow() - timedelta(seconds=age),
            )
        )


async def create(db: Database, size: int) -> BackendState | None:
    """What the API's create does: place and write the volume in one transaction."""
    vid = str(uuid.uuid4())
    async with db.write() as session:
        # The API reads first (type, quota usage): the transaction has a snapshot by then.
        await session.scalar(select(func.count(Volume.id)))
        best, _ = await place(session, vid, RequestSpec(size), 60)
        session.add(
            Volume(
                id=vid, project_id="p", user_id="u", size=size, type_id="t",
                status=states.CREATING if best else states.ERROR, availability_zone="nova",
                host=best.pool_host if best else "",
            )
        )  # fmt: skip
    return best


async def test_concurrent_creates_never_overcommit_a_small_backend(db: Database):
    await report(db, "h@small", total=5)
    placed = await asyncio.gather(*(create(db, 1) for _ in range(12)))
    assert sum(p is not None for p in placed) == 5
    async with db.read() as session:
        rows = {v.id: v for v in (await session.execute(Volume.__table__.select())).all()}
    assert sum(1 for r in rows.values() if r.host == "h@small#small") == 5
    assert sum(1 for r in rows.values() if r.status == states.ERROR and r.host == "") == 7
    async with db.read() as session:
        (state,) = await backend_states(session, 60)
    assert state.allocated_gb == 5
    async with db.write() as session:
        assert not await backend_fits(session, "h@small#small", 1, 60)


async def test_placement_spreads_and_skips_silent_backends(db: Database):
    await report(db, "h@a", total=10)
    await report(db, "h@b", total=10)
    await report(db, "h@gone", total=1000, age=120)
    hosts = []
    for _ in range(4):
        chosen = await create(db, 2)
        assert chosen is not None
        hosts.append(chosen.host)
    assert sorted(hosts) == ["h@a", "h@a", "h@b", "h@b"]
    async with db.write() as session:
        assert await backend_fits(session, "h@a#a", 6, 60)
        assert not await backend_fits(session, "h@a#a", 7, 60)
        assert not await backend_fits(session, "h@gone#gone", 1, 60)
