"""Object updates reach the account after the fact, in batches, as Swift's
container-updater reports a container's usage to its account.

A container replica that an object PUT or DELETE changed is marked; a thread of the
node reports, DELAY seconds later, every container replica marked meanwhile to the
account replica its update named, each account replica's share in one transaction,
and records what it reported (the container's reported_* columns). Under load a few
hundred object updates cost one account write instead of one each. What a report
misses (an account device down, the process stopped before the delay ran out) the
updater's pass finds from reported_* and sends again (daemons/updater.py): an
account's object count and bytes used lag its containers' by DELAY normally, by the
updater's interval at worst. Container creates and deletes still reach the account
at once (storage/node.py), as in Swift.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from cumulo.object_store.storage.databases import DatabaseMissing

if TYPE_CHECKING:
    from cumulo.object_store.storage.node import ContainerUpdate, Location, StorageNode

LOG = logging.getLogger(__name__)

DELAY = 0.25


def container_report(info: dict[str, Any]) -> dict[str, Any]:
    """A container's state and usage as its account keeps them."""
    return {
        "name": info["container"],
        "put_timestamp": info["put_timestamp"],
        "delete_timestamp": info["delete_timestamp"],
        "object_count": info["object_count"],
        "bytes_used": info["bytes_used"],
        "storage_policy_index": info["storage_policy_index"],
    }


class AccountUpdates:
    def __init__(self, node: StorageNode, delay: float = DELAY) -> None:
        self.node = node
        self.delay = delay
        # (container replica, account, container) -> the account replica to tell.
        self._marked: dict[tuple[Location, str, str], Location] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self, update: ContainerUpdate) -> None:
        """The container replica update.container_at changed: its account replica
        update.account_at is told within `delay` seconds."""
        if update.account_at is None:
            return
        key = (update.container_at, update.account, update.container)
        with self._lock:
            self._marked[key] = update.account_at
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="account-updates", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        return len(self._marked)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.delay)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the updater's pass sends what this missed
                LOG.exception("account updates failed")

    def flush(self) -> int:
        """Report every container replica marked so far; how many the accounts took."""
        with self._lock:
            marked, self._marked = self._marked, {}
        by_account: dict[tuple[Location, str], list[tuple[Any, dict[str, Any]]]] = {}
        for (container_at, account, container), account_at in marked.items():
            broker = self.node.container_broker(container_at, account, container)
            try:
                info = broker.info()
            except (OSError, DatabaseMissing, sqlite3.Error) as exc:
                LOG.info("account update of %s/%s: %s", account, container, exc)
                continue
            by_account.setdefault((account_at, account), []).append((broker, info))
        reported = 0
        for (account_at, account), containers in by_account.items():
            records = [container_report(info) for _broker, info in containers]
            try:
                self.node.route(account_at).account_put_containers(account_at, account, records)
                for broker, info in containers:
                    broker.mark_reported(info)
            except (OSError, DatabaseMissing, sqlite3.Error) as exc:  # the updater's pass
                LOG.info("account update of %s on %s: %s", account, account_at.device, exc)
                continue
            reported += len(containers)
        return reported
