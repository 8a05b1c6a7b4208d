"""The per-host image cache: each image downloaded once from the Image service and
shared by every guest on the host (root disks are overlays on top of it).

Downloaded data is inspected before it is used, as Nova's image fetch does: data that is
not its image's disk_format, or that names other files (a qcow2 backing file, a VMDK
descriptor), fails the boot. The Image service inspects uploads, but not the data of
locations on web servers (its http store), nor data from before it inspected.

A signed image's data is verified as it downloads (image_signature.py) and kept only when
its signature holds; a marker beside the cached file says which signature it was
verified against, so a later boot reads the certificate again but not the data."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from cumulo.common import metrics
from cumulo.common.faults import ApiError
from cumulo.common.image_signatures import Verifier
from cumulo.common.service_client import ServiceClient
from cumulo.compute.image_signature import ImageSignatures, signature_marker
from cumulo.image import inspect

CHUNK = 1024 * 1024
# Limits of the qemu-img inspection (the Image service's defaults).
INSPECT_TIMEOUT = 30.0
INSPECT_MEMORY = 1 << 30


class ImageFetchError(Exception):
    pass


class ImageCache:
    def __init__(
        self, root: Path, images: ServiceClient, signatures: ImageSignatures | None = None
    ) -> None:
        self.root = root
        self.images = images
        # Signed images' checks (none: images are used as they come).
        self.signatures = signatures
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, image_id: str) -> Path:
        return self.root / image_id

    def _marker_of(self, image_id: str) -> Path:
        return self.root / f".{image_id}.verified"

    async def metadata(self, token: str, image_id: str) -> dict[str, Any]:
        return await self.images.json("GET", f"/v2/images/{image_id}", token)

    async def fetch(
        self,
        token: str,
        image_id: str,
        meta: dict[str, Any] | None = None,
        trusted_certs: list[str] | None = None,
    ) -> tuple[Path, dict[str, Any]]:
        """The cached file of an active image (downloading it first if needed) and its record.

        `meta` is the image's record when the caller has it already (the API read it
        for the boot request, as Nova passes the image in the request spec); otherwise
        it is read from the Image service. trusted_certs: the server's trusted image
        certificates (2.63), which the image's signing certificate must chain up to.
        """
        if meta is None or meta.get("id") != image_id:
            meta = await self.metadata(token, image_id)
        verifier = None
        if self.signatures is not None:
            verifier = await self.signatures.prepare(token, meta, trusted_certs)
        path, _ = await self._ensure(token, image_id, meta, verifier)
        return path, meta

    async def precache(self, token: str, image_id: str) -> str:
        """Fetch the image ahead of any boot (Nova's aggregate image pre-caching):
        `cached` when it was downloaded now, `existing` when it was here already."""
        meta = await self.metadata(token, image_id)
        verifier = None
        if self.signatures is not None:
            verifier = await self.signatures.prepare(token, meta)
        _, downloaded = await self._ensure(token, image_id, meta, verifier)
        return "cached" if downloaded else "existing"

    async def _ensure(
        self, token: str, image_id: str, meta: dict[str, Any], verifier: Verifier | None = None
    ) -> tuple[Path, bool]:
        """The cached file, and whether it had to be downloaded. verifier: the data must
        hold the image's signature (a cached file verified against another signature, or
        none, is downloaded again)."""
        if meta.get("status") != "active":
            raise ImageFetchError(f"image {image_id} is {meta.get('status')}, not active")
        path = self.path_of(image_id)
        marker = self._marker_of(image_id)
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        async with lock:
            stale = not path.exists() or path.stat().st_size != meta.get("size")
            if not stale and verifier is not None:
                verified = marker.read_text() if marker.exists() else ""
                stale = verified != signature_marker(meta)
            if stale:
                metrics.IMAGE_CACHE.labels("miss").inc()
                await self._download(token, image_id, meta, path, verifier)
                return path, True
            metrics.IMAGE_CACHE.labels("hit").inc()
        return path, False

    async def _download(
        self,
        token: str,
        image_id: str,
        meta: dict[str, Any],
        path: Path,
        verifier: Verifier | None = None,
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{image_id}.part")
        marker = self._marker_of(image_id)
        digest = hashlib.new(meta.get("os_hash_algo") or "sha512")
        try:
            with open(tmp, "wb") as f:
                async with self.images.stream(f"/v2/images/{image_id}/file", token) as response:
                    async for chunk in response.aiter_bytes(CHUNK):
                        digest.update(chunk)
                        if verifier is not None:
                            verifier.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
            expected = meta.get("os_hash_value")
            if expected and digest.hexdigest() != expected:
                raise ImageFetchError(f"image {image_id} data does not match its os_hash_value")
            if verifier is not None:
                ImageSignatures.verify(image_id, verifier)
            await _check_format(image_id, tmp, meta.get("disk_format") or "raw")
            marker.unlink(missing_ok=True)
            os.replace(tmp, path)
            if verifier is not None:
                marker.write_text(signature_marker(meta))
        finally:
            tmp.unlink(missing_ok=True)


async def _check_format(image_id: str, path: Path, disk_format: str) -> None:
    try:
        await inspect.inspect(path, disk_format, INSPECT_TIMEOUT, INSPECT_MEMORY)
    except ApiError as exc:
        raise ImageFetchError(f"image {image_id} is unacceptable: {exc.message}") from None
