"""The image cache (Glance's cache management API, 2.14): copies of image data kept on
this API node, filled ahead of use by queueing images (a prefetcher copies them from
their store), served to downloads, and pruned least recently used first beyond
`[image] cache_max_size`.

Files under <state>/image-cache: `<id>` (complete data), `incomplete/<id>` (being
copied), `queue/<id>` (queued), `index.json` (hits and access times).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cumulo.common.db import utcnow
from cumulo.image.store import write_staged

if TYPE_CHECKING:
    from cumulo.image.core import ImageService
    from cumulo.image.models import Image

LOG = logging.getLogger(__name__)


class ImageCache:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        for sub in ("incomplete", "queue"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.index_file = root / "index.json"
        self.index: dict[str, dict] = (
            json.loads(self.index_file.read_text()) if self.index_file.exists() else {}
        )
        self._lock = asyncio.Lock()

    def _save(self) -> None:
        tmp = self.index_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.index))
        os.replace(tmp, self.index_file)

    # -- what is cached and queued ------------------------------------------------------

    def path(self, image_id: str) -> Path | None:
        path = self.root / image_id
        return path if image_id in self.index and path.exists() else None

    def cached(self) -> list[dict]:
        return [
            {
                "image_id": image_id,
                "hits": entry["hits"],
                "last_accessed": entry["last_accessed"],
                "last_modified": entry["last_modified"],
                "size": entry["size"],
            }
            for image_id, entry in sorted(self.index.items())
        ]

    def queued(self) -> list[str]:
        return sorted(p.name for p in (self.root / "queue").iterdir())

    def hit(self, image_id: str) -> None:
        entry = self.index.get(image_id)
        if entry is not None:
            entry["hits"] += 1
            entry["last_accessed"] = utcnow().timestamp()
            self._save()

    # -- changes ---------------------------------------------------------------------------

    def queue(self, service: ImageService, image: Image) -> None:
        """Queue an image; the prefetcher copies it in the background."""
        if image.id in self.index:
            return
        (self.root / "queue" / image.id).touch()
        service.track(asyncio.create_task(self._prefetch(service, image)))

    async def _prefetch(self, service: ImageService, image: Image) -> None:
        partial = self.root / "incomplete" / image.id
        try:
            written = await write_staged(
                service.read(await service.locations(image.id)),
                partial,
                service.config.image.max_image_size,
            )
            async with self._lock:
                if not (self.root / "queue" / image.id).exists():
                    partial.unlink()  # dequeued (or the image deleted) meanwhile
                    return
                os.replace(partial, self.root / image.id)
                now = utcnow().timestamp()
                self.index[image.id] = {
                    "hits": 0,
                    "last_accessed": now,
                    "last_modified": now,
                    "size": written.size,
                }
                (self.root / "queue" / image.id).unlink()
                self._prune(keep=image.id)
                self._save()
        except Exception as exc:  # noqa: BLE001 - the image stays queued, as in Glance
            LOG.warning("caching image %s failed: %s", image.id, exc)
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    def _prune(self, keep: str) -> None:
        """Least recently accessed entries go until the cache fits its size."""
        total = sum(e["size"] for e in self.index.values())
        for image_id, entry in sorted(self.index.items(), key=lambda i: i[1]["last_accessed"]):
            if total <= self.max_size:
                break
            if image_id != keep:
                total -= entry["size"]
                self._remove(image_id)

    def _remove(self, image_id: str) -> None:
        self.index.pop(image_id, None)
        for path in (self.root / image_id, self.root / "queue" / image_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def delete(self, image_id: str) -> None:
        """The image leaves the cache and the queue."""
        async with self._lock:
            self._remove(image_id)
            self._save()

    async def clear(self, target: str) -> None:
        """`cache`, `queue` or `both`."""
        async with self._lock:
            if target in ("cache", "both"):
                for image_id in list(self.index):
                    self._remove(image_id)
            if target in ("queue", "both"):
                for path in (self.root / "queue").iterdir():
                    path.unlink()
            self._save()
