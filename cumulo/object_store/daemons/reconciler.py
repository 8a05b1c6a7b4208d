"""The reconciler (Swift's container-reconciler): moves the objects written into a
storage policy other than their container's into the right one.

It works off the misplaced-objects queue the replicator fills (misplaced.py). For each
entry, an object version (or a delete) found in policy P:

- the container's policy, as a quorum of its replicas settles it (Swift's rules,
  container_policy.py), is P: nothing to do.
- the container's policy already holds this version or a newer one (or a newer
  delete): that one wins; the copy in P is only removed.
- a version written to P: copied into the container's policy with its own timestamp,
  metadata, ETag and listing row, then removed from P.
- a delete made in P (through a stale view of the container): made in the container's
  policy at its own time.

The copy in P is removed with a tombstone one tick after the version's time, marked as
the reconciler's: a newer write in P survives it (and is queued in its turn), and the
tombstone's own row, queued as a delete, is not replayed (it comes to the queue under
the pop of the entry it finished, which has its time, or else is known by its mark).
Each step is idempotent, so
an entry that cannot be finished now (too few replicas answer, a version not there
yet) stays for a later pass; one whose version never shows up is dropped after
RECLAIM_AGE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.misplaced import MISPLACED_ACCOUNT, Entry, pop
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.policies import StoragePolicy
from cumulo.object_store.proxy import quorum
from cumulo.object_store.ring.ring import Node
from cumulo.object_store.storage import reading, timestamps
from cumulo.object_store.storage.container_policy import agreed_policy
from cumulo.object_store.storage.databases import DatabaseMissing
from cumulo.object_store.storage.diskfile import ObjectMissing
from cumulo.object_store.storage.node import ContainerUpdate, Location

LOG = logging.getLogger(__name__)

T = TypeVar("T")

RECLAIM_AGE = 7 * 86400  # Swift's reclaim_age: how long an entry waits for its version
RECONCILED = "X-Cumulo-Reconciled-To"  # on the tombstones the reconciler leaves
LISTING_PAGE = 1000


class Unavailable(Exception):
    """Too few replicas answered: the entry is tried again next pass."""


@dataclass
class Replica:
    """The newest state one replica holds of an object."""

    at: Location
    timestamp: str
    deleted: bool
    metadata: dict[str, Any]


@dataclass
class ReconcileStats:
    moved: int = 0  # versions copied into their container's policy
    replayed: int = 0  # deletes made again in their container's policy
    removed: int = 0  # misplaced copies tombstoned
    done: int = 0  # queue entries finished (popped)
    left: int = 0  # queue entries for a later pass


class Reconciler:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.proxy = store.proxy
        self.router = store.router
        self._container_policies: dict[tuple[str, str], int | None] = {}

    def works_the_queue(self) -> bool:
        """One host works the queue: the one with the first replica of its account
        (with several hosts, the others' passes return at once)."""
        _part, nodes = self.store.account_ring.get_nodes(MISPLACED_ACCOUNT)
        return bool(nodes) and self.router.is_local(nodes[0])

    async def run_once(self) -> ReconcileStats:
        stats = ReconcileStats()
        if not self.works_the_queue():
            return stats
        self._container_policies = {}  # settled once per pass (Swift caches them 30 s)
        for container in await self._queue_containers():
            await self._work_queue_container(container, stats)
        return stats

    async def _queue_containers(self) -> list[str]:
        names, marker = [], ""
        while True:
            _info, page = await self.proxy.account_listing(
                MISPLACED_ACCOUNT, {"limit": LISTING_PAGE, "marker": marker}
            )
            if not page:
                break
            names += [c["name"] for c in page]
            marker = page[-1]["name"]
        return sorted(names, key=int, reverse=True)  # newest first, as Swift

    async def _work_queue_container(self, container: str, stats: ReconcileStats) -> None:
        marker, found = "", False
        while True:
            listed = await self.proxy.container_listing(
                MISPLACED_ACCOUNT, container, {"limit": LISTING_PAGE, "marker": marker}
            )
            if not listed or not listed[1]:
                break
            found = True
            for row in listed[1]:
                try:
                    entry = Entry.from_row(row)
                except ValueError:
                    LOG.warning("not a queue entry in %s: %r", container, row["name"])
                    stats.left += 1
                    continue
                if await self._reconcile(entry, stats):
                    await asyncio.to_thread(pop, self.store, container, entry)
                    stats.done += 1
                else:
                    stats.left += 1
            marker = listed[1][-1]["name"]
        if not found and int(container) < time.time() - RECLAIM_AGE:
            with contextlib.suppress(SwiftError):  # reaped; a late entry makes it again
                await self.proxy.container_delete(MISPLACED_ACCOUNT, container)

    async def _reconcile(self, entry: Entry, stats: ReconcileStats) -> bool:
        """True when the entry is done with."""
        try:
            return await self._move(entry, stats)
        except Unavailable as exc:
            LOG.info("%s (%s) in policy %d: later, %s", entry.path, entry.timestamp,
                     entry.policy_index, exc)  # fmt: skip
        except Exception:  # noqa: BLE001 - one entry must not stop the others
            LOG.exception("reconciling %s (%s)", entry.path, entry.timestamp)
        return False

    async def _move(self, entry: Entry, stats: ReconcileStats) -> bool:
        index = await self._container_policy(entry.account, entry.container)
        if index is None:
            return self._not_there_yet(entry, "no replica of its container")
        if index == entry.policy_index:
            return True
        right = self.store.policies.by_index.get(index)
        wrong = self.store.policies.by_index.get(entry.policy_index)
        if right is None or wrong is None:
            return self._not_there_yet(entry, "its policy is not configured here")
        source, dest = await asyncio.gather(self._newest(wrong, entry), self._newest(right, entry))
        if dest is not None and dest.timestamp >= entry.timestamp:
            LOG.info("%s (%s): policy %d has %s already", entry.path, entry.timestamp,
                     right.index, dest.timestamp)  # fmt: skip
            return await self._remove_misplaced(wrong, right, entry, source, stats)
        if entry.delete:
            return await self._replay_delete(right, entry, source, stats)
        return await self._copy(wrong, right, entry, source, stats)

    def _not_there_yet(self, entry: Entry, why: str) -> bool:
        """Keep the entry for a later pass, unless it waited longer than RECLAIM_AGE."""
        if float(entry.timestamp) < time.time() - RECLAIM_AGE:
            LOG.error("%s (%s) in policy %d given up: %s", entry.path, entry.timestamp,
                      entry.policy_index, why)  # fmt: skip
            return True
        LOG.info("%s (%s) in policy %d: later, %s", entry.path, entry.timestamp,
                 entry.policy_index, why)  # fmt: skip
        return False

    async def _copy(
        self,
        wrong: StoragePolicy,
        right: StoragePolicy,
        entry: Entry,
        source: Replica | None,
        stats: ReconcileStats,
    ) -> bool:
        if source is None or source.timestamp < entry.timestamp:
            return self._not_there_yet(entry, "the version is not on a quorum of replicas")
        if source.timestamp > entry.timestamp or source.deleted:
            return True  # written or deleted again since: that has an entry of its own
        name_hash = wrong.ring.hash_of(entry.account, entry.container, entry.obj)
        try:
            stored = await asyncio.to_thread(
                self.router.node_for(source.at).object_open, source.at, wrong.index, name_hash
            )
        except (OSError, ObjectMissing) as exc:
            raise Unavailable(f"reading it: {exc!r}") from None
        # The data's own time (a newer POST's metadata came with stored.metadata).
        metadata = {"Content-Type": "application/octet-stream", **stored.metadata,
                    "X-Timestamp": entry.timestamp}  # fmt: skip
        size = int(metadata["Content-Length"])

        try:
            await self.proxy.object_put(
                right,
                entry.account,
                entry.container,
                entry.obj,
                metadata,
                reading.chunks_of(stored),
                max_size=size,
                expected_etag=metadata["ETag"],
                content_length=size,
                listing=(entry.listing_etag, entry.listing_size),
            )
        except SwiftError as exc:
            raise Unavailable(f"writing it to policy {right.index}: {exc.status}") from None
        stats.moved += 1
        LOG.info("%s (%s) moved from policy %d to %d", entry.path, entry.timestamp,
                 wrong.index, right.index)  # fmt: skip
        return await self._remove_misplaced(wrong, right, entry, source, stats)

    async def _replay_delete(
        self, right: StoragePolicy, entry: Entry, source: Replica | None, stats: ReconcileStats
    ) -> bool:
        if source is None or source.timestamp < entry.timestamp:
            return self._not_there_yet(entry, "the delete is not on a quorum of replicas")
        if source.timestamp > entry.timestamp or not source.deleted:
            return True  # written or deleted again since: that has an entry of its own
        if RECONCILED in source.metadata:
            return True  # the reconciler's own removal of a copy it moved
        if not await self._tombstone(right, entry, entry.timestamp, {}):
            raise Unavailable(f"too few replicas of policy {right.index} took the delete")
        stats.replayed += 1
        return True

    async def _remove_misplaced(
        self,
        wrong: StoragePolicy,
        right: StoragePolicy,
        entry: Entry,
        source: Replica | None,
        stats: ReconcileStats,
    ) -> bool:
        if source is not None and (
            source.timestamp > entry.timestamp
            or (source.deleted and source.timestamp >= entry.timestamp)
        ):
            return True  # gone already, or newer there (its own entry moves it)
        marker = {RECONCILED: str(right.index)}
        if not await self._tombstone(wrong, entry, timestamps.after(entry.timestamp), marker):
            raise Unavailable(f"too few replicas of policy {wrong.index} took the removal")
        stats.removed += 1
        return True

    # -- replicas -----------------------------------------------------------------------

    async def _on_primaries(self, nodes: list[Node], call: Callable[[int, Node], T]) -> list[T]:
        """call(i, node) on each primary at once; the answers of those that answered,
        Unavailable when fewer than a quorum did."""
        results = await asyncio.gather(
            *(asyncio.to_thread(call, i, n) for i, n in enumerate(nodes)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, OSError):
                raise result
        answers = [r for r in results if not isinstance(r, BaseException)]
        if len(answers) < quorum(len(nodes)):
            raise Unavailable(f"{len(answers)} of {len(nodes)} replicas answered")
        return answers

    async def _container_policy(self, account: str, container: str) -> int | None:
        key = (account, container)
        if key not in self._container_policies:
            part, nodes = self.store.container_ring.get_nodes(account, container)

            def status(_i: int, node: Node) -> dict | None:
                at = self.router.location(node, part)
                try:
                    return self.router.node_for(at).container_broker(at, account, container).info()
                except DatabaseMissing:
                    return None

            infos = [i for i in await self._on_primaries(nodes, status) if i is not None]
            self._container_policies[key] = agreed_policy(infos) if infos else None
        return self._container_policies[key]

    async def _newest(self, policy: StoragePolicy, entry: Entry) -> Replica | None:
        """The newest state (data or tombstone) a quorum of the policy's primaries know."""
        name_hash = policy.ring.hash_of(entry.account, entry.container, entry.obj)
        part = policy.ring.partition_of_hash(name_hash)

        def state(_i: int, node: Node) -> Replica | None:
            at = self.router.location(node, part)
            found = self.router.node_for(at).object_state(at, policy.index, name_hash)
            if found is None:
                return None
            return Replica(at, found["timestamp"], found["deleted"], found["metadata"])

        answers = await self._on_primaries(policy.ring.get_part_nodes(part), state)
        found = [r for r in answers if r is not None]
        # At one time a tombstone beats data, as on disk (the .ts sorts after the .data).
        return max(found, key=lambda r: (r.timestamp, r.deleted), default=None)

    async def _tombstone(
        self, policy: StoragePolicy, entry: Entry, timestamp: str, extra: dict[str, str]
    ) -> bool:
        """Delete the object from a policy at exactly `timestamp`, its row in the
        container too; True when a quorum of primaries took it."""
        name_hash = policy.ring.hash_of(entry.account, entry.container, entry.obj)
        part = policy.ring.partition_of_hash(name_hash)
        cpart, cnodes = self.store.container_ring.get_nodes(entry.account, entry.container)
        apart, anodes = self.store.account_ring.get_nodes(entry.account)
        record = {"name": entry.obj, "created_at": timestamp, "size": 0, "content_type": "",
                  "etag": "", "deleted": 1, "storage_policy_index": policy.index}  # fmt: skip
        metadata = {"name": entry.path, **extra}

        def delete(i: int, node: Node) -> None:
            at = self.router.location(node, part)
            # Replica i updates container replica i, as the proxy's writes do.
            update = ContainerUpdate(
                self.router.location(cnodes[i % len(cnodes)], cpart),
                self.router.location(anodes[i % len(anodes)], apart),
                entry.account,
                entry.container,
                record,
            )
            self.router.node_for(at).object_delete(
                at, policy.index, name_hash, timestamp, metadata, update
            )

        try:
            await self._on_primaries(policy.ring.get_part_nodes(part), delete)
        except Unavailable:
            return False
        return True
