"""The container sync daemon (Swift's container-sync): every container with
X-Container-Sync-To and X-Container-Sync-Key sends its new and changed objects (PUT
with their metadata and X-Timestamp) and its deletions to the container named there,
signed with X-Container-Sync-Auth for a realm's cluster (or X-Container-Sync-Key for an
old-style full URL). A Static Large Object goes as its manifest (its segments' container
is synced on its own), a symlink as a link.

Every primary replica of a container syncs it, on the host that holds it, in Swift's two
passes over its own database: past sync point 1, it sends only its share of the rows
(those whose name hashes to its place among the container's primaries); then, on the
next pass, from sync point 2 up to sync point 1, every row, whichever replica's share,
sent unless the destination already has it (a HEAD says so) -- so that while a replica
is down the others send its share too. A row that fails there is tried again the next
pass (sync point 2 stays before it, the rows after it are sent meanwhile). The points are
kept per replica and destination in <state>/object-store/container-sync.json (Swift keeps
them in the database as x_container_sync_point1/2).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from cumulo.common import tls
from cumulo.object_store import container_sync
from cumulo.object_store.api import symlinks
from cumulo.object_store.api.large_objects import stored_entries
from cumulo.object_store.api.object_versioning import FLAG as VERSIONS_FLAG
from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.walk import hash_dirs, local_devices, partitions
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.storage import reading
from cumulo.object_store.storage.databases import ContainerBroker, DatabaseMissing, live_metadata
from cumulo.object_store.storage.diskfile import POST_HEADERS, StoredObject

LOG = logging.getLogger(__name__)

BATCH = 100
TIMEOUT = 30.0
# Stored metadata a synced object keeps (Swift PUTs what its GET of the object returns).
KEPT = POST_HEADERS | {"etag"}
# The destination's own object, not what it stands for: a manifest, a link (a HEAD that
# assembled or followed them would show another object's time, or fail).
AS_STORED = {"multipart-manifest": "get", "symlink": "get"}


@dataclass
class SyncStats:
    containers: int = 0
    puts: int = 0
    deletes: int = 0
    skipped: int = 0  # already as new at the destination
    failures: int = 0


@dataclass
class Job:
    key: str  # where the sync points are kept: the replica's device and the container
    broker: ContainerBroker
    account: str
    container: str
    sync_to: str
    user_key: str
    policy_index: int
    ordinal: int  # this replica's place among the container's primaries
    replicas: int  # how many primaries the container has


@dataclass
class SyncPoints:
    """Rows up to point1: this replica's share sent (or tried); up to point2: every row
    made sure of. point2 <= point1."""

    point1: int = -1
    point2: int = -1


def share_of(name_hash: str, replicas: int) -> int:
    """Which replica sends a row first: its name's hash (the ring's, as Swift's first
    four bytes of hash_path) modulo the number of primaries."""
    return int(name_hash[:8], 16) % replicas


class Unreachable(Exception):
    """The destination could not be reached: the container's pass ends."""


