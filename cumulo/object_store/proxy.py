"""The proxy: every account, container and object request goes to the ring's nodes.

Writes go to every primary (a handoff stands in for one that is down) and succeed on
a quorum (an object's body streamed to them all at once: replicated_put.py); reads
take the first good replica. Node errors are counted and a node
with too many is skipped for a while (Swift's error limiting).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicies, StoragePolicy
from cumulo.object_store.replicated_put import Replica, ReplicatedPut
from cumulo.object_store.ring import Ring
from cumulo.object_store.ring.ring import Node
from cumulo.object_store.storage import timestamps
from cumulo.object_store.storage.databases import DatabaseMissing
from cumulo.object_store.storage.diskfile import DeviceUnavailable, ObjectMissing, StoredObject
from cumulo.object_store.storage.node import ContainerUpdate, Location, StorageNode
from cumulo.object_store.storage.remote import NodeRouter

T = TypeVar("T")

NODE_ERRORS = (OSError, DatabaseMissing)
IO_THREADS = 64
CONTAINER_INFO_TTL = 5.0
# A body of at most this many bytes, its length given, is received whole before any
# replica is begun: all replicas are then written (each fsynced, renamed, its container
# told) in one worker-thread call instead of one call to open them, one per chunk and
# one per replica to commit.
SMALL_BODY = 64 << 10


def quorum(replicas: int) -> int:
    return replicas // 2 + 1


class ErrorLimiter:
    """A node with `limit` errors within `interval` seconds is skipped for `interval`."""

    def __init__(self, limit: int = 10, interval: float = 60.0) -> None:
        self.limit = limit
        self.interval = interval
        self._errors: dict[int, list[float]] = {}

    def record(self, node: Node) -> None:
        now = time.monotonic()
        recent = [t for t in self._errors.get(node.id, []) if now - t < self.interval]
        self._errors[node.id] = [*recent, now]

    def any_recorded(self) -> bool:
        return bool(self._errors)

    def limited(self, node: Node) -> bool:
        now = time.monotonic()
        recent = [t for t in self._errors.get(node.id, []) if now - t < self.interval]
        return len(recent) >= self.limit


@dataclass
class ContainerInfo:
    status: int  # 200 or 404
    policy: StoragePolicy | None = None
    object_count: int = 0
    bytes_used: int = 0
    metadata: dict[str, str] | None = None
    put_timestamp: str = "0"
    created_at: str = "0"


class Proxy:
    def __init__(
        self,
        node: StorageNode,
        account_ring: Ring,
        container_ring: Ring,
        policies: StoragePolicies,
        router: NodeRouter | None = None,
    ) -> None:
        self.node = node
        # Devices on other hosts are reached over HTTP (all local without a router).
        self.router = router or NodeRouter(node, set(), all_local=True)
        self.account_ring = account_ring
        self.container_ring = container_ring
        self.policies = policies
        self.errors = ErrorLimiter()
        # Storage work blocks on fsync: many writes wait on the disk at once, so they get
        # more threads than the default pool's few (which would queue them behind each other).
        self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="object-io")
        self._container_cache: dict[tuple[str, str], tuple[float, ContainerInfo]] = {}
        self._account_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def _node(self, at: Location) -> Any:
        return self.router.node_for(at)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # -- nodes ------------------------------------------------------------------------

    def _candidates(self, ring: Ring, part: int) -> Iterator[Node]:
        """Primaries, then handoffs; error-limited nodes last."""
        if not self.errors.any_recorded():  # the handoffs worked out only when needed
            yield from ring.get_part_nodes(part)
            yield from ring.get_more_nodes(part)
            return
        nodes = ring.get_part_nodes(part) + ring.get_more_nodes(part)
        good = [n for n in nodes if not self.errors.limited(n)]
        yield from good + [n for n in nodes if n not in good]

    async def _on_nodes(
        self, ring: Ring, part: int, call: Callable[[Location, int], T], count: int
    ) -> list[T]:
        """Run `call(location, replica)` for `count` replicas at once, a handoff standing
        in for each node that fails; the results of those that succeeded."""
        candidates = self._candidates(ring, part)
        results: list[T] = []

        async def one(replica: int) -> None:
            for node in candidates:
                try:
                    at = self.router.location(node, part)
                    results.append(await self._io(call, at, replica))
                    return
                except NODE_ERRORS:
                    self.errors.record(node)

        await asyncio.gather(*(one(r) for r in range(count)))
        return results

    async def _first(
        self, ring: Ring, part: int, call: Callable[[Location], T], *, local_inline: bool = False
    ) -> T | None:
        """The first node's answer that is not missing (primaries, then handoffs).
        local_inline: a node of this host answers in the event loop, not a thread."""
        for node in self._candidates(ring, part):
            try:
                if local_inline and self.router.is_local(node):
                    return call(self.router.location(node, part))
                return await self._io(call, self.router.location(node, part))
            except (ObjectMissing, DatabaseMissing):
                continue
            except OSError:
                self.errors.record(node)
        return None

    def _account_locations(self, account: str) -> list[Location]:
        part, nodes = self.account_ring.get_nodes(account)
        return [self.router.location(n, part) for n in nodes]

    # -- accounts ---------------------------------------------------------------------

    async def account_info(self, account: str, *, cached: bool = False) -> dict[str, Any] | None:
        """The account's stats and metadata. `cached`: may be a few seconds old (for the
        checks every request makes: quotas, ACLs, temp URL keys; Swift caches them too);
        this proxy's own account POSTs are seen at once."""
        if cached:
            hit = self._account_cache.get(account)
            if hit and hit[0] > time.monotonic():
                return hit[1]
        part = self.account_ring.get_part(account)

        def read(at: Location) -> dict[str, Any]:
            broker = self._node(at).account_broker(at, account)
            if not broker.exists():
                raise DatabaseMissing(account)
            return broker.info()

        info = await self._first(self.account_ring, part, read)
        if len(self._account_cache) > 10000:
            self._account_cache.clear()
        self._account_cache[account] = (time.monotonic() + CONTAINER_INFO_TTL, info)
        return info

    async def account_listing(self, account: str, query: dict) -> tuple[dict | None, list]:
        part = self.account_ring.get_part(account)

        def read(at: Location) -> tuple[dict, list]:
            broker = self._node(at).account_broker(at, account)
            if not broker.exists():
                raise DatabaseMissing(account)
            return broker.info(), broker.list_containers(**query)

        found = await self._first(self.account_ring, part, read)
        return found if found else (None, [])

    async def account_post(self, account: str, updates: dict) -> None:
        part = self.account_ring.get_part(account)
        self._account_cache.pop(account, None)
        timestamp = timestamps.now()
        stamped = {k: [v, timestamp] for k, v in updates.items()}
        replicas = self.account_ring.replica_count
        done = await self._on_nodes(
            self.account_ring,
            part,
            lambda at, _r: self._node(at).account_update_metadata(at, account, timestamp, stamped),
            replicas,
        )
        if len(done) < quorum(replicas):
            raise SwiftError(503)

    # -- containers -------------------------------------------------------------------

    def forget_container(self, account: str, container: str) -> None:
        self._container_cache.pop((account, container), None)

    async def container_info(
        self, account: str, container: str, *, fresh: bool = False
    ) -> ContainerInfo:
        """The container's policy, ACLs and usage (cached a few seconds unless fresh)."""
        key = (account, container)
        cached = self._container_cache.get(key)
        if cached and cached[0] > time.monotonic() and not fresh:
            return cached[1]
        part = self.container_ring.get_part(account, container)

        def read(at: Location) -> dict[str, Any]:
            broker = self._node(at).container_broker(at, account, container)
            if not broker.exists():
                raise DatabaseMissing(container)
            return broker.info()

        raw = await self._first(self.container_ring, part, read)
        if raw is None or raw["deleted"]:
            info = ContainerInfo(404)
        else:
            info = ContainerInfo(
                200,
                self.policies.by_index.get(raw["storage_policy_index"], self.policies.default),
                raw["object_count"],
                raw["bytes_used"],
                {k: v for k, (v, _ts) in raw["metadata"].items() if v != ""},
                raw["put_timestamp"],
                raw["created_at"],
            )
        if len(self._container_cache) > 10000:
            self._container_cache.clear()
        self._container_cache[key] = (time.monotonic() + CONTAINER_INFO_TTL, info)
        return info

    async def container_listing(
        self, account: str, container: str, query: dict
    ) -> tuple[dict, list] | None:
        part = self.container_ring.get_part(account, container)

        def read(at: Location) -> tuple[dict, list]:
            broker = self._node(at).container_broker(at, account, container)
            if not broker.exists():
                raise DatabaseMissing(container)
            info = broker.info()
            if info["deleted"]:
                raise DatabaseMissing(container)
            return info, broker.list_objects(**query)

        return await self._first(self.container_ring, part, read)

    async def container_put(
        self, account: str, container: str, policy: StoragePolicy, metadata: dict
    ) -> int:
        """201 created, 202 when it existed; 409 for another policy."""
        timestamp = timestamps.now()
        stamped = {k: [v, timestamp] for k, v in metadata.items()}
        part = self.container_ring.get_part(account, container)
        accounts = self._account_locations(account)
        replicas = self.container_ring.replica_count

        def put(at: Location, replica: int) -> str:
            account_at = accounts[replica % len(accounts)]
            return self._node(at).container_put(
                at, account, container, timestamp, policy.index, stamped, account_at
            )

        results = await self._on_nodes(self.container_ring, part, put, replicas)
        self.forget_container(account, container)
        if results.count("policy_conflict") >= 1:
            raise SwiftError(409)
        if len(results) < quorum(replicas):
            raise SwiftError(503)
        return 201 if results.count("created") >= quorum(replicas) else 202

    async def container_post(self, account: str, container: str, metadata: dict) -> None:
        timestamp = timestamps.now()
        stamped = {k: [v, timestamp] for k, v in metadata.items()}
        part = self.container_ring.get_part(account, container)

        def post(at: Location, _replica: int) -> None:
            broker = self._node(at).container_broker(at, account, container)
            if not broker.exists():
                raise DatabaseMissing(container)
            broker.update_metadata(stamped)

        replicas = self.container_ring.replica_count
        done = await self._on_nodes(self.container_ring, part, post, replicas)
        self.forget_container(account, container)
        if len(done) < quorum(replicas):
            raise SwiftError(503)

    async def container_delete(self, account: str, container: str) -> None:
        timestamp = timestamps.now()
        part = self.container_ring.get_part(account, container)
        accounts = self._account_locations(account)
        replicas = self.container_ring.replica_count

        def delete(at: Location, replica: int) -> str:
            account_at = accounts[replica % len(accounts)]
            return self._node(at).container_delete(at, account, container, timestamp, account_at)

        results = await self._on_nodes(self.container_ring, part, delete, replicas)
        self.forget_container(account, container)
        if results.count("not_empty") >= 1:
            raise SwiftError(409, "There was a conflict when trying to complete your request.")
        if results.count("deleted") == 0:
            raise SwiftError(404)

    # -- objects ----------------------------------------------------------------------

    def _object_locations(
        self, policy: StoragePolicy, account: str, container: str, obj: str
    ) -> tuple[str, int]:
        name_hash = policy.ring.hash_of(account, container, obj)
        return name_hash, policy.ring.partition_of_hash(name_hash)

    def _updates(
        self, account: str, container: str, record: dict, count: int
    ) -> list[ContainerUpdate]:
        """The container updates `count` object replicas send: replica i to container
        node i, which tells account node i."""
        cpart, cnodes = self.container_ring.get_nodes(account, container)
        accounts = self._account_locations(account)
        return [
            ContainerUpdate(
                self.router.location(cnodes[replica % len(cnodes)], cpart),
                accounts[replica % len(accounts)],
                account,
                container,
                record,
            )
            for replica in range(count)
        ]

    async def _open_replicas(
        self,
        policy: StoragePolicy,
        part: int,
        name_hash: str,
        metadata: dict[str, Any],
        updates: list[ContainerUpdate],
        expected_etag: str | None,
    ) -> ReplicatedPut:
        """A replica begun on each primary, a handoff standing in for one that is down:
        this host's devices get a temp file (all in one worker thread), other hosts'
        the start of a streamed PUT (all at once). Replica i sends update i."""
        candidates = self._candidates(policy.ring, part)
        opened: dict[int, Replica] = {}

        def open_local(batch: list[tuple[int, Node, Location]]) -> None:
            for slot, node, at in batch:
                storage = self._node(at)
                try:
                    writer = storage.object_writer(at, policy.index, name_hash)
                except OSError:
                    self.errors.record(node)
                    continue
                opened[slot] = Replica(node, at, updates[slot], storage, writer)

        async def open_remote(slot: int, node: Node, at: Location) -> None:
            try:
                stream = await self._node(at).object_upload(
                    at, policy.index, name_hash, metadata, updates[slot], expected_etag
                )
            except OSError:
                self.errors.record(node)
                return
            opened[slot] = Replica(node, at, updates[slot], upload=stream)

        slots = list(range(policy.ring.replica_count))
        upload = ReplicatedPut([], quorum(policy.ring.replica_count), self._io,
                               self.errors.record)  # fmt: skip
        try:
            while batch := list(zip(slots, candidates, strict=False)):
                local = [(s, n, self.router.location(n, part)) for s, n in batch
                         if self.router.is_local(n)]  # fmt: skip
                remote = [open_remote(s, n, self.router.location(n, part)) for s, n in batch
                          if not self.router.is_local(n)]  # fmt: skip
                if local:
                    await self._io(open_local, local)
                await asyncio.gather(*remote)
                slots = [slot for slot in slots if slot not in opened]
        except BaseException:  # the client went away: nothing left open on any host
            upload.replicas = list(opened.values())
            await upload.abort()
            raise
        upload.replicas = [opened[slot] for slot in sorted(opened)]
        return upload

    async def object_put(
        self,
        policy: StoragePolicy,
        account: str,
        container: str,
        obj: str,
        metadata: dict[str, Any],
        body: AsyncIterator[bytes],
        *,
        max_size: int,
        expected_etag: str | None,
        content_length: int | None,
        listing: tuple[str, int] | None = None,
    ) -> dict[str, Any]:
        """Stream the body to every replica at once (ReplicatedPut); the stored metadata,
        or a SwiftError. listing: the ETag and size container listings show instead (an
        SLO's)."""
        name_hash, part = self._object_locations(policy, account, container, obj)
        replicas = policy.ring.replica_count
        # Taken before the body, as Swift's proxy does: the other hosts get it up front.
        timestamp = metadata.get("X-Timestamp") or timestamps.now()
        metadata = {**metadata, "name": f"/{account}/{container}/{obj}", "X-Timestamp": timestamp}
        record = {
            "name": obj,
            "created_at": timestamp,
            "size": listing[1] if listing else None,  # None: the body's (with_object)
            "content_type": metadata["Content-Type"],
            "etag": listing[0] if listing else None,
            "deleted": 0,
            "storage_policy_index": policy.index,
        }
        updates = self._updates(account, container, record, replicas)
        if expected_etag is not None:
            expected_etag = expected_etag.strip('"').lower()
        if content_length is not None and content_length <= min(SMALL_BODY, max_size):
            if self._all_local(policy.ring):
                return await self._put_small(
                    policy, part, name_hash, metadata, updates, body, content_length,
                    expected_etag,
                )  # fmt: skip
        upload = await self._open_replicas(
            policy, part, name_hash, metadata, updates, expected_etag
        )
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            if len(upload.live()) < quorum(replicas):
                raise SwiftError(503)
            async for chunk in body:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_size:
                    raise SwiftError(413, "Your request is too large.")
                digest.update(chunk)
                await upload.write(chunk)
            if content_length is not None and size < content_length:
                raise SwiftError(499)
            etag = digest.hexdigest()
            if expected_etag is not None and expected_etag != etag:
                raise SwiftError(422)
        except BaseException:
            await upload.abort()
            raise
        metadata = {**metadata, "Content-Length": str(size), "ETag": etag}
        if await upload.commit(metadata) < quorum(replicas):
            raise SwiftError(503)
        return metadata

    def _all_local(self, ring: Ring) -> bool:
        """Every device of the ring (primaries and handoffs) is this host's."""
        return self.router.all_local or all(self.router.is_local(n) for n in ring.devices)

    async def _put_small(
        self,
        policy: StoragePolicy,
        part: int,
        name_hash: str,
        metadata: dict[str, Any],
        updates: list[ContainerUpdate],
        body: AsyncIterator[bytes],
        content_length: int,
        expected_etag: str | None,
    ) -> dict[str, Any]:
        """object_put of a small body on this host's devices: the body received and
        checked whole, then every replica written, fsynced, renamed and its container
        told, one after the other in one worker-thread call (a handoff standing in for
        a device that fails). One thread per request rather than three keeps the many
        requests in flight from contending for the GIL; their fsyncs still overlap."""
        chunks = []
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > content_length:  # more than announced: as the streamed path
                raise SwiftError(413, "Your request is too large.")
            chunks.append(chunk)
        if size < content_length:
            raise SwiftError(499)
        data = b"".join(chunks)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if expected_etag is not None and expected_etag != etag:
            raise SwiftError(422)
        metadata = {**metadata, "Content-Length": str(size), "ETag": etag}

        def put(at: Location, replica: int) -> bool:
            update = updates[replica].with_object(size, etag)
            self._node(at).object_put_whole(at, policy.index, name_hash, data, metadata, update)
            return True

        replicas = policy.ring.replica_count
        done = await self._io(self._on_nodes_in_turn, policy.ring, part, put, replicas)
        if len(done) < quorum(replicas):
            raise SwiftError(503)
        return metadata

    def _on_nodes_in_turn(
        self, ring: Ring, part: int, call: Callable[[Location, int], T], count: int
    ) -> list[T]:
        """_on_nodes in one worker thread: the replicas one after the other."""
        candidates = self._candidates(ring, part)
        results: list[T] = []
        for replica in range(count):
            for node in candidates:
                try:
                    results.append(call(self.router.location(node, part), replica))
                    break
                except NODE_ERRORS:
                    self.errors.record(node)
        return results

    async def object_open(
        self, policy: StoragePolicy, account: str, container: str, obj: str
    ) -> StoredObject | None:
        """The first good replica's metadata; another host's bytes are streamed when
        read, the other replicas standing by should that host fail (RemoteBody)."""
        name_hash, part = self._object_locations(policy, account, container, obj)
        # A replica of this host is opened in the loop: a listing of its directory, an
        # xattr and a stat, from the page cache, cost less than a thread hop and its GIL
        # hand-offs (~25 % of a small GET's CPU); ObjectBody reads small bodies in the loop
        # too, and Swift's object server opens its files in its event hub the same way.
        stored = await self._first(
            policy.ring,
            part,
            lambda at: self._node(at).object_open(at, policy.index, name_hash),
            local_inline=True,
        )
        if stored is not None and stored.remote is not None:
            nodes = list(self._candidates(policy.ring, part))[: 2 * policy.ring.replica_count]
            locations = [self.router.location(n, part) for n in nodes]
            stored.remote.add_fallbacks([(self._node(at), at) for at in locations])
        return stored

    async def object_post(
        self, policy: StoragePolicy, account: str, container: str, obj: str, metadata: dict
    ) -> None:
        name_hash, part = self._object_locations(policy, account, container, obj)
        timestamp = timestamps.now()
        replicas = policy.ring.replica_count
        done = await self._on_nodes(
            policy.ring,
            part,
            lambda at, _r: self._node(at).object_post(
                at, policy.index, name_hash, timestamp, metadata
            ),
            replicas,
        )
        if not done:
            raise SwiftError(404)

    async def object_delete(
        self,
        policy: StoragePolicy,
        account: str,
        container: str,
        obj: str,
        *,
        timestamp: str | None = None,
    ) -> bool:
        """Tombstone every replica; False when no replica had the object. timestamp:
        the deletion's time when it is not now (a container sync's, the source's)."""
        name_hash, part = self._object_locations(policy, account, container, obj)
        timestamp = timestamp or timestamps.now()
        record = {
            "name": obj,
            "created_at": timestamp,
            "size": 0,
            "content_type": "",
            "etag": "",
            "deleted": 1,
            "storage_policy_index": policy.index,
        }
        meta = {"name": f"/{account}/{container}/{obj}"}
        replicas = policy.ring.replica_count
        updates = self._updates(account, container, record, replicas)
        results = await self._on_nodes(
            policy.ring,
            part,
            lambda at, r: self._node(at).object_delete(
                at,
                policy.index,
                name_hash,
                timestamp,
                meta,
                updates[r],
            ),
            replicas,
        )
        if len(results) < quorum(replicas):
            raise SwiftError(503)
        return any(results)


__all__ = ["Proxy", "ContainerInfo", "DeviceUnavailable", "quorum"]
