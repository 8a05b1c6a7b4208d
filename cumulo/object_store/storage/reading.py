"""Reading a replica's bytes, wherever it is: a file of this host's devices, or a
replica another host holds, streamed from there as it is read (remote.RemoteBody:
no local copy, another replica of the same version takes over when a host fails).

A body source is a Path (this host's .data file) or anything with
`iter_range(start, end)` (an async iterator of the bytes [start, end)).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from cumulo.object_store.storage.diskfile import StoredObject

CHUNK = 1 << 20


class RangeSource(Protocol):
    def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]: ...


Source = Path | RangeSource


def source_of(stored: StoredObject) -> Source:
    return stored.path if stored.path is not None else stored.remote


def size_of(stored: StoredObject) -> int:
    return int(stored.metadata["Content-Length"])


async def iter_file(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    offset = start
    while offset < end:
        chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
        if not chunk:
            raise OSError("replica file shorter than its metadata")
        offset += len(chunk)
        yield chunk


async def iter_source(source: Source, start: int, end: int) -> AsyncIterator[bytes]:
    if isinstance(source, Path):
        fd = os.open(source, os.O_RDONLY)
        try:
            async for chunk in iter_file(fd, start, end):
                yield chunk
        finally:
            os.close(fd)
        return
    async with contextlib.aclosing(source.iter_range(start, end)) as chunks:
        async for chunk in chunks:
            yield chunk


async def chunks_of(stored: StoredObject) -> AsyncIterator[bytes]:
    """The whole replica, chunk by chunk (what a copy reads)."""
    async for chunk in iter_source(source_of(stored), 0, size_of(stored)):
        yield chunk


async def read_all(stored: StoredObject) -> bytes:
    """A small replica's bytes (a manifest: the proxy bounds its size on upload)."""
    return b"".join([chunk async for chunk in chunks_of(stored)])


@contextlib.asynccontextmanager
async def held(stored: StoredObject) -> AsyncIterator[StoredObject]:
    """The replica, readable once even after it is deleted: this host's file held open,
    or another host's stream already begun (that host holds the file open)."""
    if stored.path is not None:
        with stored.path.open("rb") as f:
            yield replace(stored, path=Path(f"/proc/self/fd/{f.fileno()}"))
        return
    async with stored.remote.hold(size_of(stored)) as body:
        yield replace(stored, remote=body)
