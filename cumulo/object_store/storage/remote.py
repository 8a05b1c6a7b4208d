"""Storage nodes on other hosts: the same calls as StorageNode, made over HTTP to that
host's `cumulo object-server` (server.py), and the router that tells which devices of
the ring are this process's own.

Like StorageNode's, every call blocks (the proxy and the daemons run them in worker
threads). A node that does not answer, or answers 507, is DeviceUnavailable (an
OSError: the proxy counts it and goes to the next node); a missing database or object
is DatabaseMissing / ObjectMissing, as locally.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import httpx

from cumulo.object_store.ring.ring import Node
from cumulo.object_store.storage.databases import DatabaseMissing
from cumulo.object_store.storage.diskfile import DeviceUnavailable, ObjectMissing, StoredObject
from cumulo.object_store.storage.node import ContainerUpdate, Location, StorageNode

TIMEOUT = httpx.Timeout(30.0, connect=3.0)  # Swift's conn_timeout is short, node_timeout not
CHUNK = 1 << 20


def update_body(update: ContainerUpdate | None) -> dict | None:
    if update is None:
        return None
    return {
        "container_at": location_body(update.container_at),
        "account_at": location_body(update.account_at) if update.account_at else None,
        "account": update.account,
        "container": update.container,
        "record": update.record,
    }


def update_from(body: dict | None) -> ContainerUpdate | None:
    if body is None:
        return None
    return ContainerUpdate(
        location_from(body["container_at"]),
        location_from(body["account_at"]) if body["account_at"] else None,
        body["account"],
        body["container"],
        body["record"],
    )


def location_body(at: Location) -> list:
    return [at.device, at.part, at.host]


def location_from(body: list) -> Location:
    return Location(body[0], int(body[1]), body[2] if len(body) > 2 else "")


class RemoteNode:
    """The account, container and object servers of one other host (`ip:port`)."""

    def __init__(self, address: str, tmp_dir: Path) -> None:
        self.address = address
        self.tmp_dir = tmp_dir
        self._local = threading.local()  # one keep-alive client per worker thread

    @property
    def _http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                base_url=f"http://{self.address}", timeout=TIMEOUT
            )
        return client

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DeviceUnavailable(f"storage node {self.address}: {exc}") from None
        return _checked(response, self.address)

    def call(self, op: str, at: Location, **args: Any) -> Any:
        response = self._request(
            "POST", f"/node/{op}", json={"at": location_body(at), "args": args}
        )
        return response.json()["result"]

    # -- accounts and containers --------------------------------------------------------

    def account_broker(self, at: Location, account: str) -> RemoteBroker:
        return RemoteBroker(self, at, "account", {"account": account})

    def container_broker(self, at: Location, account: str, container: str) -> RemoteBroker:
        return RemoteBroker(self, at, "container", {"account": account, "container": container})

    def account_put_container(self, at: Location, account: str, record: dict) -> None:
        self.call("account_put_container", at, account=account, record=record)

    def account_update_metadata(
        self, at: Location, account: str, timestamp: str, updates: dict
    ) -> None:
        self.call("account_update_metadata", at, account=account, timestamp=timestamp,
                  updates=updates)  # fmt: skip

    def container_put(
        self, at: Location, account: str, container: str, timestamp: str, policy: int,
        metadata: dict, account_at: Location | None,
    ) -> str:  # fmt: skip
        return self.call(
            "container_put", at, account=account, container=container, timestamp=timestamp,
            policy=policy, metadata=metadata,
            account_at=location_body(account_at) if account_at else None,
        )  # fmt: skip

    def container_delete(
        self, at: Location, account: str, container: str, timestamp: str,
        account_at: Location | None,
    ) -> str:  # fmt: skip
        return self.call(
            "container_delete", at, account=account, container=container, timestamp=timestamp,
            account_at=location_body(account_at) if account_at else None,
        )  # fmt: skip

    def container_put_object(self, update: ContainerUpdate) -> None:
        self.call("container_put_object", update.container_at, update=update_body(update))

    # -- objects ------------------------------------------------------------------------

    def _object_path(self, at: Location, policy: int, name_hash: str) -> str:
        return f"/object/{at.device}/{at.part}/{policy}/{name_hash}"

    def object_writer(self, at: Location, policy: int, name_hash: str) -> RemoteWriter:
        # Fail now, not at commit, when the node or its device is down: the proxy then
        # takes a handoff for this replica.
        self._request("GET", f"/device/{at.device}")
        return RemoteWriter(self, self._object_path(at, policy, name_hash), self.tmp_dir)

    def object_commit(
        self, at: Location, writer: RemoteWriter, metadata: dict, update: ContainerUpdate | None
    ) -> None:
        writer.send(metadata, update)

    def object_open(self, at: Location, policy: int, name_hash: str) -> StoredObject:
        """The replica's bytes in an unlinked local file (its fd path), kept until the
        StoredObject is gone."""
        path = self._object_path(at, policy, name_hash)
        try:
            with self._http.stream("GET", path) as response:
                _checked(response, self.address, streamed=True)
                metadata = json.loads(response.headers["x-cumulo-metadata"])
                fd, name = tempfile.mkstemp(dir=self.tmp_dir)
                os.unlink(name)
                for chunk in response.iter_bytes(CHUNK):
                    os.write(fd, chunk)
        except httpx.HTTPError as exc:
            raise DeviceUnavailable(f"storage node {self.address}: {exc}") from None
        stored = StoredObject(Path(f"/proc/self/fd/{fd}"), metadata,
                              response.headers["x-cumulo-data-timestamp"])  # fmt: skip
        weakref.finalize(stored, os.close, fd)
        return stored

    def object_state(self, at: Location, policy: int, name_hash: str) -> dict | None:
        return self.call("object_state", at, policy=policy, name_hash=name_hash)

    def object_post(
        self, at: Location, policy: int, name_hash: str, timestamp: str, metadata: dict
    ) -> None:
        self.call("object_post", at, policy=policy, name_hash=name_hash, timestamp=timestamp,
                  metadata=metadata)  # fmt: skip

    def object_delete(
        self, at: Location, policy: int, name_hash: str, timestamp: str, metadata: dict,
        update: ContainerUpdate | None,
    ) -> bool:  # fmt: skip
        return self.call("object_delete", at, policy=policy, name_hash=name_hash,
                         timestamp=timestamp, metadata=metadata,
                         update=update_body(update))  # fmt: skip

    # -- replication ----------------------------------------------------------------------

    def missing_files(self, device: str, relative: str, names: list[str]) -> list[str]:
        """Which of these replica files (newest first) the peer lacks and has nothing newer of."""
        response = self._request("POST", f"/replicate/check/{device}",
                                 json={"dir": relative, "names": names})  # fmt: skip
        return response.json()["missing"]

    def push_file(self, device: str, relative: str, src: Path, metadata: dict) -> None:
        with src.open("rb") as f:
            self._request("PUT", f"/replicate/file/{device}", content=f,
                          headers={"x-cumulo-path": relative,
                                   "x-cumulo-metadata": json.dumps(metadata)})  # fmt: skip

    def merge_db(self, device: str, relative: str, kind: str, dump: dict) -> dict | None:
        """Merge a database dump into the peer's replica: a container's status after."""
        response = self._request("POST", f"/replicate/db/{device}",
                                 json={"path": relative, "kind": kind, "dump": dump})  # fmt: skip
        return response.json()["result"]


class RemoteBroker:
    """An account or container database on another host (the calls the proxy makes)."""

    def __init__(self, node: RemoteNode, at: Location, kind: str, names: dict) -> None:
        self.node, self.at, self.kind, self.names = node, at, kind, names

    def _call(self, op: str, **args: Any) -> Any:
        return self.node.call(f"{self.kind}_db_{op}", self.at, **self.names, **args)

    def exists(self) -> bool:
        return self._call("exists")

    def info(self) -> dict[str, Any]:
        return self._call("info")

    def update_metadata(self, updates: dict) -> None:
        self._call("update_metadata", updates=updates)

    def list_objects(self, **query: Any) -> list[dict[str, Any]]:
        return self._call("list", query=query)

    def list_containers(self, **query: Any) -> list[dict[str, Any]]:
        return self._call("list", query=query)


class RemoteWriter:
    """A replica for another host: the body kept in a local temp file while it arrives,
    then sent with its metadata in one PUT, which the node commits as its own writer."""

    def __init__(self, node: RemoteNode, path: str, tmp_dir: Path) -> None:
        self.node, self.path = node, path
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=tmp_dir)
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def send(self, metadata: dict, update: ContainerUpdate | None) -> None:
        try:
            self._file.seek(0)
            headers = {"x-cumulo-metadata": json.dumps(metadata),
                       "x-cumulo-update": json.dumps(update_body(update)),
                       "content-length": str(self.size)}  # fmt: skip
            self.node._request("PUT", self.path, content=self._file, headers=headers)
        finally:
            self._file.close()

    def abort(self) -> None:
        self._file.close()


def _checked(response: httpx.Response, address: str, streamed: bool = False) -> httpx.Response:
    if response.status_code < 300:
        return response
    if streamed:
        response.read()
    reason = response.headers.get("x-cumulo-error", "")
    if response.status_code == 404 and reason == "object_missing":
        raise ObjectMissing()
    if response.status_code == 404:
        raise DatabaseMissing(reason)
    raise DeviceUnavailable(f"storage node {address} answered {response.status_code}: "
                            f"{response.text[:200]}")  # fmt: skip


class NodeRouter:
    """Which node serves a device of the ring: this process's StorageNode when the ring
    names one of `local_addresses` (ip:port) for it, else the RemoteNode of its host."""

    def __init__(
        self,
        local: StorageNode,
        local_addresses: set[str],
        tmp_dir: Path,
        *,
        all_local: bool = False,
    ) -> None:
        self.local = local
        self.local_addresses = local_addresses
        self.tmp_dir = tmp_dir
        self.all_local = all_local  # one host: every device is a directory here
        self._remotes: dict[str, RemoteNode] = {}
        local.route = self.node_for  # the node's own container updates go through here too

    def is_local(self, node: Node) -> bool:
        return self.all_local or f"{node.ip}:{node.port}" in self.local_addresses

    def location(self, node: Node, part: int) -> Location:
        # Always the ring's address: a location may travel to another host (a container
        # update an object server makes), where "here" means something else.
        return Location(node.device, part, f"{node.ip}:{node.port}")

    def node_for(self, at: Location) -> StorageNode | RemoteNode:
        if self.all_local or not at.host or at.host in self.local_addresses:
            return self.local
        remote = self._remotes.get(at.host)
        if remote is None:
            remote = self._remotes[at.host] = RemoteNode(at.host, self.tmp_dir)
        return remote
