"""The expirer: deletes objects whose X-Delete-At has passed (reads already answer
404 for them; this frees their space and takes them out of the listings)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.walk import hash_dirs, local_devices, partitions
from cumulo.object_store.storage import diskfile
from cumulo.object_store.storage.diskfile import ObjectMissing, Quarantined


@dataclass
class ExpiryStats:
    expired: int = 0


class Expirer:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def due(self) -> list[tuple[int, str, str, str]]:
        """(policy, account, container, object) of every expired object held here."""
        now = time.time()
        found = set()
        for policy in self.store.policies.by_index.values():
            kind = diskfile.objects_dirname(policy.index)
            for device in local_devices(self.store.node.devices):
                for _part, part_dir in partitions(device, kind):
                    for datadir in hash_dirs(part_dir):
                        try:
                            meta = diskfile.open_object(datadir).metadata
                        except (ObjectMissing, Quarantined, FileNotFoundError):
                            continue
                        at = meta.get("X-Delete-At")
                        if at and int(at) <= now:
                            account, container, obj = meta["name"][1:].split("/", 2)
                            found.add((policy.index, account, container, obj))
        return sorted(found)

    async def run_once(self) -> ExpiryStats:
        stats = ExpiryStats()
        for index, account, container, obj in await asyncio.to_thread(self.due):
            policy = self.store.policies.by_index[index]
            await self.store.proxy.object_delete(policy, account, container, obj)
            stats.expired += 1
        return stats
