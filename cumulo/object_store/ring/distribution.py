"""Rings reach the storage hosts from the proxy host, not by hand: every object server
serves the ring files it has (`GET /ring/<name>`, signed like every backend request,
ETag = SHA-256 of the file), and `cumulo object-server --rings-from IP:PORT` fetches
them from there at start and every few seconds after, writing a changed ring in place
(temp file + rename), which its Ring objects then reload as they do after a rebalance.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from pathlib import Path

import httpx

from cumulo.object_store.ring.builder import atomic_write
from cumulo.object_store.storage.backend_auth import BackendAuth, BackendKeys

LOG = logging.getLogger(__name__)

RING_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
TIMEOUT = httpx.Timeout(10.0, connect=3.0)
MAX_RING_BYTES = 256 << 20


class RingUnavailable(Exception):
    pass


def ring_etag(text: bytes) -> str:
    return f'"{hashlib.sha256(text).hexdigest()}"'


def read_ring(rings: Path | None, name: str) -> tuple[bytes, str]:
    """A ring file's bytes and ETag, or RingUnavailable (unknown name, no such ring)."""
    if rings is None or not RING_NAME.match(name):
        raise RingUnavailable(f"no ring {name!r}")
    try:
        text = (rings / f"{name}.ring.json").read_bytes()
    except FileNotFoundError:
        raise RingUnavailable(f"no ring {name!r}") from None
    return text, ring_etag(text)


def check_ring(text: bytes) -> None:
    """Refuse what a server could not read as a ring (ValueError)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for key in ("part_power", "replicas", "devs", "replica2part2dev"):
        if key not in data:
            raise ValueError(f"no {key!r}")
    parts = 1 << data["part_power"]
    if any(len(row) != parts for row in data["replica2part2dev"]):
        raise ValueError("an assignment row does not cover every partition")


class RingFetcher:
    """Keeps a storage host's rings (`names`, in `rings`) the same as a peer's (`source`,
    the ip:port of the proxy host's storage port or of another object server)."""

    def __init__(self, source: str, rings: Path, names: list[str], keys: BackendKeys) -> None:
        self.source = source
        self.rings = rings
        self.names = names
        self.auth = BackendAuth(keys)

    def _local_etag(self, name: str) -> str | None:
        try:
            return read_ring(self.rings, name)[1]
        except RingUnavailable:
            return None

    def fetch_once(self) -> list[str]:
        """Fetch every ring that changed at the source; the names of those written.
        Raises httpx.HTTPError when the source cannot be reached, RingUnavailable when
        it has no such ring or sends one that is not a ring."""
        changed = []
        with httpx.Client(base_url=f"http://{self.source}", timeout=TIMEOUT,
                          auth=self.auth) as client:  # fmt: skip
            for name in self.names:
                etag = self._local_etag(name)
                headers = {"if-none-match": etag} if etag else {}
                response = client.get(f"/ring/{name}", headers=headers)
                if response.status_code == 304:
                    continue
                if response.status_code != 200:
                    reason = f"{response.status_code} {response.text[:200]}"
                    raise RingUnavailable(f"ring {name} from {self.source}: {reason}")
                text = response.content
                if len(text) > MAX_RING_BYTES:
                    raise RingUnavailable(f"ring {name} from {self.source} is too large")
                try:
                    check_ring(text)
                except (ValueError, TypeError) as exc:
                    raise RingUnavailable(f"ring {name} from {self.source}: {exc}") from None
                if ring_etag(text) == etag:
                    continue
                self._install(name, text)
                changed.append(name)
        return changed

    def _install(self, name: str, text: bytes) -> None:
        atomic_write(self.rings / f"{name}.ring.json", text)
        LOG.info("ring %s updated from %s", name, self.source)

    async def wait_for_rings(self, retry: float = 1.0, timeout: float = 300.0) -> None:
        """At start: every ring fetched (the source may start after this host), or the
        error after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await asyncio.to_thread(self.fetch_once)
                return
            except (httpx.HTTPError, RingUnavailable) as exc:
                if loop.time() > deadline:
                    raise RingUnavailable(f"rings from {self.source}: {exc}") from None
                LOG.warning("waiting for the rings from %s: %s", self.source, exc)
                await asyncio.sleep(retry)

    async def keep_fetching(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.fetch_once)
            except (httpx.HTTPError, RingUnavailable) as exc:
                LOG.warning("rings from %s: %s (keeping the ones here)", self.source, exc)
