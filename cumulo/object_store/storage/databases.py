"""Account and container databases: one SQLite file per account and per container
replica (as Swift), holding the listing and the usage, so no central database is on
the data path.

Rows carry timestamps and merge newest-wins, so replicas that missed an update
converge when the replicator merges them. Metadata is {name: [value, timestamp]}; an
empty value is a removal that still wins over older values.

A container's object rows are kept per storage policy (as Swift's): a write made
through a stale view of the container's policy is a row of its own, counted apart
(policy_stat), left out of the listing, and found by the replicator as misplaced
(rows after `reconciler_sync_point` in another policy) for the reconciler to move.

A container also keeps what it last reported to its account (`reported_*`, Swift's
columns): object updates are reported in batches after the fact (storage/node.py's
AccountUpdates, and the updater's pass for whatever those missed).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cumulo.object_store.storage import container_policy

_OPEN_MAX = 256
_open: OrderedDict[Path, tuple[sqlite3.Connection, threading.Lock]] = OrderedDict()
_open_lock = threading.Lock()


class DatabaseMissing(Exception):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@contextmanager
def _transaction(
    path: Path,
    create_sql: str | None = None,
    upgrade: Callable[[sqlite3.Connection], None] | None = None,
) -> Iterator[sqlite3.Connection]:
    """A write transaction on the database at path; create_sql: create it when missing;
    upgrade: bring an older file's schema up to date when it is first opened."""
    with _open_lock:
        entry = _open.get(path)
        if entry is not None:
            _open.move_to_end(path)
    if entry is not None and not path.exists():
        # Its file was removed (a wiped device, a handoff gone home): not that inode.
        forget(path)
        entry = None
    if entry is None:
        if not path.exists():
            if create_sql is None:
                raise DatabaseMissing(str(path))
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        if upgrade is not None:
            upgrade(conn)
        if create_sql is not None:  # at once: another process never sees half a schema
            conn.executescript(f"BEGIN IMMEDIATE; {create_sql} COMMIT;")
        entry = (conn, threading.Lock())
        with _open_lock:
            entry = _open.setdefault(path, entry)
            while len(_open) > _OPEN_MAX:
                _, (old, old_lock) = _open.popitem(last=False)
                with old_lock:
                    old.close()
    conn, lock = entry
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def forget(path: Path) -> None:
    """Close a database before its file is moved or removed."""
    with _open_lock:
        entry = _open.pop(path, None)
    if entry:
        with entry[1]:
            entry[0].close()


def merge_metadata(current: dict, updates: dict) -> dict:
    merged = dict(current)
    for key, (value, timestamp) in updates.items():
        if key not in merged or merged[key][1] < timestamp:
            merged[key] = [value, timestamp]
    return merged


def live_metadata(metadata: dict) -> dict[str, str]:
    return {k: v for k, (v, _ts) in metadata.items() if v != ""}


# Version 1 (user_version): object rows per (name, policy) with an ever-growing ROWID
# (the replicator's sync point for misplaced rows), counts per policy in policy_stat.
# Version 2: what was last reported to the account (reported_*).
CONTAINER_SCHEMA = """
CREATE TABLE IF NOT EXISTS object (
    ROWID INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, created_at TEXT, size INTEGER,
    content_type TEXT, etag TEXT, deleted INTEGER DEFAULT 0,
    storage_policy_index INTEGER DEFAULT 0, UNIQUE (name, storage_policy_index));
CREATE INDEX IF NOT EXISTS object_deleted_policy_name
    ON object (deleted, storage_policy_index, name);
CREATE TABLE IF NOT EXISTS policy_stat (
    storage_policy_index INTEGER PRIMARY KEY, object_count INTEGER DEFAULT 0,
    bytes_used INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS container_stat (
    account TEXT, container TEXT, created_at TEXT, put_timestamp TEXT,
    delete_timestamp TEXT DEFAULT '0', status_changed_at TEXT,
    storage_policy_index INTEGER DEFAULT 0, metadata TEXT DEFAULT '{}',
    reconciler_sync_point INTEGER DEFAULT -1, reported_put_timestamp TEXT DEFAULT '0',
    reported_delete_timestamp TEXT DEFAULT '0', reported_object_count INTEGER DEFAULT 0,
    reported_bytes_used INTEGER DEFAULT 0);
PRAGMA user_version = 2;
"""

