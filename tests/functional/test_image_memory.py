"""A 1 GiB image goes up and comes back down streamed: the server's memory barely moves."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.cloudrunner import CloudRunner

GIB = 1 << 30
MIB = 1 << 20


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples this process's RSS (the cloud runs in-process) while a block runs."""

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_1gib_sparse_upload_and_download_keep_rss_growth_under_64mib(
    cloud: CloudRunner, admin_token: str, tmp_path: Path
):
    sparse = tmp_path / "sparse.raw"
    with open(sparse, "wb") as f:
        f.truncate(GIB)
    expected_md5 = hashlib.md5(usedforsecurity=False)
    zeros = bytes(MIB)
    for _ in range(GIB // MIB):
        expected_md5.update(zeros)

    with httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": admin_token},
        timeout=300,
    ) as client:
        image = client.post(
            "/v2/images",
            json={"name": f"big-{uuid.uuid4().hex[:8]}", "disk_format": "raw",
                  "container_format": "bare"},
        ).json()  # fmt: skip
        started = time.monotonic()
        with PeakRss() as upload, open(sparse, "rb") as f:
            r = client.put(
                f"/v2/images/{image['id']}/file",
                content=iter(lambda: f.read(MIB), b""),
                headers={"Content-Type": "application/octet-stream"},
            )
        assert r.status_code == 204, r.text
        shown = client.get(f"/v2/images/{image['id']}").json()
        assert shown["size"] == GIB and shown["virtual_size"] == GIB
        assert shown["checksum"] == expected_md5.hexdigest()

        got = hashlib.md5(usedforsecurity=False)
        received = 0
        with PeakRss() as download:
            with client.stream("GET", f"/v2/images/{image['id']}/file") as r:
                assert r.headers["Content-MD5"] == shown["checksum"]
                for chunk in r.iter_bytes(MIB):
                    got.update(chunk)
                    received += len(chunk)
        elapsed = time.monotonic() - started
        assert received == GIB and got.hexdigest() == shown["checksum"]
        assert client.delete(f"/v2/images/{image['id']}").status_code == 204

    assert upload.growth < 64 * MIB, f"upload grew RSS by {upload.growth / MIB:.0f} MiB"
    assert download.growth < 64 * MIB, f"download grew RSS by {download.growth / MIB:.0f} MiB"
    assert elapsed < 120
