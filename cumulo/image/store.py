"""Where image data lives: a small store interface and the filesystem store.

Uploads are first written (and hashed) to a local staging file: that is what
qemu-img inspects before the data is accepted. A store then takes the staged
file (`add`), reads ranges of it back (`read`) and deletes it (`delete`); `url`
is how an image's `locations` show where the data is. The filesystem store
keeps `<state>/images/<image id>` and moves staged files in with a rename, so an
accepted upload is never copied twice. The object-storage store
(object_storage_store.py) implements the same methods; the http store
(http_store.py) only reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 4 << 20  # bytes written, hashed or read per step


class TooLarge(Exception):
    """The data went past the size the caller allowed."""


class Store(Protocol):
    id: str
    description: str
    writable: bool  # False: data is only read from it (never uploaded, copied or deleted)

    def url(self, location: str) -> str:
        """The location as an image's `locations` show it."""
        ...

    async def add(self, image_id: str, staged: Path) -> str:
        """Take a staged file; returns the location to read it back from."""
        ...

    def read(self, location: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) of the data at location."""
        ...

    async def delete(self, location: str) -> None: ...


class FilesystemStore:
    writable = True

    def __init__(
        self,
        root: Path,
        id: str = "file",
        description: str = "Filesystem store in the cumulo state directory.",
    ) -> None:
        self.id = id
        self.description = description
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, location: str) -> Path:
        path = (self.root / location).resolve()
        if path.parent != self.root.resolve():
            raise ValueError(f"location outside the store: {location!r}")
        return path

    def url(self, location: str) -> str:
        return self._path(location).as_uri()

    async def add(self, image_id: str, staged: Path) -> str:
        await asyncio.to_thread(os.replace, staged, self._path(image_id))
        return image_id

    async def read(
        self, location: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        # Read-ahead: the next chunk is read in a thread while this one is being sent,
        # so the socket never waits for the disk.
        loop = asyncio.get_running_loop()
        fd = await asyncio.to_thread(os.open, self._path(location), os.O_RDONLY)
        pending: asyncio.Future[bytes] | None = None

        def fetch(pos: int) -> asyncio.Future[bytes] | None:
            want = CHUNK if end is None else min(CHUNK, end - pos)
            return loop.run_in_executor(None, os.pread, fd, want, pos) if want > 0 else None

        try:
            pos = start
            pending = fetch(pos)
            while pending is not None:
                chunk = await pending
                pending = None
                if not chunk:
                    break
                pos += len(chunk)
                pending = fetch(pos)
                yield chunk
        finally:
            if pending is None:
                os.close(fd)
            else:  # stopped early (client gone): close once the read in flight is over
                pending.add_done_callback(lambda f: (f.cancelled() or f.exception(), os.close(fd)))

    async def delete(self, location: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._path(location))

    def locations(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_file()}


@dataclass(frozen=True)
class Written:
    size: int
    checksum: str  # md5 hex
    os_hash_value: str  # sha512 hex


_DONE = object()


async def write_staged(
    chunks: AsyncIterator[bytes],
    path: Path,
    max_size: int,
    *,
    hashes: bool = True,
    readers: Sequence[Callable[[bytes], None]] = (),
) -> Written:
    """Stream chunks to path, hashing on the way, with bounded memory.

    Three worker threads take each buffer: one writes it, one feeds md5, one
    feeds sha512 (file writes and hashlib on large buffers release the GIL), so
    the slowest of them (md5, ~0.8 GB/s on one core) sets the pace while the
    event loop keeps receiving. Each lane holds at most a few CHUNKs. On any
    failure the partial file is removed and the error raised. readers: more lanes,
    each given every buffer in order (a signature verifier's hash).
    """
    md5 = hashlib.md5(usedforsecurity=False)
    sha512 = hashlib.sha512()
    failure: list[BaseException] = []
    f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed once the writer is done

    def work(pending: queue.Queue, step) -> None:
        try:
            while (buf := pending.get()) is not _DONE:
                step(buf)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            failure.append(exc)
            while pending.get() is not _DONE:
                pass

    steps = [f.write, md5.update, sha512.update] if hashes else [f.write]
    steps += readers
    lanes = [queue.Queue(maxsize=4) for _ in steps]
    threads = [
        threading.Thread(target=work, args=(q, step), name=f"stage-{path.name}", daemon=True)
        for q, step in zip(lanes, steps, strict=True)
    ]
    for t in threads:
        t.start()

    async def put(item: object) -> None:
        for pending in lanes:
            # A full queue means a worker is behind: wait for it off the loop.
            try:
                pending.put_nowait(item)
            except queue.Full:
                await asyncio.to_thread(pending.put, item)

    size = 0
    parts: list[bytes] = []
    held = 0
    finished = False
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_size:
                raise TooLarge(size)
            parts.append(chunk)
            held += len(chunk)
            if held >= CHUNK:
                await put(b"".join(parts))
                parts.clear()
                held = 0
            if failure:
                raise failure[0]
        if parts:
            await put(b"".join(parts))
        finished = True
    finally:
        await put(_DONE)
        for t in threads:
            await asyncio.to_thread(t.join)
        f.close()
        if failure or not finished:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if failure:
        raise failure[0]
    return Written(size, md5.hexdigest(), sha512.hexdigest())


async def hash_file(path: Path) -> Written:
    """Size and hashes of a file already on disk (a staged import)."""

    def run() -> Written:
        md5 = hashlib.md5(usedforsecurity=False)
        sha512 = hashlib.sha512()
        size = 0
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                md5.update(chunk)
                sha512.update(chunk)
        return Written(size, md5.hexdigest(), sha512.hexdigest())

    return await asyncio.to_thread(run)
