"""Throw-away databases on the local PostgreSQL and MariaDB servers, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine


@dataclass(frozen=True)
class Server:
    name: str
    admin_url: str  # a URL to the server itself, for listing and dropping databases
    url_prefix: str  # + database name = the cloud's database URL
    list_databases: str  # those whose name starts with :prefix
    drop: str


SERVERS = {
    "postgresql": Server(
        "postgresql",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/",
        "SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)",
        'DROP DATABASE IF EXISTS "{}" WITH (FORCE)',
    ),
    "mariadb": Server(
        "mariadb",
        "mysql+aiomysql://root@127.0.0.1:3306/",
        "mysql+aiomysql://root@127.0.0.1:3306/",
        "SELECT schema_name FROM information_schema.schemata"
        " WHERE LEFT(schema_name, CHAR_LENGTH(:prefix)) = :prefix",
        "DROP DATABASE IF EXISTS `{}`",
    ),
}


class ServerUnavailable(Exception):
    pass


async def _databases(server: Server, prefix: str, drop: bool = False) -> list[str]:
    engine = create_async_engine(server.admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            names = list(await conn.scalars(text(server.list_databases), {"prefix": prefix}))
            if drop:
                if server.name == "mariadb":
                    # As PostgreSQL's DROP ... WITH (FORCE): connections a failed test left
                    # open would make DROP DATABASE wait for their metadata locks forever.
                    sessions = await conn.scalars(
                        text(
                            "SELECT id FROM information_schema.processlist WHERE db IN :names"
                        ).bindparams(bindparam("names", expanding=True)),
                        {"names": names or [""]},
                    )
                    for session in list(sessions):
                        with contextlib.suppress(DBAPIError):  # it may have ended meanwhile
                            await conn.execute(text(f"KILL {int(session)}"))
                for name in names:
                    await conn.execute(text(server.drop.format(name)))
            return names
    finally:
        await engine.dispose()


@contextmanager
def fresh_database(engine: str) -> Iterator[str]:
    """The URL of a new, uniquely named database on the engine's server.

    cumulo creates one database per service from it (<name>_identity, ...); all of
    them are dropped afterwards. Raises ServerUnavailable when the server cannot be
    reached.
    """
    server = SERVERS[engine]
    name = f"cumulo_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_databases(server, name))
    except Exception as exc:  # noqa: BLE001 - connection errors differ per driver
        raise ServerUnavailable(f"{engine} at {server.admin_url}: {exc}") from exc
    try:
        yield server.url_prefix + name
    finally:
        asyncio.run(_databases(server, name, drop=True))
