"""Where a partition's replicas are, for the daemons: a device directory of this host,
or a device of another host's object server (over HTTP); merging a database into one,
and telling the account replicas about a container."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.ring import Ring
from cumulo.object_store.storage import diskfile
from cumulo.object_store.storage.databases import AccountBroker, ContainerBroker, DatabaseMissing
from cumulo.object_store.storage.remote import RemoteNode

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """A primary device on another host, reached through its object server."""

    node: RemoteNode
    device: str


def primaries(store: ObjectStore, ring: Ring, part: int) -> list[Path | Peer]:
    """The partition's primary devices: directories here, or other hosts' devices."""
    router = store.router
    return [
        store.node.devices / n.device if router.is_local(n)
        else Peer(router.node_for(router.location(n, part)), n.device)
        for n in ring.get_part_nodes(part)
    ]  # fmt: skip


def db_relative_path(kind: str, part: int, name_hash: str) -> Path:
    """A database's path under its device: <kind>/<part>/<suffix>/<hash>/<hash>.db."""
    return diskfile.hash_dir(Path(), kind, part, name_hash) / f"{name_hash}.db"


def merge_db(target: Path | Peer, relative: Path, kind: str, dump: dict) -> dict | None:
    """Merge a database dump into the replica on target (created when missing); a
    container's status after. OSError when the device or its host is down."""
    if isinstance(target, Peer):
        return target.node.merge_db(target.device, str(relative), kind, dump)
    diskfile.check_device(target)  # not the parents made for a missing device
    if kind == "accounts":
        AccountBroker(target / relative).merge(dump)
        return None
    return ContainerBroker(target / relative).merge(dump)


def report_container(store: ObjectStore, info: dict[str, Any]) -> int:
    """A container's state and usage to every replica of its account; how many took it."""
    part, nodes = store.account_ring.get_nodes(info["account"])
    reported = 0
    for node in nodes:
        at = store.router.location(node, part)
        try:
            store.node.report_container(at, info)  # routed to the device's host
            reported += 1
        except (OSError, DatabaseMissing) as exc:
            LOG.info("reporting %s/%s to %s: %s", info["account"], info["container"],
                     node.device, exc)  # fmt: skip
    return reported
