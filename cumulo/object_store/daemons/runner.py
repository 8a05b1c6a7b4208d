"""The storage daemons, each a pass that can run once (CLI, tests) or every
`<name>_interval` seconds in the background of `cumulo up`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cumulo.object_store.core import ObjectStore
from cumulo.object_store.daemons.auditor import Auditor
from cumulo.object_store.daemons.container_sync import ContainerSyncer
from cumulo.object_store.daemons.expirer import Expirer
from cumulo.object_store.daemons.reconciler import Reconciler
from cumulo.object_store.daemons.replicator import Replicator
from cumulo.object_store.daemons.updater import Updater

LOG = logging.getLogger(__name__)

DAEMONS = ("replicator", "auditor", "updater", "expirer", "reconciler", "container_sync")


async def run_once(store: ObjectStore, name: str) -> Any:
    if name == "replicator":
        return await asyncio.to_thread(Replicator(store).run_once)
    if name == "auditor":
        return await asyncio.to_thread(Auditor(store).run_once)
    if name == "updater":
        return await asyncio.to_thread(Updater(store).run_once)
    if name == "expirer":
        return await Expirer(store).run_once()
    if name == "reconciler":
        return await Reconciler(store).run_once()
    if name == "container_sync":
        return await ContainerSyncer(store).run_once()
    raise ValueError(f"no daemon {name}")


class StorageDaemons:
    def __init__(self, store: ObjectStore, names: tuple[str, ...] = DAEMONS) -> None:
        self.store = store
        self.names = names
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for name in self.names:
            interval = getattr(self.store.config, f"{name}_interval")
            if interval > 0:
                self.tasks.append(asyncio.create_task(self._forever(name, interval)))

    async def _forever(self, name: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                result = await run_once(self.store, name)
                LOG.info("object-store %s: %s", name, result)
            except Exception:  # noqa: BLE001 - a failed pass must not stop the daemon
                LOG.exception("object-store %s pass failed", name)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
