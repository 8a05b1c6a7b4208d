"""`cumulo db upgrade` and `cumulo db check`: each service's schema against its migrations.

`cumulo up` upgrades every schema on start; these commands let an operator do it (and
see where each schema stands) before starting a new release, on SQLite files as on
PostgreSQL/MariaDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError

from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database, alembic_config

# The services that keep a SQL database, in the order `cumulo up` opens them.
SERVICES = ("identity", "image", "volume", "network", "compute", "ec2", "dashboard")


@dataclass
class SchemaState:
    service: str
    database: str  # the URL, password hidden
    current: str | None  # None: not created yet
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _head(service: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(service)).get_current_head()
    assert head is not None, f"{service} has no migrations"
    return head


async def _current(db: Database) -> str | None:
    def read(connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table": f"alembic_version_{db.service}"}
        )
        return context.get_current_revision()

    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(read)
    except DBAPIError:
        if db.is_sqlite:
            raise
        return None  # the service's database does not exist on the server yet


def _database(config: CumuloConfig, state_dir: Path, service: str) -> Database:
    return Database(database_url(config, state_dir, service), service)


async def check(config: CumuloConfig, state_dir: Path) -> list[SchemaState]:
    states = []
    for service in SERVICES:
        db = _database(config, state_dir, service)
        try:
            states.append(SchemaState(service, db.url, await _current(db), _head(service)))
        finally:
            await db.dispose()
    return states


async def upgrade(config: CumuloConfig, state_dir: Path) -> list[SchemaState]:
    """Upgrade every service's schema to the newest revision (creating it if needed)."""
    for service in SERVICES:
        db = _database(config, state_dir, service)
        try:
            await db.migrate()
        finally:
            await db.dispose()
    return await check(config, state_dir)
