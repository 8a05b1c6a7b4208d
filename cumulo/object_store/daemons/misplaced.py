"""The misplaced-objects queue (Swift's `.misplaced_objects` account): container
databases of an internal account, one per hour of the objects' timestamps, on the
container ring like any other.

A queue row names an object row found in a policy other than its container's:
`<policy index>:/<account>/<container>/<object>`, created_at the object row's
timestamp, content_type the operation (application/x-put or application/x-delete);
unlike Swift's, etag and size are the object row's own (an SLO's or a link's listing
values differ from the object's, and the moved object's row must keep them). The
replicator fills it from the container databases it replicates; the reconciler works
it off and pops each row it is done with. Enqueueing an object that is not misplaced
is harmless: the reconciler finds it where it belongs and pops it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.peers import (
    db_relative_path,
    merge_db,
    primaries,
    report_container,
)
from cumulo.object_store.proxy import quorum
from cumulo.object_store.storage import timestamps
from cumulo.object_store.storage.databases import ContainerBroker, DatabaseMissing
from cumulo.object_store.storage.node import ContainerUpdate

LOG = logging.getLogger(__name__)

MISPLACED_ACCOUNT = ".misplaced_objects"
QUEUE_CONTAINER_SPAN = 3600  # seconds of object timestamps per queue container
QUEUE_POLICY = 0  # the queue containers' own (their rows are entries, not objects)
PUT, DELETE = "application/x-put", "application/x-delete"
BATCH = 1000


def queue_container(timestamp: str) -> str:
    """The queue container of an object timestamp: its hour."""
    return str(int(float(timestamp)) // QUEUE_CONTAINER_SPAN * QUEUE_CONTAINER_SPAN)


@dataclass(frozen=True)
class Entry:
    """One queue row: an object version (or delete) in a policy that may be wrong."""

    name: str
    policy_index: int
    account: str
    container: str
    obj: str
    timestamp: str
    delete: bool
    listing_etag: str
    listing_size: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Entry:
        index, _, path = row["name"].partition(":")
        account, container, obj = path[1:].split("/", 2)
        return cls(row["name"], int(index), account, container, obj, row["created_at"],
                   row["content_type"] == DELETE, row["etag"], row["size"])  # fmt: skip

    @property
    def path(self) -> str:
        return f"/{self.account}/{self.container}/{self.obj}"


def _entry_row(account: str, container: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{row['storage_policy_index']}:/{account}/{container}/{row['name']}",
        "created_at": row["created_at"],
        "size": row["size"],
        "content_type": DELETE if row["deleted"] else PUT,
        "etag": row["etag"],
        "deleted": 0,
        "storage_policy_index": QUEUE_POLICY,
    }


def enqueue_misplaced(store: ObjectStore, broker: ContainerBroker) -> int:
    """Queue a container database's misplaced rows written since its sync point; how
    many. The point moves on once every queue container took them on a quorum."""
    point, last = broker.reconciler_sync_point()
    if point >= last:
        return 0
    info = broker.info()
    if info["account"] == MISPLACED_ACCOUNT:  # the queue itself
        broker.move_reconciler_sync_point(point, last)
        return 0
    queued, complete, since = 0, True, point
    while rows := broker.misplaced_since(since, BATCH):
        batches: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            entry = _entry_row(info["account"], info["container"], row)
            batches[queue_container(row["created_at"])].append(entry)
        for container, entries in batches.items():
            complete &= _add(store, container, entries)
        queued += len(rows)
        since = rows[-1]["row_id"]
    if complete:
        broker.move_reconciler_sync_point(point, max(last, since))
    return queued


def _add(store: ObjectStore, container: str, entries: list[dict[str, Any]]) -> bool:
    """Merge entries into every replica of a queue container (made when missing, as
    Swift's replicator does in its local handoff), and list it in the queue account."""
    now = timestamps.now()
    stat = {
        "account": MISPLACED_ACCOUNT,
        "container": container,
        "created_at": now,
        "put_timestamp": now,  # revives a queue container reaped meanwhile
        "delete_timestamp": "0",
        "status_changed_at": now,
        "storage_policy_index": QUEUE_POLICY,
        "metadata": "{}",
        "object_count": 0,
    }
    part = store.container_ring.get_part(MISPLACED_ACCOUNT, container)
    relative = db_relative_path(
        "containers", part, store.node.name_hash(MISPLACED_ACCOUNT, container)
    )
    targets = primaries(store, store.container_ring, part)
    took, status = 0, None
    for target in targets:
        try:
            status = merge_db(target, relative, "containers", {"stat": stat, "objects": entries})
            took += 1
        except (OSError, DatabaseMissing) as exc:
            LOG.warning("queueing misplaced objects in %s: %s", container, exc)
    if status is not None:
        report_container(store, status)
    return took >= quorum(len(targets))


def pop(store: ObjectStore, container: str, entry: Entry) -> None:
    """Delete an entry's row from the queue container's replicas (a later entry of the
    same object, newer than this one, stays)."""
    record = {"name": entry.name, "created_at": timestamps.after(entry.timestamp), "size": 0,
              "content_type": "", "etag": "", "deleted": 1,
              "storage_policy_index": QUEUE_POLICY}  # fmt: skip
    part, nodes = store.container_ring.get_nodes(MISPLACED_ACCOUNT, container)
    for node in nodes:
        at = store.router.location(node, part)
        update = ContainerUpdate(at, None, MISPLACED_ACCOUNT, container, record)
        try:
            store.router.node_for(at).container_put_object(update)
        except (OSError, DatabaseMissing) as exc:  # seen again next pass, and popped then
            LOG.info("popping %s from %s on %s: %s", entry.name, container, node.device, exc)