# What a container reports to its account, and what it keeps of the last report.
REPORTED = ("put_timestamp", "delete_timestamp", "object_count", "bytes_used")

_OBJECT_COLUMNS = "name, created_at, size, content_type, etag, deleted, storage_policy_index"


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r["name"].lower() for r in conn.execute(f"PRAGMA table_info({table})")}


def _upgrade_container(conn: sqlite3.Connection) -> None:
    """A container database made before version 1 (one object row per name, counts in
    container_stat) gets the per-policy rows and counts, and the reconciler sync point;
    one before version 2 the reported_* columns."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= 2:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version < 1:
            _upgrade_to_v1(conn)
        stat_columns = _columns(conn, "container_stat")
        if stat_columns:  # none: a new file, for the schema to create
            for column, kind in (
                ("reported_put_timestamp", "TEXT DEFAULT '0'"),
                ("reported_delete_timestamp", "TEXT DEFAULT '0'"),
                ("reported_object_count", "INTEGER DEFAULT 0"),
                ("reported_bytes_used", "INTEGER DEFAULT 0"),
            ):
                if column not in stat_columns:
                    conn.execute(f"ALTER TABLE container_stat ADD COLUMN {column} {kind}")
            conn.execute("PRAGMA user_version = 2")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _upgrade_to_v1(conn: sqlite3.Connection) -> None:
    """Per-policy object rows and counts, and the reconciler sync point."""
    # No object table: a new file, for the schema to create; one with a ROWID column:
    # made or upgraded by another process meanwhile.
    object_columns = _columns(conn, "object")
    if object_columns and "rowid" not in object_columns:
        stat_columns = _columns(conn, "container_stat")
        conn.execute("ALTER TABLE object RENAME TO object_before_v1")
        conn.execute("DROP INDEX IF EXISTS object_deleted_name")
        for statement in CONTAINER_SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            f"INSERT INTO object ({_OBJECT_COLUMNS}) "  # noqa: S608
            f"SELECT {_OBJECT_COLUMNS} FROM object_before_v1 ORDER BY rowid"
        )
        conn.execute("DROP TABLE object_before_v1")
        if "reconciler_sync_point" not in stat_columns:
            conn.execute(
                "ALTER TABLE container_stat ADD COLUMN reconciler_sync_point INTEGER DEFAULT -1"
            )
        conn.execute(
            "INSERT INTO policy_stat SELECT storage_policy_index, COUNT(*), SUM(size) "
            "FROM object WHERE deleted = 0 GROUP BY storage_policy_index"
        )
        conn.execute(
            "INSERT OR IGNORE INTO policy_stat (storage_policy_index) "
            "SELECT storage_policy_index FROM container_stat"
        )


ACCOUNT_SCHEMA = """
CREATE TABLE IF NOT EXISTS container (
    name TEXT PRIMARY KEY, put_timestamp TEXT, delete_timestamp TEXT,
    object_count INTEGER, bytes_used INTEGER, deleted INTEGER DEFAULT 0,
    storage_policy_index INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS container_deleted_name ON container (deleted, name);
CREATE TABLE IF NOT EXISTS account_stat (
    account TEXT, created_at TEXT, put_timestamp TEXT, delete_timestamp TEXT DEFAULT '0',
    status_changed_at TEXT, metadata TEXT DEFAULT '{}');
"""


def _listing(
    conn: sqlite3.Connection,
    table: str,
    columns: str,
    *,
    limit: int,
    marker: str = "",
    end_marker: str = "",
    prefix: str = "",
    delimiter: str = "",
    reverse: bool = False,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Swift's listing: names after marker, before end_marker, starting with prefix; a
    delimiter after the prefix folds names into one {"subdir": ...} entry. filters:
    columns the rows must equal."""
    results: list[dict[str, Any]] = []
    if reverse:
        marker, end_marker = end_marker, marker
    lower, upper = marker, end_marker
    while len(results) < limit:
        clauses, args = ["deleted = 0"], []
        for column, value in (filters or {}).items():
            clauses.append(f"{column} = ?")
            args.append(value)
        if lower:
            clauses.append("name > ?")
            args.append(lower)
        if upper:
            clauses.append("name < ?")
            args.append(upper)
        if prefix:
            clauses.append("name >= ?")
            args.append(prefix)
        order = "DESC" if reverse else "ASC"
        rows = conn.execute(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(clauses)} "  # noqa: S608
            f"ORDER BY name {order} LIMIT ?",
            (*args, limit - len(results)),
        ).fetchall()
        if not rows:
            break
        restart = False
        for row in rows:
            name = row["name"]
            if prefix and not name.startswith(prefix):
                if not reverse or name > prefix:
                    return results
                continue
            if delimiter:
                end = name.find(delimiter, len(prefix))
                if end >= 0:
                    subdir = name[: end + len(delimiter)]
                    if not results or results[-1].get("subdir") != subdir:
                        results.append({"subdir": subdir})
                    # Skip past every name under this subdir.
                    if reverse:
                        upper = subdir
                    else:
                        lower = subdir[:-1] + chr(ord(subdir[-1]) + 1)
                    restart = True
                    break
            results.append(dict(row))
            if len(results) >= limit:
                return results
        if not restart:
            if reverse:
                upper = rows[-1]["name"]
            else:
                lower = rows[-1]["name"]
    return results


