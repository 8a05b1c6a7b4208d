"""An object PUT streamed to every replica at once, as Swift's proxy sends it: each chunk
the client sends goes to every replica still standing (written to a temp file on this
host's devices in a worker thread, handed to the connection of another host's), a
replica that fails half way is dropped and the upload goes on while a quorum is left.
Nothing is visible before the end: the proxy commits its own replicas and ends the
other hosts' bodies (which they then check and commit) only once its own checks of the
whole body passed; abort() leaves nothing anywhere.

Memory stays bounded: a chunk is held while it is written, and at most a few pieces of
it wait for each other host's connection (remote.QUEUED_PIECES).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cumulo.object_store.errors import SwiftError
from cumulo.object_store.ring.ring import Node
from cumulo.object_store.storage.databases import DatabaseMissing
from cumulo.object_store.storage.diskfile import ObjectMissing, ObjectWriter
from cumulo.object_store.storage.node import ContainerUpdate, Location, StorageNode
from cumulo.object_store.storage.remote import RemoteUpload

LOG = logging.getLogger(__name__)

REPLICA_ERRORS = (OSError, DatabaseMissing, ObjectMissing)

RunInThread = Callable[..., Awaitable[Any]]


@dataclass
class Replica:
    """One replica being written: on this host (`writer`, of `storage`) or on another
    (`upload`); `node` is the ring's, for the proxy's error limiting."""

    node: Node
    at: Location
    update: ContainerUpdate | None
    storage: StorageNode | None = None
    writer: ObjectWriter | None = None
    upload: RemoteUpload | None = None
    failed: bool = False


class ReplicatedPut:
    def __init__(
        self,
        replicas: list[Replica],
        quorum: int,
        io: RunInThread,
        on_error: Callable[[Node], None],
    ) -> None:
        self.replicas = replicas
        self.quorum = quorum
        self._io = io
        self._on_error = on_error

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if not r.failed]

    def _drop(self, replica: Replica, exc: BaseException) -> None:
        replica.failed = True
        self._on_error(replica.node)
        LOG.warning("object upload: replica on %s %s dropped (%r)",
                    replica.at.host or "this host", replica.at.device, exc)  # fmt: skip

    def _write_local(self, writers: list[Replica], chunk: bytes) -> None:
        for replica in writers:
            assert replica.writer is not None
            try:
                replica.writer.write(chunk)
            except OSError as exc:
                self._drop(replica, exc)

    async def _write_remote(self, replica: Replica, chunk: bytes) -> None:
        assert replica.upload is not None
        try:
            await replica.upload.write(chunk)
        except REPLICA_ERRORS as exc:
            self._drop(replica, exc)

    async def write(self, chunk: bytes) -> None:
        """The chunk to every replica standing; 503 once fewer than a quorum are."""
        live = self.live()
        local = [r for r in live if r.writer is not None]
        remote = [self._write_remote(r, chunk) for r in live if r.upload is not None]
        if not remote:
            await self._io(self._write_local, local, chunk)
        elif not local:
            await asyncio.gather(*remote)
        else:
            await asyncio.gather(self._io(self._write_local, local, chunk), *remote)
        if len(self.live()) < self.quorum:
            raise SwiftError(503)

    async def commit(self, metadata: dict[str, Any]) -> int:
        """Make every replica standing visible, the whole body having passed the proxy's
        checks (metadata: with its Content-Length and ETag); how many succeeded."""
        etag, size = metadata["ETag"], int(metadata["Content-Length"])

        async def one(replica: Replica) -> bool:
            try:
                if replica.upload is not None:
                    stored = await replica.upload.finish()
                    if (stored["etag"], stored["size"]) != (etag, size):
                        # Not the bytes sent: never counted (the auditor cannot tell).
                        LOG.error("object upload: %s stored %s (%d bytes), not %s (%d)",
                                  replica.at.host, stored["etag"], stored["size"], etag,
                                  size)  # fmt: skip
                        return False
                    return True
                assert replica.storage is not None and replica.writer is not None
                update = replica.update.with_object(size, etag) if replica.update else None
                await self._io(
                    replica.storage.object_commit, replica.at, replica.writer, metadata, update
                )
                return True
            except REPLICA_ERRORS as exc:
                self._drop(replica, exc)
                if replica.writer is not None:
                    await self._io(replica.writer.abort)
                return False

        done = await asyncio.gather(*(one(r) for r in self.live()))
        return sum(done)

    async def abort(self) -> None:
        """Throw every replica away: temp files removed, other hosts' bodies cut short."""
        writers = [r.writer for r in self.replicas if r.writer is not None]
        uploads = [r.upload.abort() for r in self.replicas if r.upload is not None]
        if writers:
            await self._io(lambda: [w.abort() for w in writers])
        if uploads:
            await asyncio.gather(*uploads)
