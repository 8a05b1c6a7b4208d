"""The `object_store` image store: image data in the Object Storage (Glance's swift
store, single tenant), in the account of the service project (`AUTH_<service project
id>`), written and read with the service user's token.

An image is the object `<container>/<image id>`: one object up to SEGMENT_SIZE, else a
Static Large Object whose segments are `<container>_segments/<image id>/00001`...
(Glance's `swift_store_large_object_chunk_size` is 200 MiB as here). Reads are ranged
GETs streamed through (Range for the image API's partial downloads); a delete removes
the manifest with its segments (`multipart-manifest=delete`)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

from cumulo.common.identity_client import IdentityClient
from cumulo.common.service_client import ServiceClient, url_path
from cumulo.image.store import CHUNK

SEGMENT_SIZE = 200 * 1024 * 1024


class ObjectStorageStore:
    writable = True

    def __init__(
        self,
        id: str,
        description: str,
        objects: ServiceClient,
        identity: IdentityClient,
        container: str = "glance",
        segment_size: int = SEGMENT_SIZE,
    ) -> None:
        self.id = id
        self.description = description
        self.objects = objects
        self.reader = objects  # the same client (ServiceClient.stream streams in-process too)
        self.identity = identity
        self.container = container
        self.segments = f"{container}_segments"
        self.segment_size = segment_size
        self._containers_made = False

    async def _auth(self) -> tuple[str, str]:
        """The service token, and the service project's account."""
        token = await self.identity.service_token()
        return token, f"AUTH_{self.identity.service_project_id}"

    async def _containers(self, token: str, account: str) -> None:
        if self._containers_made:
            return
        for container in (self.container, self.segments):
            await self.objects.request(
                "PUT", url_path("/v1/{}/{}", account, container), token, ok=(201, 202)
            )
        self._containers_made = True

    async def _put_range(
        self, token: str, path: str, staged: Path, offset: int, length: int, query: str = ""
    ) -> None:
        async def body() -> AsyncIterator[bytes]:
            with staged.open("rb") as f:
                done = 0
                while done < length:
                    data = await asyncio.to_thread(
                        os.pread, f.fileno(), min(CHUNK, length - done), offset + done
                    )
                    if not data:
                        raise OSError(f"{staged} ended before {offset + length} bytes")
                    done += len(data)
                    yield data

        await self.objects.request(
            "PUT", path + query, token, content=body(), ok=(201,), timeout=None,
            headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"},
        )  # fmt: skip

    def url(self, location: str) -> str:
        # Glance's single-tenant swift locations name the configured account, not its
        # credentials: swift+config://<reference>/<container>/<object>.
        return f"swift+config://{self.id}/{self.container}/{location}"

    async def add(self, image_id: str, staged: Path) -> str:
        token, account = await self._auth()
        await self._containers(token, account)
        size = staged.stat().st_size
        path = url_path("/v1/{}/{}/{}", account, self.container, image_id)
        if size <= self.segment_size:
            await self._put_range(token, path, staged, 0, size)
        else:
            manifest = []
            for number, offset in enumerate(range(0, size, self.segment_size), start=1):
                length = min(self.segment_size, size - offset)
                segment = f"{image_id}/{number:05d}"
                await self._put_range(
                    token, url_path("/v1/{}/{}/{}/{}", account, self.segments, image_id,
                                    f"{number:05d}"), staged, offset, length,
                )  # fmt: skip
                manifest.append({"path": f"/{self.segments}/{segment}", "size_bytes": length})
            await self.objects.request(
                "PUT", f"{path}?multipart-manifest=put", token, ok=(201,),
                content=json.dumps(manifest).encode(), timeout=None,
            )  # fmt: skip
        await asyncio.to_thread(staged.unlink)  # taken, as the filesystem store's rename does
        return image_id

    async def read(
        self, location: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        token, account = await self._auth()
        path = url_path("/v1/{}/{}/{}", account, self.container, location)
        ranged = start > 0 or end is not None
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if ranged else {}
        async with self.reader.stream(path, token, headers=headers, ok=(200, 206)) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk

    async def delete(self, location: str) -> None:
        token, account = await self._auth()
        path = url_path("/v1/{}/{}/{}", account, self.container, location)
        await self.objects.request(
            "DELETE", f"{path}?multipart-manifest=delete", token, ok=(200, 204, 404)
        )