class ContainerBroker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _db(self, create: bool = False):
        return _transaction(self.path, CONTAINER_SCHEMA if create else None, _upgrade_container)

    def exists(self) -> bool:
        return self.path.exists()

    @staticmethod
    def _stat(conn: sqlite3.Connection) -> dict[str, Any]:
        """container_stat, with the object count and bytes of the container's policy."""
        stat = dict(conn.execute("SELECT * FROM container_stat").fetchone())
        used = conn.execute(
            "SELECT object_count, bytes_used FROM policy_stat WHERE storage_policy_index = ?",
            (stat["storage_policy_index"],),
        ).fetchone()
        stat["object_count"], stat["bytes_used"] = tuple(used) if used else (0, 0)
        return stat

    @staticmethod
    def _holds_objects(conn: sqlite3.Connection) -> bool:
        """Objects in any policy: misplaced ones keep a container from being deleted too."""
        return bool(conn.execute("SELECT MAX(object_count) FROM policy_stat").fetchone()[0])

    @staticmethod
    def _set_policy(conn: sqlite3.Connection, policy_index: int, changed_at: str) -> None:
        # Rows that were right under the old policy are misplaced now: look at all again.
        conn.execute(
            "UPDATE container_stat SET storage_policy_index = ?, status_changed_at = ?, "
            "reconciler_sync_point = -1",
            (policy_index, changed_at),
        )
        conn.execute(
            "INSERT OR IGNORE INTO policy_stat (storage_policy_index) VALUES (?)",
            (policy_index,),
        )

    def initialize(
        self,
        account: str,
        container: str,
        put_timestamp: str,
        policy_index: int,
        metadata: dict | None = None,
    ) -> str:
        """Create or revive the container; 'created', 'accepted' or 'policy_conflict'."""
        with self._db(create=True) as conn:
            row = conn.execute("SELECT * FROM container_stat").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO container_stat (account, container, created_at, "
                    "put_timestamp, status_changed_at, storage_policy_index, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        account,
                        container,
                        put_timestamp,
                        put_timestamp,
                        put_timestamp,
                        policy_index,
                        json.dumps(metadata or {}),
                    ),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO policy_stat (storage_policy_index) VALUES (?)",
                    (policy_index,),
                )
                return "created"
            deleted = row["delete_timestamp"] > row["put_timestamp"] and not self._holds_objects(
                conn
            )
            if not deleted and row["storage_policy_index"] != policy_index:
                return "policy_conflict"
            merged = merge_metadata(json.loads(row["metadata"]), metadata or {})
            conn.execute(
                "UPDATE container_stat SET put_timestamp = MAX(put_timestamp, ?), metadata = ?",
                (put_timestamp, json.dumps(merged)),
            )
            if deleted and put_timestamp > row["delete_timestamp"]:
                # Re-created: a new policy may come with it, and the status changed now.
                self._set_policy(conn, policy_index, put_timestamp)
            return "created" if deleted else "accepted"

    def info(self) -> dict[str, Any]:
        with self._db() as conn:
            info = self._stat(conn)
        info["metadata"] = json.loads(info["metadata"])
        info["deleted"] = info["delete_timestamp"] > info["put_timestamp"]
        return info

    def update_metadata(self, updates: dict) -> None:
        with self._db() as conn:
            row = conn.execute("SELECT metadata FROM container_stat").fetchone()
            merged = merge_metadata(json.loads(row["metadata"]), updates)
            conn.execute("UPDATE container_stat SET metadata = ?", (json.dumps(merged),))

    def mark_deleted(self, timestamp: str) -> bool:
        """Delete an empty container (False when it still has objects)."""
        with self._db() as conn:
            if self._holds_objects(conn):
                return False
            conn.execute(
                "UPDATE container_stat SET delete_timestamp = MAX(delete_timestamp, ?), "
                "status_changed_at = ?",
                (timestamp, timestamp),
            )
            return True

    def put_object(self, record: dict[str, Any]) -> None:
        """Merge one object row (newest wins) and the container's counts with it."""
        with self._db() as conn:
            self._merge_object(conn, record)

    def unreported(self) -> dict[str, Any] | None:
        """The container's info when its account has not been told its state and usage
        as they are now (they changed since the last report); None when it has."""
        info = self.info()
        if all(info[k] == info[f"reported_{k}"] for k in REPORTED):
            return None
        return info

    def mark_reported(self, info: dict[str, Any]) -> None:
        """The account took info (the container's as it was then: newer changes are
        still to report)."""
        with self._db() as conn:
            conn.execute(
                "UPDATE container_stat SET reported_put_timestamp = ?, "
                "reported_delete_timestamp = ?, reported_object_count = ?, "
                "reported_bytes_used = ?",
                tuple(info[k] for k in REPORTED),
            )

    @staticmethod
    def _merge_object(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
        policy = record.get("storage_policy_index", 0)
        old = conn.execute(
            "SELECT created_at, size, deleted FROM object "
            "WHERE name = ? AND storage_policy_index = ?",
            (record["name"], policy),
        ).fetchone()
        if old is not None and old["created_at"] >= record["created_at"]:
            return
        count = (0 if record["deleted"] else 1) - (0 if old is None or old["deleted"] else 1)
        size = (0 if record["deleted"] else record["size"]) - (
            0 if old is None or old["deleted"] else old["size"]
        )
        # A replaced row gets a new ROWID (AUTOINCREMENT): the replicator sees it again.
        conn.execute(
            f"INSERT OR REPLACE INTO object ({_OBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record["name"],
                record["created_at"],
                record["size"],
                record["content_type"],
                record["etag"],
                int(record["deleted"]),
                policy,
            ),
        )
        conn.execute(
            "INSERT OR IGNORE INTO policy_stat (storage_policy_index) VALUES (?)", (policy,)
        )
        conn.execute(
            "UPDATE policy_stat SET object_count = object_count + ?, "
            "bytes_used = bytes_used + ? WHERE storage_policy_index = ?",
            (count, size, policy),
        )

    def list_objects(self, **query: Any) -> list[dict[str, Any]]:
        """The listing: the rows of the container's policy (misplaced ones wait for the
        reconciler, as in Swift)."""
        with self._db() as conn:
            policy = conn.execute("SELECT storage_policy_index FROM container_stat").fetchone()
            return _listing(
                conn,
                "object",
                "name, created_at, size, content_type, etag",
                filters={"storage_policy_index": policy[0]},
                **query,
            )

    # -- replication ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """container_stat as replication sends it, with the policy's usage."""
        with self._db() as conn:
            return self._stat(conn)

    def dump(self) -> dict[str, Any]:
        with self._db() as conn:
            stat = self._stat(conn)
            rows = [dict(r) for r in conn.execute(f"SELECT {_OBJECT_COLUMNS} FROM object")]  # noqa: S608
        return {"stat": stat, "objects": rows}

    def merge(self, dump: dict[str, Any]) -> dict[str, Any]:
        """Take a peer's rows and status (its policy, when Swift's rules prefer it); this
        replica's status after, with `policy_changed`."""
        stat = dump["stat"]
        with self._db(create=True) as conn:
            if conn.execute("SELECT 1 FROM container_stat").fetchone() is None:
                conn.execute(
                    "INSERT INTO container_stat (account, container, created_at, "
                    "put_timestamp, delete_timestamp, status_changed_at, "
                    "storage_policy_index, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    tuple(
                        stat[k]
                        for k in (
                            "account",
                            "container",
                            "created_at",
                            "put_timestamp",
                            "delete_timestamp",
                            "status_changed_at",
                            "storage_policy_index",
                            "metadata",
                        )
                    ),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO policy_stat (storage_policy_index) VALUES (?)",
                    (stat["storage_policy_index"],),
                )
                changed = False
            else:
                changed = self._sync_status(conn, stat)
                row = conn.execute("SELECT metadata FROM container_stat").fetchone()
                merged = merge_metadata(json.loads(row["metadata"]), json.loads(stat["metadata"]))
                conn.execute("UPDATE container_stat SET metadata = ?", (json.dumps(merged),))
            for row in dump["objects"]:
                self._merge_object(conn, row)
            status = self._stat(conn)
        return {**status, "policy_changed": changed}

    def sync_status(self, other: dict[str, Any]) -> bool:
        """Take another replica's policy when Swift's rules prefer it, and its put and
        delete times; True when this replica's policy changed."""
        with self._db() as conn:
            return self._sync_status(conn, other)

    def _sync_status(self, conn: sqlite3.Connection, other: dict[str, Any]) -> bool:
        changed = False
        if container_policy.other_policy_wins(self._stat(conn), other):
            # The winner's status time comes along, so that every replica that takes it
            # compares alike with the rest (Swift stamps the change "now", which can make
            # a third replica pull this one back).
            self._set_policy(conn, other["storage_policy_index"], other["status_changed_at"])
            changed = True
        was_deleted = container_policy.is_deleted(self._stat(conn))
        conn.execute(
            "UPDATE container_stat SET created_at = MIN(created_at, ?), "
            "put_timestamp = MAX(put_timestamp, ?), delete_timestamp = MAX(delete_timestamp, ?)",
            (other["created_at"], other["put_timestamp"], other["delete_timestamp"]),
        )
        if container_policy.is_deleted(self._stat(conn)) != was_deleted:
            conn.execute(
                "UPDATE container_stat SET status_changed_at = MAX(status_changed_at, ?)",
                (other["status_changed_at"],),
            )
        return changed

    def rows_since(self, row_id: int, limit: int) -> list[dict[str, Any]]:
        """Rows of the container's policy after ROWID row_id, deletions included, oldest
        first (what the container sync daemon sends on)."""
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT ROWID AS row_id, {_OBJECT_COLUMNS} FROM object "  # noqa: S608
                "WHERE ROWID > ? AND storage_policy_index = "
                "(SELECT storage_policy_index FROM container_stat) ORDER BY ROWID LIMIT ?",
                (row_id, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    # -- the reconciler's queue feed --------------------------------------------------

    def misplaced_since(self, row_id: int, limit: int) -> list[dict[str, Any]]:
        """Rows after ROWID row_id whose policy is not the container's, oldest first."""
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT ROWID AS row_id, {_OBJECT_COLUMNS} FROM object "  # noqa: S608
                "WHERE ROWID > ? AND storage_policy_index != "
                "(SELECT storage_policy_index FROM container_stat) ORDER BY ROWID LIMIT ?",
                (row_id, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    def reconciler_sync_point(self) -> tuple[int, int]:
        """The last ROWID looked at for misplaced rows, and the last ROWID there is."""
        with self._db() as conn:
            point = conn.execute("SELECT reconciler_sync_point FROM container_stat").fetchone()
            last = conn.execute("SELECT MAX(ROWID) FROM object").fetchone()[0]
        return point[0], last if last is not None else -1

    def move_reconciler_sync_point(self, old: int, new: int) -> None:
        """Only from where it was: a policy change meanwhile reset it (rows to see again)."""
        with self._db() as conn:
            conn.execute(
                "UPDATE container_stat SET reconciler_sync_point = ? "
                "WHERE reconciler_sync_point = ?",
                (new, old),
            )


class AccountBroker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def initialize(self, account: str, put_timestamp: str) -> None:
        with _transaction(self.path, ACCOUNT_SCHEMA) as conn:
            if conn.execute("SELECT 1 FROM account_stat").fetchone() is None:
                conn.execute(
                    "INSERT INTO account_stat (account, created_at, put_timestamp, "
                    "status_changed_at) VALUES (?, ?, ?, ?)",
                    (account, put_timestamp, put_timestamp, put_timestamp),
                )

    def put_container(self, record: dict[str, Any]) -> None:
        """A container's state and usage as its container server reports it."""
        self.put_containers([record])

    def put_containers(self, records: list[dict[str, Any]]) -> None:
        """Several containers' reports in one transaction."""
        with _transaction(self.path) as conn:
            for record in records:
                self._merge_container(conn, record)

    @staticmethod
    def _merge_container(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
        old = conn.execute(
            "SELECT put_timestamp, delete_timestamp FROM container WHERE name = ?",
            (record["name"],),
        ).fetchone()
        put_ts, delete_ts = record["put_timestamp"], record["delete_timestamp"]
        if old is not None:
            put_ts, delete_ts = (
                max(put_ts, old["put_timestamp"]),
                max(delete_ts, old["delete_timestamp"]),
            )
        deleted = delete_ts > put_ts
        conn.execute(
            "INSERT OR REPLACE INTO container (name, put_timestamp, delete_timestamp, "
            "object_count, bytes_used, deleted, storage_policy_index) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record["name"],
                put_ts,
                delete_ts,
                0 if deleted else record["object_count"],
                0 if deleted else record["bytes_used"],
                int(deleted),
                record["storage_policy_index"],
            ),
        )

    def info(self) -> dict[str, Any]:
        with _transaction(self.path) as conn:
            info = dict(conn.execute("SELECT * FROM account_stat").fetchone())
            totals = conn.execute(
                "SELECT COUNT(*) AS containers, COALESCE(SUM(object_count), 0) AS objects, "
                "COALESCE(SUM(bytes_used), 0) AS bytes FROM container WHERE deleted = 0"
            ).fetchone()
            policies = conn.execute(
                "SELECT storage_policy_index AS policy, COUNT(*) AS containers, "
                "SUM(object_count) AS objects, SUM(bytes_used) AS bytes FROM container "
                "WHERE deleted = 0 GROUP BY storage_policy_index"
            ).fetchall()
        info["metadata"] = json.loads(info["metadata"])
        info.update(dict(totals))
        info["policies"] = [dict(p) for p in policies]
        return info

    def update_metadata(self, updates: dict) -> None:
        with _transaction(self.path) as conn:
            row = conn.execute("SELECT metadata FROM account_stat").fetchone()
            merged = merge_metadata(json.loads(row["metadata"]), updates)
            conn.execute("UPDATE account_stat SET metadata = ?", (json.dumps(merged),))

    def list_containers(self, **query: Any) -> list[dict[str, Any]]:
        with _transaction(self.path) as conn:
            return _listing(
                conn, "container", "name, object_count, bytes_used, put_timestamp", **query
            )

    def dump(self) -> dict[str, Any]:
        with _transaction(self.path) as conn:
            stat = dict(conn.execute("SELECT * FROM account_stat").fetchone())
            rows = [dict(r) for r in conn.execute("SELECT * FROM container")]
        return {"stat": stat, "containers": rows}

    def merge(self, dump: dict[str, Any]) -> None:
        stat = dump["stat"]
        self.initialize(stat["account"], stat["put_timestamp"])
        self.update_metadata(json.loads(stat["metadata"]))
        with _transaction(self.path) as conn:
            for row in dump["containers"]:
                self._merge_container(conn, row)
