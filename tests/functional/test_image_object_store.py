"""The Image service's `object_store` store: a user's image uploaded with the `openstack`
CLI lands in the Object Storage (the service project's account; a Static Large Object
past the segment size), reads back identical (whole and by range), boots a server, and
its objects go with the image."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from cumulo.common.config import ImageStoreConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def swift_images(tmp_path_factory):
    state = tmp_path_factory.mktemp("image-swift")
    configure_state_dir(state)
    config = load_config(state)
    config.image.stores = [ImageStoreConfig(id="swift", type="object_store", segment_size_mb=1)]
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def service_objects(cloud: CloudRunner, container: str) -> list[str]:
    """What the service project's account holds in `container` (as the service user)."""
    token = cloud.token("cumulo", cloud.config.identity.service_password, "service")
    with httpx.Client(headers={"X-Auth-Token": token}, timeout=30) as http:
        project = http.get(
            f"{cloud.auth_url}/auth/tokens", headers={"X-Subject-Token": token}
        ).json()["token"]["project"]["id"]
        url = f"http://127.0.0.1:{cloud.config.ports.object_store}/v1/AUTH_{project}/{container}"
        found = http.get(url, params={"format": "json"})
        return [o["name"] for o in found.json()] if found.status_code == 200 else []


def test_images_live_in_the_object_store_and_boot(swift_images: CloudRunner, tmp_path) -> None:
    cloud = swift_images
    data = os.urandom(3 * MiB + 12345)  # a raw disk: three whole segments and a piece
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    image = cloud.openstack("image", "create", "--file", str(source), "--disk-format", "raw",
                            "--container-format", "bare", "in-swift", "-f", "json")  # fmt: skip
    assert image["status"] == "active"
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    shown = cloud.openstack("image", "show", image["id"], "-f", "json")
    assert shown["properties"]["stores"] == "swift"

    # In the Object Storage: a manifest, and its segments.
    assert service_objects(cloud, "glance") == [image["id"]]
    segments = service_objects(cloud, "glance_segments")
    assert segments == [f"{image['id']}/{n:05d}" for n in range(1, 5)]

    saved = tmp_path / "saved.raw"
    cloud.openstack("image", "save", "--file", str(saved), image["id"])
    assert saved.read_bytes() == data
    url = f"http://127.0.0.1:{cloud.config.ports.image}/v2/images/{image['id']}/file"
    with httpx.Client(headers={"X-Auth-Token": cloud.token()}, timeout=60) as http:
        part = http.get(url, headers={"Range": f"bytes={MiB - 10}-{MiB + 9}"})
        assert part.status_code == 206 and part.content == data[MiB - 10 : MiB + 10]

    # A server boots from it (the compute host fetches the data through the Image API).
    server = cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network",
        "private", "--wait", "from-swift", "-f", "json",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    cached = next(p for p in cloud.state_dir.rglob(image["id"]) if "image" in str(p.parent))
    assert hashlib.md5(cached.read_bytes()).hexdigest() == image["checksum"]
    cloud.openstack("server", "delete", "--wait", server["id"])

    cloud.openstack("image", "delete", image["id"])
    assert service_objects(cloud, "glance") == []
    assert service_objects(cloud, "glance_segments") == []
