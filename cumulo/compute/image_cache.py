"""The per-host image cache: each image downloaded once from the Image service and
shared by every guest on the host (root disks are overlays on top of it).

Downloaded data is inspected before it is used, as Nova's image fetch does: data that is
not its image's disk_format, or that names other files (a qcow2 backing file, a VMDK
descriptor), fails the boot. The Image service inspects uploads, but not the data of
locations on web servers (its http store), nor data from before it inspected."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from cumulo.common import metrics
from cumulo.common.faults import ApiError
from cumulo.common.service_client import ServiceClient
from cumulo.image import inspect

CHUNK = 1024 * 1024
# Limits of the qemu-img inspection (the Image service's defaults).
INSPECT_TIMEOUT = 30.0
INSPECT_MEMORY = 1 << 30


class ImageFetchError(Exception):
    pass


class ImageCache:
    def __init__(self, root: Path, images: ServiceClient) -> None:
        self.root = root
        self.images = images
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, image_id: str) -> Path:
        return self.root / image_id

    async def metadata(self, token: str, image_id: str) -> dict[str, Any]:
        return await self.images.json("GET", f"/v2/images/{image_id}", token)

    async def fetch(
        self, token: str, image_id: str, meta: dict[str, Any] | None = None
    ) -> tuple[Path, dict[str, Any]]:
        """The cached file of an active image (downloading it first if needed) and its record.

        `meta` is the image's record when the caller has it already (the API read it
        for the boot request, as Nova passes the image in the request spec); otherwise
        it is read from the Image service.
        """
        if meta is None or meta.get("id") != image_id:
            meta = await self.metadata(token, image_id)
        path, _ = await self._ensure(token, image_id, meta)
        return path, meta

    async def precache(self, token: str, image_id: str) -> str:
        """Fetch the image ahead of any boot (Nova's aggregate image pre-caching):
        `cached` when it was downloaded now, `existing` when it was here already."""
        meta = await self.metadata(token, image_id)
        _, downloaded = await self._ensure(token, image_id, meta)
        return "cached" if downloaded else "existing"

    async def _ensure(self, token: str, image_id: str, meta: dict[str, Any]) -> tuple[Path, bool]:
        """The cached file, and whether it had to be downloaded."""
        if meta.get("status") != "active":
            raise ImageFetchError(f"image {image_id} is {meta.get('status')}, not active")
        path = self.path_of(image_id)
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        async with lock:
            if not path.exists() or path.stat().st_size != meta.get("size"):
                metrics.IMAGE_CACHE.labels("miss").inc()
                await self._download(token, image_id, meta, path)
                return path, True
            metrics.IMAGE_CACHE.labels("hit").inc()
        return path, False

    async def _download(self, token: str, image_id: str, meta: dict[str, Any], path: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{image_id}.part")
        digest = hashlib.new(meta.get("os_hash_algo") or "sha512")
        try:
            with open(tmp, "wb") as f:
                async with self.images.stream(f"/v2/images/{image_id}/file", token) as response:
                    async for chunk in response.aiter_bytes(CHUNK):
                        digest.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
            expected = meta.get("os_hash_value")
            if expected and digest.hexdigest() != expected:
                raise ImageFetchError(f"image {image_id} data does not match its os_hash_value")
            await _check_format(image_id, tmp, meta.get("disk_format") or "raw")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


async def _check_format(image_id: str, path: Path, disk_format: str) -> None:
    try:
        await inspect.inspect(path, disk_format, INSPECT_TIMEOUT, INSPECT_MEMORY)
    except ApiError as exc:
        raise ImageFetchError(f"image {image_id} is unacceptable: {exc.message}") from None
