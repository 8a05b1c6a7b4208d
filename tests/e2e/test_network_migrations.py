"""The network schema's migrations 0002 (RBAC policies) and 0004 (segment keys) on
SQLite, PostgreSQL and MariaDB.

A database at revision 0001 holding a shared, an external and a private network and a
shared subnet pool is upgraded to head: each shared or external object gets its `*`
policy, the private one none, and the unique key refuses a duplicate policy. One at
0003 holding flat and VLAN networks (two on one physical network) is upgraded: each
segment is held once, and the unique key refuses another network on it.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic import command
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from cumulo.common.db import Database, alembic_config
from cumulo.network.models import Network, RbacPolicy, SubnetPool

pytestmark = pytest.mark.e2e


async def _upgrade(db: Database, revision: str) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config("network", sync), revision))


async def test_migration_0002_gives_shared_and_external_objects_their_policies(
    each_database_url: str,
) -> None:
    db = Database(each_database_url, "network")
    try:
        if not db.is_sqlite:
            await db.migrate()  # creates the database; then start again from 0001
            async with db.engine.begin() as conn:
                await conn.run_sync(
                    lambda sync: command.downgrade(alembic_config("network", sync), "0001")
                )
        await _upgrade(db, "0001")
        async with db.write() as s:
            # Rows in 0001's columns (the model has columns later revisions add).
            for name, shared, external in (
                ("shared", True, False), ("public", False, True), ("private", False, False),
            ):  # fmt: skip
                await s.execute(insert(Network.__table__).values(
                    id=name, project_id="p1", name=name, shared=shared, external=external,
                ))  # fmt: skip
            s.add(
                SubnetPool(
                    id="pool", project_id="p1", ip_version=4, prefixes=["10.0.0.0/8"],
                    default_prefixlen=24, min_prefixlen=8, max_prefixlen=32, shared=True,
                )
            )  # fmt: skip
        await db.migrate()
        await db.migrate()  # a second upgrade is a no-op
        async with db.read() as s:
            rows = {
                (p.object_type, p.object_id, p.action, p.target_project, p.project_id)
                for p in await s.scalars(select(RbacPolicy))
            }
        assert rows == {
            ("network", "shared", "access_as_shared", "*", "p1"),
            ("network", "public", "access_as_external", "*", "p1"),
            ("subnetpool", "pool", "access_as_shared", "*", "p1"),
        }
        with pytest.raises(IntegrityError):
            async with db.write() as s:
                s.add(
                    RbacPolicy(
                        id="dup", project_id="p1", object_type="network", object_id="shared",
                        action="access_as_shared", target_project="*",
                    )
                )  # fmt: skip
    finally:
        await db.dispose()


async def test_migration_0004_gives_provider_networks_their_segment(
    each_database_url: str,
) -> None:
    db = Database(each_database_url, "network")
    try:
        if not db.is_sqlite:
            await db.migrate()
            async with db.engine.begin() as conn:
                await conn.run_sync(
                    lambda sync: command.downgrade(alembic_config("network", sync), "0003")
                )
        await _upgrade(db, "0003")
        rows = [
            ("public", "flat", "public", None),
            ("again", "flat", "public", None),  # made later: the first keeps the segment
            ("v100", "vlan", "physnet1", 100),
            ("tenant", "vxlan", None, None),
        ]
        async with db.write() as s:
            for i, (name, kind, physnet, seg) in enumerate(rows):
                await s.execute(insert(Network.__table__).values(
                    id=name, project_id="p1", name=name, network_type=kind,
                    physical_network=physnet, segmentation_id=seg,
                    created_at=datetime(2026, 1, 1, 0, i),
                ))  # fmt: skip
        await db.migrate()
        async with db.read() as s:
            keys = {n.id: n.segment_key for n in await s.scalars(select(Network))}
        assert keys == {"public": "flat:public", "again": None, "v100": "vlan:physnet1:100",
                        "tenant": None}  # fmt: skip
        with pytest.raises(IntegrityError):
            async with db.write() as s:
                s.add(Network(id="dup", project_id="p1", name="dup", network_type="vlan",
                              physical_network="physnet1", segmentation_id=100,
                              segment_key="vlan:physnet1:100"))  # fmt: skip
    finally:
        await db.dispose()
