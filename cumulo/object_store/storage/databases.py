"""Account and container databases: one SQLite file per account and per container
replica (as Swift), holding the listing and the usage, so no central database is on
the data path.

Rows carry timestamps and merge newest-wins, so replicas that missed an update
converge when the replicator merges them. Metadata is {name: [value, timestamp]}; an
empty value is a removal that still wins over older values.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
def _transaction(path: Path, create_sql: str | None = None) -> Iterator[sqlite3.Connection]:
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
        if create_sql is not None:
            conn.executescript(create_sql)
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


CONTAINER_SCHEMA = """
CREATE TABLE IF NOT EXISTS object (
    name TEXT PRIMARY KEY, created_at TEXT, size INTEGER, content_type TEXT, etag TEXT,
    deleted INTEGER DEFAULT 0, storage_policy_index INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS object_deleted_name ON object (deleted, name);
CREATE TABLE IF NOT EXISTS container_stat (
    account TEXT, container TEXT, created_at TEXT, put_timestamp TEXT,
    delete_timestamp TEXT DEFAULT '0', status_changed_at TEXT,
    object_count INTEGER DEFAULT 0, bytes_used INTEGER DEFAULT 0,
    storage_policy_index INTEGER DEFAULT 0, metadata TEXT DEFAULT '{}');
"""

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
) -> list[dict[str, Any]]:
    """Swift's listing: names after marker, before end_marker, starting with prefix; a
    delimiter after the prefix folds names into one {"subdir": ...} entry."""
    results: list[dict[str, Any]] = []
    if reverse:
        marker, end_marker = end_marker, marker
    lower, upper = marker, end_marker
    while len(results) < limit:
        clauses, args = ["deleted = 0"], []
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

    def exists(self) -> bool:
        return self.path.exists()

    def initialize(
        self,
        account: str,
        container: str,
        put_timestamp: str,
        policy_index: int,
        metadata: dict | None = None,
    ) -> str:
        """Create or revive the container; 'created', 'accepted' or 'policy_conflict'."""
        with _transaction(self.path, CONTAINER_SCHEMA) as conn:
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
                return "created"
            deleted = row["delete_timestamp"] > row["put_timestamp"] and not row["object_count"]
            if not deleted and row["storage_policy_index"] != policy_index:
                return "policy_conflict"
            merged = merge_metadata(json.loads(row["metadata"]), metadata or {})
            conn.execute(
                "UPDATE container_stat SET put_timestamp = MAX(put_timestamp, ?), "
                "storage_policy_index = ?, metadata = ?, status_changed_at = ?",
                (put_timestamp, policy_index, json.dumps(merged), put_timestamp),
            )
            return "created" if deleted else "accepted"

    def info(self) -> dict[str, Any]:
        with _transaction(self.path) as conn:
            row = conn.execute("SELECT * FROM container_stat").fetchone()
        info = dict(row)
        info["metadata"] = json.loads(info["metadata"])
        info["deleted"] = info["delete_timestamp"] > info["put_timestamp"]
        return info

    def update_metadata(self, updates: dict) -> None:
        with _transaction(self.path) as conn:
            row = conn.execute("SELECT metadata FROM container_stat").fetchone()
            merged = merge_metadata(json.loads(row["metadata"]), updates)
            conn.execute("UPDATE container_stat SET metadata = ?", (json.dumps(merged),))

    def mark_deleted(self, timestamp: str) -> bool:
        """Delete an empty container (False when it still has objects)."""
        with _transaction(self.path) as conn:
            row = conn.execute("SELECT object_count FROM container_stat").fetchone()
            if row["object_count"]:
                return False
            conn.execute(
                "UPDATE container_stat SET delete_timestamp = MAX(delete_timestamp, ?), "
                "status_changed_at = ?",
                (timestamp, timestamp),
            )
            return True

    def put_object(self, record: dict[str, Any]) -> dict[str, Any]:
        """Merge one object row (newest wins); returns the container's stats after."""
        with _transaction(self.path) as conn:
            self._merge_object(conn, record)
            row = conn.execute(
                "SELECT account, container, put_timestamp, delete_timestamp, object_count, "
                "bytes_used, storage_policy_index FROM container_stat"
            ).fetchone()
            return dict(row)

    @staticmethod
    def _merge_object(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
        old = conn.execute(
            "SELECT created_at, size, deleted FROM object WHERE name = ?", (record["name"],)
        ).fetchone()
        if old is not None and old["created_at"] >= record["created_at"]:
            return
        count = (0 if record["deleted"] else 1) - (0 if old is None or old["deleted"] else 1)
        size = (0 if record["deleted"] else record["size"]) - (
            0 if old is None or old["deleted"] else old["size"]
        )
        conn.execute(
            "INSERT OR REPLACE INTO object (name, created_at, size, content_type, etag, "
            "deleted, storage_policy_index) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record["name"],
                record["created_at"],
                record["size"],
                record["content_type"],
                record["etag"],
                int(record["deleted"]),
                record.get("storage_policy_index", 0),
            ),
        )
        conn.execute(
            "UPDATE container_stat SET object_count = object_count + ?, "
            "bytes_used = bytes_used + ?",
            (count, size),
        )

    def list_objects(self, **query: Any) -> list[dict[str, Any]]:
        with _transaction(self.path) as conn:
            return _listing(conn, "object", "name, created_at, size, content_type, etag", **query)

    # -- replication ------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        with _transaction(self.path) as conn:
            stat = dict(conn.execute("SELECT * FROM container_stat").fetchone())
            rows = [dict(r) for r in conn.execute("SELECT * FROM object")]
        return {"stat": stat, "objects": rows}

    def merge(self, dump: dict[str, Any]) -> None:
        stat = dump["stat"]
        self.initialize(
            stat["account"],
            stat["container"],
            stat["put_timestamp"],
            stat["storage_policy_index"],
            json.loads(stat["metadata"]),
        )
        with _transaction(self.path) as conn:
            conn.execute(
                "UPDATE container_stat SET delete_timestamp = MAX(delete_timestamp, ?)",
                (stat["delete_timestamp"],),
            )
            for row in dump["objects"]:
                self._merge_object(conn, row)


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
        with _transaction(self.path) as conn:
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
