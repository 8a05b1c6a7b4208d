"""Storage nodes on other hosts: the same calls as StorageNode, made over HTTP to that
host's `cumulo object-server` (server.py), and the router that tells which devices of
the ring are this process's own.

Like StorageNode's, every call blocks (the proxy and the daemons run them in worker
threads). A node that does not answer, or answers 507, is DeviceUnavailable (an
OSError: the proxy counts it and goes to the next node); a missing database or object
is DatabaseMissing / ObjectMissing, as locally. Every request is signed with the
cloud's backend key (backend_auth.py).

Opening another host's replica reads its metadata only (a HEAD); its bytes stream from
that host while they are sent on (RemoteBody, asynchronous), with no local copy. Writing
one streams the body to that host as the client sends it (RemoteUpload, asynchronous):
nothing of it is kept here but the few chunks on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from cumulo.object_store.ring.ring import Node
from cumulo.object_store.storage import reading
from cumulo.object_store.storage.backend_auth import BackendAuth, BackendKeys
from cumulo.object_store.storage.databases import DatabaseMissing
from cumulo.object_store.storage.diskfile import DeviceUnavailable, ObjectMissing, StoredObject
from cumulo.object_store.storage.node import ContainerUpdate, Location, StorageNode

LOG = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(30.0, connect=3.0)  # Swift's conn_timeout is short, node_timeout not
CHUNK = 1 << 20
# An upload hands another host's connection pieces of at most PIECE bytes (views of the
# client's chunks, which may be MiBs: cumulo/image/app.py widens uvicorn's window), and
# at most QUEUED_PIECES wait for it: a few hundred KiB behind per host.
PIECE = 256 << 10
QUEUED_PIECES = 4


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

    def __init__(self, address: str, keys: BackendKeys) -> None:
        self.address = address
        self.auth = BackendAuth(keys)
        self._local = threading.local()  # one keep-alive client per worker thread
        # Streamed reads: one client per event loop (a client belongs to its loop).
        self._streaming: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def _http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                base_url=f"http://{self.address}", timeout=TIMEOUT, auth=self.auth
            )
        return client

    def _stream_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._streaming.get(loop)
        if client is None:
            client = self._streaming[loop] = httpx.AsyncClient(
                base_url=f"http://{self.address}", timeout=TIMEOUT, auth=self.auth
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

    def account_put_containers(self, at: Location, account: str, records: list[dict]) -> None:
        for record in records:
            self.account_put_container(at, account, record)

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

    async def object_upload(
        self,
        at: Location,
        policy: int,
        name_hash: str,
        metadata: dict,
        update: ContainerUpdate | None,
        etag: str | None,
    ) -> RemoteUpload:
        """A replica written on this host while the client sends it (RemoteUpload).
        metadata: all but its size and ETag, which the node takes from the body; update:
        the container update the node sends once it commits (ContainerUpdate.with_object
        fills it in there); etag: the client's, which the node checks (422)."""
        # Fail now, before any byte, when the node or its device is down: the proxy then
        # takes a handoff for this replica (Swift's proxy learns it from 100-continue).
        client = self._stream_client()
        try:
            response = await client.get(f"/device/{at.device}")
        except httpx.HTTPError as exc:
            raise DeviceUnavailable(f"storage node {self.address}: {exc!r}") from None
        _checked(response, self.address)
        headers = {"x-cumulo-metadata": json.dumps(metadata),
                   "x-cumulo-update": json.dumps(update_body(update))}  # fmt: skip
        if etag is not None:
            headers["x-cumulo-etag"] = etag
        return RemoteUpload(self, client, self._object_path(at, policy, name_hash), headers)

    def object_open(self, at: Location, policy: int, name_hash: str) -> StoredObject:
        """The replica's metadata; its bytes are streamed from this host when read."""
        response = self._request("HEAD", self._object_path(at, policy, name_hash))
        metadata = json.loads(response.headers["x-cumulo-metadata"])
        data_timestamp = response.headers["x-cumulo-data-timestamp"]
        body = RemoteBody(policy, name_hash, data_timestamp, [(self, at)])
        return StoredObject(None, metadata, data_timestamp, body)

    @contextlib.asynccontextmanager
    async def object_stream(
        self, at: Location, policy: int, name_hash: str, data_timestamp: str, start: int, end: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Bytes [start, end) of the replica, if this host still has that version (the
        node answers 404 otherwise). Once entered, the node holds the file open."""
        headers = {"x-cumulo-data-timestamp": data_timestamp, "range": f"bytes={start}-{end - 1}"}
        path = self._object_path(at, policy, name_hash)
        try:
            async with self._stream_client().stream("GET", path, headers=headers) as response:
                if response.status_code >= 300:
                    await response.aread()
                _checked(response, self.address)
                if not response.headers.get("content-range", "").startswith(f"bytes {start}-"):
                    raise DeviceUnavailable(f"storage node {self.address} sent another range")
                # As the bytes arrive (tens of KiB): re-chunking to CHUNK would hold
                # two or three copies of a MiB per reader.
                yield response.aiter_bytes()
        except httpx.HTTPError as exc:
            raise DeviceUnavailable(f"storage node {self.address}: {exc!r}") from None

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


class RemoteBody:
    """The bytes of one version of an object, streamed from the hosts that hold it: the
    replica whose metadata was read first, then the others (`fallbacks`) when it fails,
    before its first byte or half way (the next resumes where it stopped, as Swift's
    proxy does; each must hold the same data timestamp). When none can, the read fails
    (DeviceUnavailable) and the answer being sent is cut short."""

    def __init__(
        self, policy: int, name_hash: str, data_timestamp: str, replicas: list[tuple[Any, Location]]
    ) -> None:
        self.policy, self.name_hash, self.data_timestamp = policy, name_hash, data_timestamp
        self.replicas = replicas  # (RemoteNode or StorageNode, location)

    def add_fallbacks(self, replicas: list[tuple[Any, Location]]) -> None:
        known = {at for _, at in self.replicas}
        self.replicas += [(node, at) for node, at in replicas if at not in known]

    def __repr__(self) -> str:
        return f"<RemoteBody {self.name_hash} {self.data_timestamp} on {len(self.replicas)} nodes>"

    @contextlib.asynccontextmanager
    async def _stream(
        self, node: Any, at: Location, start: int, end: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        if isinstance(node, RemoteNode):
            async with node.object_stream(at, self.policy, self.name_hash, self.data_timestamp,
                                          start, end) as chunks:  # fmt: skip
                yield chunks
            return
        # A replica of this host's own devices (a fallback for a remote one).
        stored = await asyncio.to_thread(node.object_open, at, self.policy, self.name_hash)
        if stored.data_timestamp != self.data_timestamp:
            raise ObjectMissing()
        fd = os.open(stored.path, os.O_RDONLY)
        try:
            async with contextlib.aclosing(reading.iter_file(fd, start, end)) as chunks:
                yield chunks
        finally:
            os.close(fd)

    async def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]:
        offset = start
        for node, at in self.replicas:
            if offset >= end:
                return
            try:
                async with self._stream(node, at, offset, end) as chunks:
                    async for chunk in chunks:
                        chunk = chunk[: end - offset]
                        offset += len(chunk)
                        yield chunk
                        if offset >= end:
                            break
            except (OSError, ObjectMissing, DatabaseMissing) as exc:
                LOG.warning("object %s: %s failed at byte %d (%r); next replica",
                            self.name_hash, at.host or "this host", offset, exc)  # fmt: skip
        if offset < end:
            raise DeviceUnavailable(
                f"object {self.name_hash}: no replica could send bytes {offset}-{end - 1}"
            )

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[HeldBody]:
        """The whole body, its stream begun on the first replica that answers (which then
        holds its file open): readable once, even if the object is deleted meanwhile."""
        for node, at in self.replicas:
            stack = contextlib.AsyncExitStack()
            try:
                chunks = await stack.enter_async_context(self._stream(node, at, 0, size))
            except (OSError, ObjectMissing, DatabaseMissing) as exc:
                await stack.aclose()
                LOG.warning("object %s: %s failed (%r); next replica", self.name_hash,
                            at.host or "this host", exc)  # fmt: skip
                continue
            async with stack:
                yield HeldBody(chunks, size)
            return
        raise DeviceUnavailable(f"object {self.name_hash}: no replica could be read")


class HeldBody:
    """A body whose stream is already open: read once, whole."""

    def __init__(self, chunks: AsyncIterator[bytes], size: int) -> None:
        self._chunks, self.size = chunks, size

    async def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]:
        if (start, end) != (0, self.size):
            raise ValueError("a held body is read whole")
        sent = 0
        async for chunk in self._chunks:
            sent += len(chunk)
            yield chunk
        if sent < self.size:
            raise DeviceUnavailable("the held replica ended early")


class RemoteUpload:
    """One replica streamed to another host while the client sends it, as Swift's proxy
    streams to its object servers: a chunked PUT whose body the proxy hands over as it
    comes; at most QUEUED_PIECES pieces wait for the connection (bounded memory; a slow
    host slows the upload down, up to the write timeout, after which it is dropped).
    The node writes the body to a temp file on its device; finish() ends it, and the
    node checks the ETag (422), commits and sends its container update; abort() drops
    the connection before the end, and the node throws the temp file away."""

    def __init__(
        self, node: RemoteNode, client: httpx.AsyncClient, path: str, headers: dict[str, str]
    ) -> None:
        self.address = node.address
        self._queue: asyncio.Queue[memoryview | None] = asyncio.Queue(QUEUED_PIECES)
        self._sending = asyncio.create_task(self._send(client, path, headers))
        self._sending.add_done_callback(self._ended)

    async def _body(self) -> AsyncIterator[memoryview]:
        while (piece := await self._queue.get()) is not None:
            yield piece

    async def _send(self, client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> dict:
        try:
            response = await client.put(path, content=self._body(), headers=headers)
        except httpx.HTTPError as exc:
            raise DeviceUnavailable(f"storage node {self.address}: {exc!r}") from None
        return _checked(response, self.address).json()

    def _ended(self, _task: asyncio.Task) -> None:
        # The request ended before its body did (the host failed): a piece still waiting
        # for room goes on, and the next write() says so.
        while not self._queue.empty():
            self._queue.get_nowait()

    async def write(self, chunk: bytes) -> None:
        """Hand a chunk over, piece by piece (waiting while QUEUED_PIECES are on their
        way); OSError (DeviceUnavailable) once the host has failed."""
        view = memoryview(chunk)
        for start in range(0, len(view), PIECE):
            if self._sending.done():
                if not self._sending.cancelled():
                    self._sending.result()  # the host's failure
                raise DeviceUnavailable(f"storage node {self.address} ended the upload early")
            await self._queue.put(view[start : start + PIECE])

    async def finish(self) -> dict:
        """End the body; the node's answer once it committed: {"etag", "size"}."""
        if not self._sending.done():
            await self._queue.put(None)
        return await self._sending

    async def abort(self) -> None:
        """Drop the connection before the end of the body: the node keeps nothing."""
        self._sending.cancel()
        await asyncio.wait([self._sending])
        if not self._sending.cancelled():
            self._sending.exception()  # seen: not logged as never retrieved


def _checked(response: httpx.Response, address: str) -> httpx.Response:
    if response.status_code < 300:
        return response
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
        keys: BackendKeys | None = None,
        *,
        all_local: bool = False,
    ) -> None:
        """keys: the backend keys other hosts' object servers want (backend_auth)."""
        self.local = local
        self.local_addresses = local_addresses
        self.keys = keys
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
            if self.keys is None:
                raise DeviceUnavailable(f"no backend keys to reach {at.host} with")
            remote = self._remotes[at.host] = RemoteNode(at.host, self.keys)
        return remote
