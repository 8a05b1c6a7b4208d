"""The updater: replays the container updates object servers could not make
(async pendings), oldest first, until the container servers take them."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.walk import local_devices
from cumulo.object_store.storage.databases import DatabaseMissing
from cumulo.object_store.storage.node import ContainerUpdate, Location

LOG = logging.getLogger(__name__)


@dataclass
class UpdateStats:
    done: int = 0
    left: int = 0


class Updater:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def run_once(self) -> UpdateStats:
        stats = UpdateStats()
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
        return stats
