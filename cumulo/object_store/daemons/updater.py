"""The updater: replays the container updates object servers could not make
(async pendings), oldest first, until the container servers take them; then, as
Swift's container-updater, reports to every account replica each container whose
state or usage changed since it last reported (what the batched account updates of
storage/account_updates.py missed)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.peers import report_container
from cumulo.object_store.daemons.walk import hash_dirs, local_devices, partitions
from cumulo.object_store.storage.databases import ContainerBroker, DatabaseMissing
from cumulo.object_store.storage.node import ContainerUpdate, Location

LOG = logging.getLogger(__name__)


@dataclass
class UpdateStats:
    done: int = 0
    left: int = 0
    containers_reported: int = 0  # to their accounts, changed since their last report


class Updater:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def run_once(self) -> UpdateStats:
        stats = UpdateStats()
        self._replay_pending(stats)
        self._report_containers(stats)
        return stats

    def _replay_pending(self, stats: UpdateStats) -> None:
        for device in local_devices(self.store.node.devices):
            pending = device / "async_pending"
            try:
                names = sorted(os.listdir(pending))
            except FileNotFoundError:
                continue
            for name in names:
                path = pending / name
                body = json.loads(path.read_text())
                update = ContainerUpdate(
                    Location(*body["container_at"]),
                    Location(*body["account_at"]) if body["account_at"] else None,
                    body["account"],
                    body["container"],
                    body["record"],
                )
                try:
                    self.store.node.route(update.container_at).container_put_object(update)
                except (OSError, DatabaseMissing) as exc:
                    LOG.info("container update %s still pending: %s", name, exc)
                    stats.left += 1
                    continue
                path.unlink()
                stats.done += 1

    def _report_containers(self, stats: UpdateStats) -> None:
        self.store.node.account_updates.flush()  # what is marked goes first, batched
        for device in local_devices(self.store.node.devices):
            for _part, part_dir in partitions(device, "containers"):
                for dbdir in list(hash_dirs(part_dir)):
                    broker = ContainerBroker(dbdir / f"{dbdir.name}.db")
                    try:
                        info = broker.unreported() if broker.exists() else None
                    except (OSError, DatabaseMissing):
                        continue
                    if info is None:
                        continue
                    replicas = self.store.account_ring.replica_count
                    if report_container(self.store, info) == replicas:
                        broker.mark_reported(info)
                        stats.containers_reported += 1
