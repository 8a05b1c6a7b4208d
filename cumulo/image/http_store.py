"""The `http` image store (Glance's http store): read-only. An image's data stays on a
web server; the image's location is its URL, added with JSON patch (`/locations/-`) or
POST /v2/images/{id}/locations, never by an upload. Reads are GETs streamed through
(a Range for partial downloads; a server that ignores it is cut to the range here);
`size` is a HEAD's Content-Length, what Glance checks before it takes a location.
Redirects are not followed: the URL that passed the location filters is the one read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from cumulo.image.store import CHUNK

SCHEMES = ("http", "https")


class LocationUnreadable(OSError):
    """The web server did not give the data (an error status, or no size)."""


class HttpStore:
    writable = False

    def __init__(self, id: str, description: str, timeout: float = 60.0) -> None:
        self.id = id
        self.description = description
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)

    def url(self, location: str) -> str:
        return location

    async def size(self, url: str) -> int:
        """The data's size in bytes, from a HEAD request (LocationUnreadable without one)."""
        try:
            resp = await self.client.head(url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise LocationUnreadable(f"HEAD {url}: {exc}") from None
        length = resp.headers.get("content-length", "")
        if resp.status_code != 200 or not length.isdigit() or int(length) <= 0:
            raise LocationUnreadable(f"HEAD {url} answered {resp.status_code}, size {length!r}")
        return int(length)

    async def read(
        self, location: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        ranged = start > 0 or end is not None
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if ranged else {}
        try:
            async with self.client.stream("GET", location, headers=headers) as resp:
                if resp.status_code not in (200, 206):
                    raise LocationUnreadable(f"GET {location} answered {resp.status_code}")
                skip = start if resp.status_code == 200 else 0
                left = None if end is None else end - start
                async for chunk in resp.aiter_bytes(CHUNK):
                    if skip:
                        taken = min(skip, len(chunk))
                        chunk, skip = chunk[taken:], skip - taken
                    if left is not None:
                        chunk = chunk[:left]
                        left -= len(chunk)
                    if chunk:
                        yield chunk
                    if left == 0:
                        return
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise LocationUnreadable(f"GET {location}: {exc}") from None

    async def add(self, image_id: str, staged: Path) -> str:
        raise PermissionError(f"store {self.id} is read-only")

    async def delete(self, location: str) -> None:
        """Nothing to do: the web server's data is not the Image service's to delete."""

    async def close(self) -> None:
        await self.client.aclose()
