"""Database access: async SQLAlchemy 2 engines and the Alembic migration runner.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every
write transaction goes through one asyncio lock, so concurrent requests never
meet "database is locked". PostgreSQL and MariaDB rely on their own locking.

Two ways to run a transaction: `async with db.write() as session` (an AsyncSession:
on SQLite every statement is several hand-offs to aiosqlite's thread, made while the
writer lock is held), and `await db.run_write(fn, ...)`, which runs the synchronous
`fn(session, ...)` as one whole transaction in one call: on SQLite in a thread of its
own with a plain pysqlite engine on the same file (same pragmas, same writer lock),
elsewhere through AsyncSession.run_sync. Hot paths use run_write/run_read.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import URL, DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.util import await_

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


@compiles(DateTime, "mysql")
@compiles(DateTime, "mariadb")
def _mysql_datetime(_type, _compiler, **_kw) -> str:
    # MySQL/MariaDB DATETIME drops fractions of a second; revocation events compare
    # against token issue times to the microsecond, so keep all six digits.
    return "DATETIME(6)"


_MYSQL_CHARSET = "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"


def utcnow() -> datetime:
    """Naive UTC now: every DATETIME column stores naive UTC (portable across engines)."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_base(service: str) -> type[DeclarativeBase]:
    """A declarative base with its own MetaData, one per service."""

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    Base.__name__ = f"{service.title()}Base"
    return Base


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# A connection used this recently is not pinged on checkout (HikariCP's
# aliveBypassWindowMs does the same, with 0.5 s): under load a pooled connection comes
# back within milliseconds, and the ping was a round trip on every transaction (8 % of
# a conductor's CPU during boots).
PING_AFTER_IDLE = 1.0  # seconds


