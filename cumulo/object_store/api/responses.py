"""Sending an object: whole, one range, or several (multipart/byteranges), from this
host's replica files or streamed from the hosts holding the replicas (reading.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.types import Receive, Scope, Send

from cumulo.common.zerocopy import EXTENSION
from cumulo.object_store.storage.reading import Source, iter_source

LOG = logging.getLogger(__name__)

CHUNK = 1 << 20
SMALL = 64 << 10
MAX_RANGES = 50
_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """[(start, end_exclusive), ...]; None means send the whole object (no Range, or a
    malformed one, which HTTP says to ignore); Unsatisfiable for 416."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    specs = header.strip()[6:].split(",")
    if len(specs) > MAX_RANGES:
        return None
    ranges = []
    for spec in specs:
        m = _RANGE.match(spec)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        first, last = m.group(1), m.group(2)
        if first:
            start = int(first)
            end = min(int(last) + 1, size) if last else size
            if last and int(last) < start:
                return None
        else:
            length = int(last)
            if length == 0:
                continue
            start, end = max(size - length, 0), size
        if start < size:
            ranges.append((start, end))
    if not ranges:
        raise Unsatisfiable()
    return ranges


def _slices(segments: list[tuple[Source, int, int]], start: int, end: int):
    """The (segment, offset, end) pieces of [start, end) of the segments' concatenation."""
    base = 0
    for i, (_path, seg_start, seg_end) in enumerate(segments):
        length = seg_end - seg_start
        lo, hi = max(start, base), min(end, base + length)
        if lo < hi:
            yield (i, seg_start + lo - base, seg_start + hi - base)
        base += length


class ObjectBody:
    """An ASGI response streaming an object: one replica, or the segments of a large
    object (each a replica and the byte range of it that belongs to the object).
    Whole, one range, or several (multipart/byteranges). A replica is this host's file
    or another host's stream; when the first byte of the answer would come from another
    host and none of its replicas can send it, the answer is a 503 (nothing sent yet);
    when they fail later, the answer is cut short (the client sees fewer bytes than
    Content-Length says), as Swift's proxy does."""

    def __init__(
        self,
        segments: list[tuple[Source, int, int]],
        status: int,
        headers: dict[str, str],
        ranges: list[tuple[int, int]] | None,
        size: int,
        content_type: str,
        *,
        head: bool,
    ) -> None:
        self.segments = segments
        self.status = status
        self.head = head
        self.pieces: list[bytes | tuple[int, int, int]] = []
        headers = dict(headers)
        if ranges is None:
            self.pieces.extend(_slices(segments, 0, size))
        elif len(ranges) == 1:
            start, end = ranges[0]
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            self.pieces.extend(_slices(segments, start, end))
        else:
            boundary = uuid.uuid4().hex
            headers["Content-Type"] = f"multipart/byteranges;boundary={boundary}"
            for start, end in ranges:
                self.pieces.append(
                    f"--{boundary}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n".encode()
                )
                self.pieces.extend(_slices(segments, start, end))
                self.pieces.append(b"\r\n")
            self.pieces.append(f"--{boundary}--".encode())
        length = sum(len(p) if isinstance(p, bytes) else p[2] - p[1] for p in self.pieces)
        headers["Content-Length"] = str(length)
        self.headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
        # The first segment opens now: a replica replaced meanwhile stays readable.
        self._fds: dict[int, int] = {}
        if segments and not head and isinstance(segments[0][0], Path):
            self._fds[0] = os.open(segments[0][0], os.O_RDONLY)

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k == key), None)

    def set_header(self, name: str, value: str) -> None:
        key = name.lower().encode()
        self.headers = [(k, v) for k, v in self.headers if k != key]
        self.headers.append((key, value.encode("latin-1")))

    def drop_headers(self, matches) -> None:
        self.headers = [(k, v) for k, v in self.headers if not matches(k.decode())]

    def close(self) -> None:
        """Let go of the open segment when the answer is not sent after all."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, index: int) -> int:
        if index not in self._fds:
            source = self.segments[index][0]
            assert isinstance(source, Path)
            self._fds[index] = os.open(source, os.O_RDONLY)
        return self._fds[index]

    def _starts_remote(self) -> bool:
        first = self.pieces[0] if self.pieces else None
        return isinstance(first, tuple) and not isinstance(self.segments[first[0]][0], Path)

    async def _first_remote_chunk(self) -> tuple[AsyncIterator[bytes], bytes]:
        """The answer's first bytes come from another host: its stream begun and its
        first chunk (OSError when no replica can send it)."""
        first = self.pieces[0]
        assert isinstance(first, tuple)
        index, offset, end = first
        chunks = iter_source(self.segments[index][0], offset, end)
        try:
            return chunks, await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise

    async def _send_remote(
        self, send: Send, piece: tuple[int, int, int], primed: tuple | None
    ) -> None:
        if primed is not None:
            chunks, chunk = primed
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            index, offset, end = piece
            chunks = iter_source(self.segments[index][0], offset, end)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        primed = None
        # This host's replica files go to the socket with sendfile(2) where the server can.
        zerocopy = EXTENSION in scope.get("extensions", {})
        try:
            if not self.head and self._starts_remote():
                try:
                    primed = await self._first_remote_chunk()
                except (OSError, StopAsyncIteration) as exc:
                    LOG.warning("no replica could send the object: %s", exc)
                    await _unavailable(send)
                    return
            await send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            if self.head:
                await send({"type": "http.response.body", "body": b""})
                return
            for piece in self.pieces:
                if isinstance(piece, bytes):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    continue
                index, offset, end = piece
                if not isinstance(self.segments[index][0], Path):
                    handed, primed = primed, None
                    await self._send_remote(send, piece, handed)
                    continue
                fd = self._fd(index)
                if zerocopy and end - offset > SMALL:
                    await send({"type": EXTENSION, "file": fd, "offset": offset,
                                "count": end - offset, "more_body": True})  # fmt: skip
                    continue
                while offset < end:
                    n = min(CHUNK, end - offset)
                    # Small reads come from the page cache faster than a thread hop.
                    if n <= SMALL:
                        chunk = os.pread(fd, n, offset)
                    else:
                        chunk = await asyncio.to_thread(os.pread, fd, n, offset)
                    if not chunk:
                        raise OSError("replica file shorter than its metadata")
                    offset += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if primed is not None:
                await primed[0].aclose()
            self.close()


async def _unavailable(send: Send) -> None:
    body = b"<html><h1>Service Unavailable</h1><p>The server is currently unavailable. "
    body += b"Please try again at a later time.</p></html>"
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"text/html; charset=UTF-8"),
        (b"content-length", str(len(body)).encode()),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