class ContainerSyncer:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.points_file = Path(store.state_dir) / "object-store" / "container-sync.json"

    def _jobs(self) -> tuple[list[Job], set[str]]:
        """The container replicas this host syncs, and the devices it looked at (worker
        thread: it reads the local dbs of every partition with a primary here)."""
        jobs, scanned = [], set()
        ring = self.store.container_ring
        for device in local_devices(self.store.node.devices):
            scanned.add(device.name)
            for part, part_dir in partitions(device, "containers"):
                nodes = ring.get_part_nodes(part)
                ordinal = next(
                    (
                        i
                        for i, node in enumerate(nodes)
                        if node.device == device.name and self.store.router.is_local(node)
                    ),
                    None,
                )
                if ordinal is None:
                    continue  # a handoff's copy (or not this ring's): its primaries sync it
                for dbdir in list(hash_dirs(part_dir)):
                    broker = ContainerBroker(dbdir / f"{dbdir.name}.db")
                    job = self._job(device.name, broker, ordinal, len(nodes))
                    if job is not None:
                        jobs.append(job)
        return jobs, scanned

    @staticmethod
    def _job(device: str, broker: ContainerBroker, ordinal: int, replicas: int) -> Job | None:
        try:
            info = broker.info() if broker.exists() else None
        except (OSError, DatabaseMissing):
            return None
        if info is None or info["deleted"]:
            return None
        meta = live_metadata(info["metadata"])
        sync_to = meta.get(container_sync.SYNC_TO)
        user_key = meta.get(container_sync.SYNC_KEY)
        # A versioned container is not synced (as Swift, which skips it).
        if not sync_to or not user_key or meta.get(VERSIONS_FLAG) is not None:
            return None
        account, container = info["account"], info["container"]
        return Job(
            f"{device}/{account}/{container}", broker, account, container, sync_to, user_key,
            info["storage_policy_index"], ordinal, replicas,
        )  # fmt: skip

    def _load_points(self) -> dict[str, Any]:
        try:
            return json.loads(self.points_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_points(self, points: dict[str, Any]) -> None:
        self.points_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.points_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(points))
        os.replace(tmp, self.points_file)

    @staticmethod
    def _points_of(saved: dict[str, Any], sync_to: str) -> SyncPoints:
        # Another destination: everything is sent to it again (as Swift resets the sync
        # points when X-Container-Sync-To changes).
        if saved.get("sync_to") != sync_to:
            return SyncPoints()
        if "point1" not in saved:  # kept by the daemon that synced from one replica only
            return SyncPoints(saved.get("row", -1), saved.get("row", -1))
        return SyncPoints(saved["point1"], saved["point2"])

    async def run_once(self) -> SyncStats:
        stats = SyncStats()
        jobs, scanned = await asyncio.to_thread(self._jobs)
        points = await asyncio.to_thread(self._load_points)
        live = {job.key for job in jobs}
        # The points of a device not here now (unmounted, failed) wait for its return.
        points = {k: v for k, v in points.items() if k in live or k.split("/")[0] not in scanned}
        verify = tls.verify_option(self.store.cloud_config)
        async with httpx.AsyncClient(timeout=TIMEOUT, verify=verify) as client:
            for job in jobs:
                try:
                    target = container_sync.validate_sync_to(self.store.cloud_config, job.sync_to)
                except SwiftError as exc:
                    LOG.info("container sync %s/%s: %s", job.account, job.container, exc.text)
                    stats.failures += 1
                    continue
                if target is None:
                    continue
                stats.containers += 1
                start = self._points_of(points.get(job.key, {}), job.sync_to)
                done = await self._sync_container(client, job, target, start, stats)
                points[job.key] = {
                    "sync_to": job.sync_to, "point1": done.point1, "point2": done.point2,
                }  # fmt: skip
                await asyncio.to_thread(self._save_points, points)
        return stats

    def _is_share(self, job: Job, name: str) -> bool:
        name_hash = self.store.container_ring.hash_of(job.account, job.container, name)
        return share_of(name_hash, job.replicas) == job.ordinal

    async def _sync_container(
        self,
        client: httpx.AsyncClient,
        job: Job,
        target: container_sync.SyncTarget,
        start: SyncPoints,
        stats: SyncStats,
    ) -> SyncPoints:
        """One pass over the replica's rows (Swift's container_sync): first every row
        from point2 up to point1, then this replica's share of the rows past point1.
        Where the next pass starts."""
        point1, point2 = start.point1, start.point2
        failed_at: int | None = None
        try:
            while point2 < point1:
                rows = await asyncio.to_thread(job.broker.rows_since, point2, BATCH)
                rows = [row for row in rows if row["row_id"] <= point1]
                if not rows:
                    break
                for row in rows:
                    if not await self._try_row(client, job, target, row, stats):
                        failed_at = point2 if failed_at is None else failed_at
                    point2 = row["row_id"]
        except Unreachable:
            return SyncPoints(point1, point2 if failed_at is None else failed_at)
        point2 = point2 if failed_at is None else failed_at
        try:
            while True:
                rows = await asyncio.to_thread(job.broker.rows_since, point1, BATCH)
                if not rows:
                    break
                for row in rows:
                    # Another replica's row is sent by it, or by the pass above next time;
                    # one of ours that fails is tried again there too.
                    if self._is_share(job, row["name"]):
                        await self._try_row(client, job, target, row, stats)
                    point1 = row["row_id"]
        except Unreachable:
            pass  # point1 stays before the row: the next pass sends it
        return SyncPoints(point1, point2)

    async def _try_row(
        self,
        client: httpx.AsyncClient,
        job: Job,
        target: container_sync.SyncTarget,
        row: dict[str, Any],
        stats: SyncStats,
    ) -> bool:
        """Send a row; False when it failed (Unreachable when the destination is)."""
        try:
            await self._sync_row(client, job, target, row, stats)
        except (httpx.HTTPError, OSError, SwiftError) as exc:
            LOG.info(
                "container sync %s/%s -> %s: %r failed: %s",
                job.account, job.container, target.url, row["name"], exc,
            )  # fmt: skip
            stats.failures += 1
            if isinstance(exc, httpx.TransportError | OSError):
                raise Unreachable from exc
            return False
        return True

    def _headers(
        self, job: Job, target: container_sync.SyncTarget, method: str, name: str, timestamp: str
    ) -> dict[str, str]:
        headers = {"X-Timestamp": timestamp}
        if target.realm and target.realm_key:
            nonce = uuid.uuid4().hex
            path = urlparse(target.url).path + "/" + quote(name)
            sig = container_sync.signature(
                method, path, timestamp, nonce, target.realm_key, job.user_key
            )
            headers["X-Container-Sync-Auth"] = f"{target.realm} {nonce} {sig}"
        else:
            headers["X-Container-Sync-Key"] = job.user_key
        return headers

    async def _sync_row(
        self,
        client: httpx.AsyncClient,
        job: Job,
        target: container_sync.SyncTarget,
        row: dict[str, Any],
        stats: SyncStats,
    ) -> None:
        name = row["name"]
        url = f"{target.url}/{quote(name)}"
        if row["deleted"]:
            headers = self._headers(job, target, "DELETE", name, row["created_at"])
            resp = await client.delete(url, headers=headers)
            if resp.status_code not in (404, 409):
                _check(resp)
            stats.deletes += 1
            return
        # Already there, as new or newer: nothing to send (Swift HEADs first too).
        headers = self._headers(job, target, "HEAD", name, row["created_at"])
        resp = await client.head(url, params=AS_STORED, headers=headers)
        # An old-style destination lets the sync key PUT and DELETE only (not HEAD).
        if resp.status_code != 404 and not (resp.status_code == 401 and target.realm is None):
            _check(resp)
            if resp.headers.get("x-timestamp", "0") >= row["created_at"]:
                stats.skipped += 1
                return
        policy = self.store.policies.by_index.get(job.policy_index)
        if policy is None:
            raise SwiftError(503, f"no storage policy {job.policy_index}")
        stored = await self.store.proxy.object_open(policy, job.account, job.container, name)
        if stored is None or stored.metadata.get("X-Timestamp", "0") < row["created_at"]:
            # Not readable as new as the listing says yet: the next pass tries again.
            raise SwiftError(503, "the object is not readable yet")
        timestamp = stored.metadata["X-Timestamp"]
        headers = self._headers(job, target, "PUT", name, timestamp)
        for key, value in stored.metadata.items():
            lower = key.lower()
            if lower.startswith("x-object-meta-") or lower in KEPT:
                headers[key] = str(value)
        if stored.metadata.get("X-Static-Large-Object") or symlinks.is_link(stored.metadata):
            body = await _as_stored(stored, headers)
            headers["Content-Length"] = str(len(body))
            resp = await client.put(url, headers=headers, content=body)
        else:
            headers["Content-Length"] = str(reading.size_of(stored))
            async with reading.held(stored) as held:
                resp = await client.put(url, headers=headers, content=reading.chunks_of(held))
        _check(resp)
        stats.puts += 1


async def _as_stored(stored: StoredObject, headers: dict[str, str]) -> bytes:
    """The body of a manifest or link as Swift's sync sends it, its headers set: a
    manifest's stored entries (what ?multipart-manifest=get shows) with
    X-Static-Large-Object, which the destination keeps as they are; a link empty, with
    its X-Symlink-Target* headers (what ?symlink=get shows)."""
    if symlinks.is_link(stored.metadata):
        headers.update(symlinks.link_headers(stored.metadata))
        return b""
    entries = json.loads(await reading.read_all(stored))
    body = json.dumps(stored_entries(entries)).encode()
    headers["X-Static-Large-Object"] = "True"
    headers["ETag"] = hashlib.md5(body, usedforsecurity=False).hexdigest()
    return body


def _check(resp: httpx.Response) -> None:
    if resp.status_code >= 300:
        raise SwiftError(resp.status_code, f"{resp.request.method} answered {resp.status_code}")
