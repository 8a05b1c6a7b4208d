"""The replicator: every partition's replicas on the devices the ring names.

For each partition a device holds, its newest files (objects) or rows (account and
container databases) are pushed to every primary that lacks them; a device that is
not a primary (a handoff, or a device the partition moved away from after a
rebalance) deletes its copy once every primary has it. A wiped or replaced device
gets everything back from its peers this way.

Container replicas that name different storage policies (a container deleted and
re-created with another policy while a replica was away, or two creates racing) settle
on the one Swift's rules choose as they merge (container_policy.py), and the object
rows then found in another policy than the container's are queued for the reconciler
(misplaced.py), as Swift's container replicator does.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.misplaced import enqueue_misplaced
from cumulo.object_store.daemons.peers import Peer, merge_db, primaries, report_container
from cumulo.object_store.daemons.walk import hash_dirs, local_devices, partitions, remove_empty
from cumulo.object_store.ring import Ring
from cumulo.object_store.storage import diskfile
from cumulo.object_store.storage.databases import AccountBroker, ContainerBroker, forget

LOG = logging.getLogger(__name__)


@dataclass
class ReplicationStats:
    pushed: int = 0  # files copied, or databases merged, to a primary
    removed: int = 0  # handoff copies deleted once home
    failures: int = 0
    policies_settled: int = 0  # container replicas that took another replica's policy
    misplaced_queued: int = 0  # object rows queued for the reconciler


def _newest_files(datadir: Path) -> list[str]:
    names = sorted((n for n in os.listdir(datadir) if not n.endswith(".json")), reverse=True)
    data = next((n for n in names if n.endswith((".data", ".ts"))), None)
    meta = next((n for n in names if n.endswith(".meta")), None)
    return [n for n in (data, meta) if n and (n != meta or not data or meta > data)]


def _copy_file(src: Path, peer_device: Path, target_dir: Path) -> None:
    """Copy one replica file with its metadata, atomically (temp, fsync, rename)."""
    tmp = peer_device / "tmp" / uuid.uuid4().hex
    tmp.parent.mkdir(exist_ok=True)
    shutil.copyfile(src, tmp)
    metadata = diskfile.read_metadata(src)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / src.name
    with tmp.open("rb+") as f:
        diskfile.set_metadata(f.fileno(), Path(f"{target}.json"), metadata)
        os.fsync(f.fileno())
    os.replace(tmp, target)
    diskfile.cleanup_older(target_dir)


class Replicator:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.devices = store.node.devices
        self.router = store.router

    def run_once(self) -> ReplicationStats:
        stats = ReplicationStats()
        for policy in self.store.policies.by_index.values():
            kind = diskfile.objects_dirname(policy.index)
            for device in local_devices(self.devices):
                for part, part_dir in partitions(device, kind):
                    self._replicate_objects(policy.ring, device, kind, part, part_dir, stats)
        for kind, ring, broker in (
            ("containers", self.store.container_ring, ContainerBroker),
            ("accounts", self.store.account_ring, AccountBroker),
        ):
            for device in local_devices(self.devices):
                for part, part_dir in partitions(device, kind):
                    self._replicate_dbs(ring, device, kind, part, part_dir, broker, stats)
        return stats

    def _peers(self, ring: Ring, device: Path, part: int) -> tuple[bool, list[Path | Peer]]:
        """Whether this device is a primary of the partition, and the other primaries:
        a directory of this host, or a device of another host's object server."""
        found = primaries(self.store, ring, part)
        return device in found, [p for p in found if p != device]

    def _replicate_objects(self, ring, device, kind, part, part_dir, stats) -> None:
        is_primary, peers = self._peers(ring, device, part)
        for datadir in list(hash_dirs(part_dir)):
            try:
                newest = _newest_files(datadir)
            except FileNotFoundError:
                continue
            home = True
            relative = datadir.relative_to(device)
            for peer in peers:
                if isinstance(peer, Peer):
                    home &= self._push_remote(peer, datadir, relative, newest, stats)
                    continue
                if not peer.is_dir():
                    home = False
                    continue
                target = peer / relative
                for name in newest:
                    if (target / name).exists() or self._peer_has_newer(target, name):
                        continue
                    try:
                        _copy_file(datadir / name, peer, target)
                        stats.pushed += 1
                    except OSError as exc:
                        LOG.warning("replicating %s to %s: %s", datadir, peer.name, exc)
                        stats.failures += 1
                        home = False
            if not is_primary and home:
                shutil.rmtree(datadir, ignore_errors=True)
                remove_empty(datadir.parent, device / kind)
                stats.removed += 1

    @staticmethod
    def _push_remote(
        peer: Peer, datadir: Path, relative: Path, newest: list[str], stats: ReplicationStats
    ) -> bool:
        """The newest files another host's device lacks, sent over HTTP; False when the
        host is down (the copy here stays until it is back)."""
        try:
            for name in peer.node.missing_files(peer.device, str(relative), newest):
                src = datadir / name
                peer.node.push_file(peer.device, str(relative / name), src,
                                    diskfile.read_metadata(src))  # fmt: skip
                stats.pushed += 1
        except OSError as exc:
            LOG.warning("replicating %s to %s on %s: %s", datadir, peer.device,
                        peer.node.address, exc)  # fmt: skip
            stats.failures += 1
            return False
        return True

    @staticmethod
    def _peer_has_newer(target: Path, name: str) -> bool:
        try:
            names = os.listdir(target)
        except FileNotFoundError:
            return False
        ext = ".meta" if name.endswith(".meta") else (".data", ".ts")
        return any(n.endswith(ext) and n > name for n in names if not n.endswith(".json"))

    def _replicate_dbs(self, ring, device, kind, part, part_dir, broker_cls, stats) -> None:
        is_primary, peers = self._peers(ring, device, part)
        for dbdir in list(hash_dirs(part_dir)):
            db = dbdir / f"{dbdir.name}.db"
            if not db.exists():
                continue
            broker = broker_cls(db)
            dump = broker.dump()
            relative = db.relative_to(device)
            home, settled = True, False
            for peer in peers:
                if isinstance(peer, Path) and not peer.is_dir():
                    home = False
                    continue
                try:
                    status = merge_db(peer, relative, kind, dump)
                    stats.pushed += 1
                except OSError as exc:
                    where = peer.name if isinstance(peer, Path) else peer.node.address
                    LOG.warning("replicating %s to %s: %s", db, where, exc)
                    stats.failures += 1
                    home = False
                    continue
                if status is not None:  # a container: the peer's policy may be the one
                    settled |= status["policy_changed"]
                    if broker.sync_status(status):
                        settled = True
                        dump["stat"] = broker.status()
            if settled:
                stats.policies_settled += 1
                report_container(self.store, broker.info())  # the account's per-policy usage
            if kind == "containers":
                stats.misplaced_queued += enqueue_misplaced(self.store, broker)
            if not is_primary and home:
                forget(db)
                shutil.rmtree(dbdir, ignore_errors=True)
                remove_empty(dbdir.parent, device / kind)
                stats.removed += 1
