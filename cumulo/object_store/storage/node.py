"""A storage node: the account, container and object servers of the devices on this host.

Every method is blocking file or SQLite work; the proxy runs them in worker threads.
A device whose directory is missing is unmounted (DeviceUnavailable, Swift's 507),
and the proxy goes to the next node.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cumulo.object_store.ring.ring import hash_path
from cumulo.object_store.storage import diskfile
from cumulo.object_store.storage.account_updates import AccountUpdates, container_report
from cumulo.object_store.storage.backend_auth import BackendKeys
from cumulo.object_store.storage.databases import (
    AccountBroker,
    ContainerBroker,
    DatabaseMissing,
)
from cumulo.object_store.storage.diskfile import (
    ObjectMissing,
    ObjectWriter,
    Quarantined,
    StoredObject,
)


@dataclass(frozen=True)
class Location:
    """Where one replica lives: a device and a partition (Swift's node + part), and the
    host serving the device (`ip:port`; "" for this process's own devices)."""

    device: str
    part: int
    host: str = ""


@dataclass
class ContainerUpdate:
    """What an object server tells a container server after a PUT or DELETE."""

    container_at: Location
    account_at: Location | None
    account: str
    container: str
    record: dict[str, Any] = field(default_factory=dict)

    def with_object(self, size: int, etag: str) -> ContainerUpdate:
        """The update once the body is stored: its size and ETag in the record, unless
        the record has its own (an SLO's manifest lists the whole object's)."""
        record = dict(self.record)
        if record.get("size") is None:
            record["size"] = size
        if record.get("etag") is None:
            record["etag"] = etag
        return replace(self, record=record)


class StorageNode:
    def __init__(self, devices: Path, hash_prefix: str, hash_suffix: str) -> None:
        self.devices = devices
        self.hash_prefix = hash_prefix
        self.hash_suffix = hash_suffix
        # The node serving a location: this one, or another host's (remote.NodeRouter).
        self.route: Callable[[Location], Any] = lambda at: self
        # What its object server (server.py) needs, set by ObjectStore: the backend keys
        # callers sign with, and the rings directory it hands to other hosts.
        self.backend_keys: BackendKeys | None = None
        self.rings: Path | None = None
        # Object updates' effect on the accounts, reported in batches.
        self.account_updates = AccountUpdates(self)
        self._device_paths: dict[str, Path] = {}

    def device_path(self, device: str) -> Path:
        path = self._device_paths.get(device)
        if path is None:
            path = self._device_paths[device] = self.devices / device
        diskfile.check_device(path)
        return path

    def name_hash(self, account: str, container: str = "", obj: str = "") -> str:
        return hash_path(self.hash_prefix, self.hash_suffix, account, container, obj)

    def _datadir(self, at: Location, policy: int, name_hash: str) -> tuple[Path, Path]:
        dev = self.device_path(at.device)
        kind = diskfile.objects_dirname(policy)
        return dev, diskfile.hash_dir(dev, kind, at.part, name_hash)

    def _db_path(self, at: Location, kind: str, name_hash: str) -> Path:
        dev = self.device_path(at.device)
        return diskfile.hash_dir(dev, kind, at.part, name_hash) / f"{name_hash}.db"

    # -- objects ----------------------------------------------------------------------

    def object_writer(self, at: Location, policy: int, name_hash: str) -> ObjectWriter:
        dev, datadir = self._datadir(at, policy, name_hash)
        return ObjectWriter(dev, datadir)

    def object_commit(
        self, at: Location, writer: ObjectWriter, metadata: dict, update: ContainerUpdate | None
    ) -> None:
        writer.commit(metadata)
        if update is not None:
            self._update_container(at, update)

    def object_put_whole(
        self,
        at: Location,
        policy: int,
        name_hash: str,
        body: bytes,
        metadata: dict,
        update: ContainerUpdate | None,
    ) -> None:
        """A replica of a body already received and checked, in one call: written,
        fsynced and renamed into place, then its container told."""
        writer = self.object_writer(at, policy, name_hash)
        try:
            writer.write(body)
            writer.commit(metadata)
        except BaseException:
            writer.abort()
            raise
        if update is not None:
            self._update_container(at, update)

    def object_open(self, at: Location, policy: int, name_hash: str) -> StoredObject:
        dev, datadir = self._datadir(at, policy, name_hash)
        try:
            return diskfile.open_object(datadir)
        except Quarantined:
            diskfile.quarantine(dev, diskfile.objects_dirname(policy), datadir)
            raise ObjectMissing() from None

    def object_state(self, at: Location, policy: int, name_hash: str) -> dict | None:
        """The replica's newest state without its bytes: {"timestamp", "deleted",
        "metadata"} (a tombstone's too), None when it holds nothing."""
        try:
            stored = self.object_open(at, policy, name_hash)
        except ObjectMissing as missing:
            if missing.timestamp is None:
                return None
            return {"timestamp": missing.timestamp, "deleted": True, "metadata": missing.metadata}
        return {"timestamp": stored.data_timestamp, "deleted": False, "metadata": stored.metadata}

    def object_post(
        self, at: Location, policy: int, name_hash: str, timestamp: str, metadata: dict
    ) -> None:
        dev, datadir = self._datadir(at, policy, name_hash)
        stored = self.object_open(at, policy, name_hash)
        if stored.data_timestamp >= timestamp:
            return
        diskfile.write_marker(dev, datadir, timestamp, ".meta", metadata)

    def object_delete(
        self,
        at: Location,
        policy: int,
        name_hash: str,
        timestamp: str,
        metadata: dict,
        update: ContainerUpdate | None,
    ) -> bool:
        """Write a tombstone; True when a newer-than-nothing object was there."""
        dev, datadir = self._datadir(at, policy, name_hash)
        try:
            existed = self.object_open(at, policy, name_hash).data_timestamp < timestamp
        except ObjectMissing:
            existed = False
        diskfile.write_marker(dev, datadir, timestamp, ".ts", metadata)
        if update is not None:
            self._update_container(at, update)
        return existed

    def _update_container(self, at: Location, update: ContainerUpdate) -> None:
        try:
            self.route(update.container_at).container_put_object(update)
        except (OSError, DatabaseMissing):  # a device or a host down: replayed later
            self.write_async_pending(at, update)

    def write_async_pending(self, at: Location, update: ContainerUpdate) -> None:
        """Keep a container update that could not be made; the updater replays it."""
        dev = self.device_path(at.device)
        pending = dev / "async_pending"
        pending.mkdir(exist_ok=True)
        body = {
            "container_at": _location_body(update.container_at),
            "account_at": _location_body(update.account_at) if update.account_at else None,
            "account": update.account,
            "container": update.container,
            "record": update.record,
        }
        tmp = dev / "tmp" / uuid.uuid4().hex
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(body))
        name = f"{update.record['created_at']}-{uuid.uuid4().hex[:8]}.json"
        os.replace(tmp, pending / name)

    # -- containers -------------------------------------------------------------------

    def container_broker(self, at: Location, account: str, container: str) -> ContainerBroker:
        return ContainerBroker(self._db_path(at, "containers", self.name_hash(account, container)))

    def container_put(
        self,
        at: Location,
        account: str,
        container: str,
        timestamp: str,
        policy: int,
        metadata: dict,
        account_at: Location | None,
    ) -> str:
        broker = self.container_broker(at, account, container)
        result = broker.initialize(account, container, timestamp, policy, metadata)
        if result != "policy_conflict" and account_at is not None:
            self._report_now(account_at, broker)
        return result

    def report_container(self, account_at: Location, info: dict[str, Any]) -> None:
        """A container's state and usage (its info) to one account replica."""
        self.route(account_at).account_put_container(
            account_at, info["account"], container_report(info)
        )

    def _report_now(self, account_at: Location, broker: ContainerBroker) -> None:
        info = broker.info()
        self.report_container(account_at, info)
        broker.mark_reported(info)

    def container_put_object(self, update: ContainerUpdate) -> None:
        """Merge an object's row; the account hears of it in the next batch (as Swift's
        container-updater tells it), not before this returns."""
        broker = self.container_broker(update.container_at, update.account, update.container)
        broker.put_object(update.record)
        self.account_updates.mark(update)

    def container_delete(
        self,
        at: Location,
        account: str,
        container: str,
        timestamp: str,
        account_at: Location | None,
    ) -> str:
        """'deleted', 'not_empty' or 'missing'."""
        broker = self.container_broker(at, account, container)
        if not broker.exists() or broker.info()["deleted"]:
            return "missing"
        if not broker.mark_deleted(timestamp):
            return "not_empty"
        if account_at is not None:
            self._report_now(account_at, broker)
        return "deleted"

    # -- accounts ---------------------------------------------------------------------

    def account_broker(self, at: Location, account: str) -> AccountBroker:
        return AccountBroker(self._db_path(at, "accounts", self.name_hash(account)))

    def account_put_container(self, at: Location, account: str, record: dict) -> None:
        self.account_put_containers(at, account, [record])

    def account_put_containers(self, at: Location, account: str, records: list[dict]) -> None:
        broker = self.account_broker(at, account)
        if not broker.exists():
            broker.initialize(account, min(r["put_timestamp"] for r in records))
        broker.put_containers(records)

    def account_update_metadata(
        self, at: Location, account: str, timestamp: str, updates: dict
    ) -> None:
        broker = self.account_broker(at, account)
        if not broker.exists():
            broker.initialize(account, timestamp)
        broker.update_metadata(updates)


def _location_body(at: Location) -> list:
    return [at.device, at.part, at.host]
