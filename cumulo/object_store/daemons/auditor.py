"""The auditor: re-reads every object replica and quarantines those whose bytes or
metadata no longer match (the replicator then restores a good copy)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.walk import hash_dirs, local_devices, partitions
from cumulo.object_store.storage import diskfile
from cumulo.object_store.storage.diskfile import ObjectMissing, Quarantined

LOG = logging.getLogger(__name__)


@dataclass
class AuditStats:
    checked: int = 0
    quarantined: int = 0
    bytes_read: int = 0


class Auditor:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def run_once(self) -> AuditStats:
        stats = AuditStats()
        for policy in self.store.policies.by_index.values():
            kind = diskfile.objects_dirname(policy.index)
            for device in local_devices(self.store.node.devices):
                for _part, part_dir in partitions(device, kind):
                    for datadir in list(hash_dirs(part_dir)):
                        if not self._audit(datadir, stats):
                            diskfile.quarantine(device, kind, datadir)
                            stats.quarantined += 1
                            LOG.warning("quarantined %s on %s", datadir.name, device.name)
        return stats

    @staticmethod
    def _audit(datadir, stats: AuditStats) -> bool:
        try:
            stored = diskfile.open_object(datadir)
        except ObjectMissing:
            return True
        except Quarantined:
            return False
        except FileNotFoundError:
            return True
        stats.checked += 1
        digest = hashlib.md5(usedforsecurity=False)
        with stored.path.open("rb") as f:
            while chunk := f.read(diskfile.CHUNK):
                digest.update(chunk)
                stats.bytes_read += len(chunk)
        return digest.hexdigest() == stored.metadata.get("ETag")
