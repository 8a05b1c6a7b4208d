"""Sending an object replica's file: whole, one range, or several (multipart/byteranges)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path

from starlette.types import Receive, Scope, Send

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


def _slices(segments: list[tuple[Path, int, int]], start: int, end: int):
    """The (segment, offset, end) pieces of [start, end) of the segments' concatenation."""
    base = 0
    for i, (_path, seg_start, seg_end) in enumerate(segments):
        length = seg_end - seg_start
        lo, hi = max(start, base), min(end, base + length)
        if lo < hi:
            yield (i, seg_start + lo - base, seg_start + hi - base)
        base += length


class ObjectBody:
    """An ASGI response streaming an object: one replica file, or the segments of a
    large object (each a file and the byte range of it that belongs to the object).
    Whole, one range, or several (multipart/byteranges)."""

    def __init__(
        self,
        segments: list[tuple[Path, int, int]],
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
        if segments and not head:
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
            self._fds[index] = os.open(self.segments[index][0], os.O_RDONLY)
        return self._fds[index]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
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
                fd = self._fd(index)
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
            self.close()