def _ping_postgresql(_dbapi_conn, record, _proxy) -> None:
    """A pooled connection checked before use: SQLAlchemy's pre-ping on asyncpg is three
    round trips (BEGIN, `;`, ROLLBACK), this one at most. One the server closed (a
    restart, a terminated backend) is known closed without any: the event loop reads
    its end of the socket while it waits in the pool. One idle for longer than
    PING_AFTER_IDLE is pinged (`SELECT 1`), for what closes it silently (a firewall,
    a proxy). A dead one is replaced by the pool."""
    driver = record.driver_connection
    if driver.is_closed():
        raise DisconnectionError("database connection closed by the server")
    if time.monotonic() - record.info.get("returned", 0.0) < PING_AFTER_IDLE:
        return
    try:
        await_(driver.execute("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - whatever failed, try a new connection
        raise DisconnectionError(f"database connection lost: {exc}") from exc


def _returned(_dbapi_conn, record) -> None:
    record.info["returned"] = time.monotonic()


def service_database_url(url: str | URL, service: str) -> URL:
    """The database a service uses on a database server: `<database>_<service>`.

    Each service gets a database of its own on the server (as OpenStack gives keystone,
    nova and glance theirs), so services never share a table namespace. SQLite URLs
    (already one file per service) are returned as they are.
    """
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        return sa_url
    return sa_url.set(database=f"{sa_url.database or 'cumulo'}_{service}")


# Reader threads (and pooled connections) per SQLite database for run_read.
_SQLITE_READERS = 2

# Connections a database server's engine holds at most (SQLAlchemy's default: 5 kept
# plus 10 "overflow" ones). All of them are kept once opened: an overflow connection
# is closed as soon as it is returned to a pool holding 5, and under a burst of
# requests (a conductor handles up to PREFETCH messages at once) that was a new
# connection every few transactions, each a server process, a handshake and every
# statement prepared again (10 % of a conductor's CPU during boots). No more
# connections than before at any time; idle ones stay open instead of being closed.
SERVER_POOL_SIZE = 15


class _WriterLock:
    """SQLite's one-writer lock: FIFO, except that `first` waiters go before the others."""

    def __init__(self) -> None:
        self._locked = False
        self._first: deque[asyncio.Future] = deque()
        self._others: deque[asyncio.Future] = deque()

    @asynccontextmanager
    async def held(self, first: bool = False) -> AsyncIterator[None]:
        await self._acquire(first)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, first: bool) -> None:
        if not self._locked and not self._first and not self._others:
            self._locked = True
            return
        waiter = asyncio.get_running_loop().create_future()
        waiting = self._first if first else self._others
        waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed the lock as we were cancelled: pass it on
            elif waiter in waiting:
                waiting.remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the lock to the next waiter (it stays locked), or unlock."""
        for waiting in (self._first, self._others):
            while waiting:
                waiter = waiting.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._locked = False


class _Workers:
    """Threads that run database calls for the event loop: one queue, and the result
    handed back with one call_soon_threadsafe (lighter than run_in_executor, which
    goes through concurrent.futures; these calls are on every request's path)."""

    def __init__(self, name: str, count: int) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, loop: asyncio.AbstractEventLoop, fn, *args) -> asyncio.Future:
        future = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def shutdown(self) -> None:
        for _thread in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                callback, value = _set_exception, exc
            else:
                callback, value = _set_result, result
            try:
                loop.call_soon_threadsafe(callback, future, value)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _sync_transaction(sessions: sessionmaker[Session], fn, args, kwargs):
    with sessions() as session, session.begin():
        return fn(session, *args, **kwargs)


def _sync_read(sessions: sessionmaker[Session], fn, args, kwargs):
    with sessions() as session:
        return fn(session, *args, **kwargs)


# MariaDB/MySQL: deadlock found (1213), lock wait timeout (1205), and a savepoint gone
# because the server rolled the whole transaction back for one of those (1305).
# PostgreSQL: serialization failure (40001), deadlock detected (40P01).
_TRANSIENT_MYSQL = {1213, 1205, 1305}
_TRANSIENT_SQLSTATE = {"40001", "40P01"}


def is_transient(exc: DBAPIError) -> bool:
    """True when the server aborted the transaction to resolve a conflict with another
    one: run again, it will most likely succeed."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _TRANSIENT_SQLSTATE:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL


class Database:
    """One service's database: sessions for reads, serialized transactions for writes.

    `url` is the configured SQLAlchemy URL: a SQLite file, or a database server, where
    the service's own database (see service_database_url) is created on first migrate.
    """

    def __init__(self, url: str, service: str) -> None:
        self.service = service
        self.is_sqlite = url.startswith("sqlite")
        sa_url = service_database_url(url, service)
        self.url = sa_url.render_as_string(hide_password=True)
        kwargs: dict = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=SERVER_POOL_SIZE, max_overflow=0)
        if sa_url.get_backend_name() in ("mysql", "mariadb"):
            kwargs.update(pool_recycle=3600, pool_pre_ping=True)
            if "charset" not in sa_url.query:
                # Whatever the server's default, talk full 4-byte UTF-8.
                sa_url = sa_url.update_query_dict({"charset": "utf8mb4"})
        if ":memory:" in url:
            raise ValueError("in-memory SQLite cannot be shared between connections")
        self.engine = create_async_engine(sa_url, **kwargs)
        self._sync_sessions: sessionmaker[Session] | None = None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            # run_write/run_read: the same file through the plain pysqlite driver, used
            # from one writer thread and a few reader threads (never from the loop).
            sync_engine = create_engine(
                sa_url.set(drivername="sqlite+pysqlite"),
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=_SQLITE_READERS + 1,
            )
            event.listen(sync_engine, "connect", _sqlite_pragmas)
            self._sync_engine = sync_engine
            self._sync_sessions = sessionmaker(sync_engine, expire_on_commit=False)
        self._threads: dict[str, _Workers] = {}
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads need no transaction on PostgreSQL (READ COMMITTED: every statement has a
        # snapshot of its own either way): no BEGIN and ROLLBACK round trips around them.
        self._read_sessions = self._sessions
        if sa_url.get_backend_name() == "postgresql":
            event.listen(self.engine.sync_engine.pool, "checkout", _ping_postgresql)
            event.listen(self.engine.sync_engine.pool, "checkin", _returned)
            reads = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._read_sessions = async_sessionmaker(reads, expire_on_commit=False)
        self._write_lock = _WriterLock()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self, first: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back on any error.
        `first`: as for run_write."""
        if not self.is_sqlite:
            async with self._sessions.begin() as session:
                yield session
            return
        async with self._write_lock.held(first), self._sessions() as session:
            async with session.begin():
                yield session

    async def write_retrying(
        self, work: Callable[[AsyncSession], Awaitable[T]], attempts: int = 5, first: bool = False
    ) -> T:
        """`await work(session)` in one write transaction, run again from the start
        when the database server gave it up to resolve a conflict (a deadlock, a lock
        wait timeout, a serialization failure). `work` must be safe to repeat: what it
        did in the failed attempt was rolled back. `first`: as for run_write."""
        for attempt in range(attempts):
            try:
                async with self.write(first) as session:
                    return await work(session)
            except DBAPIError as exc:
                if attempt == attempts - 1 or not is_transient(exc):
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def run_write(
        self, fn: Callable[..., T], /, *args: Any, first: bool = False, **kwargs: Any
    ) -> T:
        """`fn(session, *args, **kwargs)` as one write transaction, in one call.

        `first`: on SQLite, go before the waiting writes that are not `first` (work that
        finishes what was started, such as build steps, before work that starts more).

        `fn` is synchronous SQLAlchemy code on a `Session`; the transaction is committed
        when it returns and rolled back if it raises (the exception propagates). On
        SQLite it runs in the database's writer thread under the same writer lock as
        `write()`; elsewhere through AsyncSession.run_sync. What it returns must not
        need the session any more (plain values, or objects with what is used loaded).
        """
        if self._sync_sessions is None:
            async with self._sessions.begin() as session:
                return await session.run_sync(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        async with self._write_lock.held(first):
            done = self._thread("write", 1).submit(
                loop, _sync_transaction, self._sync_sessions, fn, args, kwargs
            )
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                # The transaction goes on in its thread: keep the writer lock until it ends.
                await asyncio.wait([done])
                raise

    async def run_write_retrying(
        self, fn: Callable[..., T], /, *args: Any, attempts: int = 5, first: bool = False
    ) -> T:
        """run_write, run again from the start when the database server gave the
        transaction up to resolve a conflict (see write_retrying)."""
        for attempt in range(attempts):
            try:
                return await self.run_write(fn, *args, first=first)
            except DBAPIError as exc:
                if attempt == attempts - 1 or not is_transient(exc):
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def run_read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(session, *args, **kwargs)` for reading, in one call (see run_write);
        on SQLite in a reader thread, which never waits for the writer lock (WAL)."""
        if self._sync_sessions is None:
            async with self._read_sessions() as session:
                return await session.run_sync(fn, *args, **kwargs)
        return await self._thread("read", _SQLITE_READERS).submit(
            asyncio.get_running_loop(), _sync_read, self._sync_sessions, fn, args, kwargs
        )

    def _thread(self, kind: str, workers: int) -> _Workers:
        pool = self._threads.get(kind)
        if pool is None:
            pool = self._threads[kind] = _Workers(f"{self.service}-db-{kind}", workers)
        return pool

    async def migrate(self) -> None:
        """Create the service's database if needed, then upgrade it to the newest revision."""
        if not self.is_sqlite:
            await self._create_database()
        async with self.engine.begin() as conn:
            await conn.run_sync(_alembic_upgrade, self.service)

    async def dispose(self) -> None:
        await self.engine.dispose()
        threads, self._threads = self._threads, {}
        for pool in threads.values():
            await asyncio.to_thread(pool.shutdown)
        if self._sync_sessions is not None:
            self._sync_engine.dispose()

    async def _create_database(self) -> None:
        try:
            async with self.engine.connect():
                return
        except DBAPIError:
            pass  # most likely missing: try to create it below
        url = self.engine.url
        postgres = url.get_backend_name() == "postgresql"
        server = create_async_engine(
            # The server itself (URL.set cannot clear a field; NamedTuple._replace can).
            url._replace(database="postgres" if postgres else None),
            isolation_level="AUTOCOMMIT",
        )
        try:
            async with server.connect() as conn:
                name = conn.dialect.identifier_preparer.quote(url.database)
                if not postgres:
                    await conn.execute(
                        text(f"CREATE DATABASE IF NOT EXISTS {name} {_MYSQL_CHARSET}")
                    )
                elif not await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
                ):
                    await conn.execute(
                        text(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
                    )
        except DBAPIError as exc:
            raise RuntimeError(
                f"cannot open or create database {url.database!r} of the {self.service} "
                f"service on {self.url}: create it, or let the user create databases "
                f"({exc.orig})"
            ) from exc
        finally:
            await server.dispose()


def alembic_config(service: str, connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", f"cumulo.{service}:migrations")
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    return cfg


def _alembic_upgrade(connection: Connection, service: str) -> None:
    command.upgrade(alembic_config(service, connection), "head")


def run_migrations_online(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py: run on the connection we were given."""
    from alembic import context

    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=context.config.attributes["version_table"],
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
