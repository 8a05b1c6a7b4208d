"""An operator warms the image cache of an API node: queue images, see them cached and
served from the cache (hits), clear the cache or the queue; admins only."""

from __future__ import annotations

import time

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir


@pytest.fixture(scope="module")
def caching_cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("image-cache")
    configure_state_dir(state)
    config = load_config(state)
    config.image.cache_enabled = True
    config.image.cache_max_size = 6000  # room for one of the 4 KiB images below
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def _client(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": token},
        timeout=30,
    )


def _image(glance: httpx.Client, data: bytes | None) -> str:
    body = {"name": "cached", "disk_format": "raw", "container_format": "bare"}
    image_id = glance.post("/v2/images", json=body).json()["id"]
    if data is not None:
        put = glance.put(
            f"/v2/images/{image_id}/file",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 204
    return image_id


def _wait_cached(glance: httpx.Client, image_id: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        listing = glance.get("/v2/cache").json()
        entries = {e["image_id"]: e for e in listing["cached_images"]}
        if image_id in entries:
            return entries[image_id]
        assert time.monotonic() < deadline, listing
        time.sleep(0.1)


def test_an_admin_warms_the_cache_and_downloads_come_from_it(caching_cloud):
    with _client(caching_cloud, caching_cloud.token()) as glance:
        assert glance.get("/v2/cache").json() == {"cached_images": [], "queued_images": []}
        assert glance.put("/v2/cache/00000000-0000-0000-0000-000000000000").status_code == 404
        assert glance.put(f"/v2/cache/{_image(glance, None)}").status_code == 400  # no data
        first = _image(glance, b"a" * 4096)
        assert glance.put(f"/v2/cache/{first}").status_code == 202
        entry = _wait_cached(glance, first)
        assert entry["size"] == 4096 and entry["hits"] == 0
        assert glance.get(f"/v2/images/{first}/file").content == b"a" * 4096
        assert _wait_cached(glance, first)["hits"] == 1
        ranged = glance.get(f"/v2/images/{first}/file", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == b"a" * 10
        # A second image does not fit beside the first: the least recently used goes.
        second = _image(glance, b"b" * 4096)
        assert glance.put(f"/v2/cache/{second}").status_code == 202
        _wait_cached(glance, second)
        cached = [e["image_id"] for e in glance.get("/v2/cache").json()["cached_images"]]
        assert cached == [second]
        # Deleting the image takes it out of the cache; clearing empties it.
        assert glance.delete(f"/v2/images/{second}").status_code == 204
        assert glance.get("/v2/cache").json()["cached_images"] == []
        assert glance.put(f"/v2/cache/{first}").status_code == 202
        _wait_cached(glance, first)
        bad = glance.delete("/v2/cache", headers={"x-image-cache-clear-target": "invalid"})
        assert bad.status_code == 400
        assert glance.delete("/v2/cache").status_code == 204
        assert glance.get("/v2/cache").json() == {"cached_images": [], "queued_images": []}
        assert glance.get(f"/v2/images/{first}/file").content == b"a" * 4096  # from the store
    with _client(caching_cloud, caching_cloud.token("demo", project="demo")) as demo:
        assert demo.get("/v2/cache").status_code == 403


def test_without_the_cache_the_api_is_not_there(cloud: CloudRunner, admin_token: str):
    with _client(cloud, admin_token) as glance:
        assert glance.get("/v2/cache").status_code == 404
