"""Image locations as a user meets them: a cloud that shows them ([image]
show_multiple_locations, show_image_direct_url) and has an http store (`web`). Uploaded
data has its store's location; an image made from a URL on a web server (JSON patch,
or the 2.17 location API) serves that server's bytes, boots a server, and is refused
where Glance refuses it."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Event, Thread

import httpx
import pytest

from cumulo.common.config import ImageStoreConfig
from tests.cloudrunner import CloudRunner, free_port, running_cloud

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
RAW = os.urandom(3 * 1024 * 1024 + 4321)


SLOW_SIZE = 64 * 1024 * 1024
# Whether the last reader of /slow went away before the end.
slow_reader_left = Event()


class _Files(SimpleHTTPRequestHandler):
    """The directory's files, and /slow: 64 MiB at 64 KiB a tenth of a second."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass

    def do_HEAD(self) -> None:
        if self.path != "/slow":
            return super().do_HEAD()
        self.send_response(200)
        self.send_header("Content-Length", str(SLOW_SIZE))
        self.end_headers()

    def do_GET(self) -> None:
        if self.path != "/slow":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(SLOW_SIZE))
        self.end_headers()
        try:
            for _ in range(SLOW_SIZE // 65536):
                self.wfile.write(bytes(65536))
                time.sleep(0.1)
        except OSError:
            slow_reader_left.set()


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[str]:
    """A web server on loopback holding image files (it ignores Range: whole files)."""
    root = tmp_path_factory.mktemp("web")
    (root / "disk.raw").write_bytes(RAW)
    for name, extra in (("disk.qcow2", []), ("backed.qcow2", ["-b", "/etc/passwd", "-F", "raw"])):
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(root / name), "1M"]
        subprocess.run(cmd, check=True)
    server = ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(_Files, directory=str(root))
    )
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, web: str) -> Iterator[CloudRunner]:
    port = int(web.rsplit(":", 1)[1])

    def configure(config) -> None:
        config.image.stores = [ImageStoreConfig(id="file"), ImageStoreConfig(id="web", type="http")]
        config.image.show_multiple_locations = True
        config.image.show_image_direct_url = True
        config.image.web_download.allowed_ports = [80, 443, port]

    with running_cloud(tmp_path_factory.mktemp("image-locations"), configure) as runner:
        yield runner


def _client(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": token},
        timeout=60,
    )


@pytest.fixture(scope="module")
def admin(cloud: CloudRunner) -> Iterator[httpx.Client]:
    with _client(cloud, cloud.token()) as client:
        yield client


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner) -> Iterator[httpx.Client]:
    with _client(cloud, cloud.token("demo", project="demo")) as client:
        yield client


def _new_image(client: httpx.Client, disk_format: str = "raw", **body) -> dict:
    r = client.post(
        "/v2/images",
        json={"name": f"loc-{uuid.uuid4().hex[:8]}", "disk_format": disk_format,
              "container_format": "bare", **body},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def _add(client: httpx.Client, image_id: str, url: str, pos: str = "-", **location):
    value = {"url": url, "metadata": location.pop("metadata", {}), **location}
    return client.patch(
        f"/v2/images/{image_id}",
        json=[{"op": "add", "path": f"/locations/{pos}", "value": value}],
        headers=PATCH,
    )


def _wait_tasks(client: httpx.Client, image_id: str, status: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = client.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
        if tasks and all(t["status"] == status for t in tasks):
            return tasks
        time.sleep(0.2)
    raise AssertionError(f"tasks of {image_id} did not reach {status}: {tasks}")


def test_uploaded_data_has_its_store_location(cloud: CloudRunner, tmp_path: Path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(RAW[:65536])
    made = cloud.openstack("image", "create", "--file", str(disk), "--disk-format", "raw",
                           "--container-format", "bare", "uploaded", "-f", "json")  # fmt: skip
    shown = cloud.openstack("image", "show", made["id"], "-f", "json")
    locations = shown["properties"]["locations"]
    assert len(locations) == 1 and locations[0]["metadata"] == {"store": "file"}
    assert locations[0]["url"].startswith("file:///")
    assert locations[0]["url"].endswith(f"/{made['id']}")
    assert shown["properties"]["direct_url"] == locations[0]["url"]
    assert shown["properties"]["stores"] == "file"
    cloud.openstack("image", "delete", made["id"])


def test_a_url_makes_a_queued_image_active_and_serves_its_bytes(
    cloud: CloudRunner, admin: httpx.Client, web: str, tmp_path: Path
):
    image = _new_image(admin)
    assert image["locations"] == [] and "direct_url" not in image
    r = _add(admin, image["id"], f"{web}/disk.raw", metadata={"speed": "fast"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "active" and body["size"] == len(RAW)
    assert body["locations"] == [
        {"url": f"{web}/disk.raw", "metadata": {"speed": "fast", "store": "web"}}
    ]
    assert body["direct_url"] == f"{web}/disk.raw" and body["stores"] == "web"
    # Added directly: no hashing (Glance takes the location as it is).
    assert body["checksum"] is None and body["os_hash_value"] is None

    saved = tmp_path / "saved.raw"
    cloud.openstack("image", "save", "--file", str(saved), image["id"])
    assert saved.read_bytes() == RAW
    part = admin.get(f"/v2/images/{image['id']}/file", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == RAW[1000:2000]
    admin.delete(f"/v2/images/{image['id']}")


def test_locations_are_added_given_new_metadata_and_removed_by_admins(
    admin: httpx.Client, demo: httpx.Client, web: str
):
    image = _new_image(demo)
    first, second = f"{web}/disk.raw", f"{web}/disk.raw#mirror"
    assert _add(demo, image["id"], first).status_code == 200
    assert _add(demo, image["id"], second, metadata={"site": "b"}).status_code == 200
    shown = demo.get(f"/v2/images/{image['id']}").json()
    assert [loc["url"] for loc in shown["locations"]] == [first, second]
    r = _add(demo, image["id"], second, metadata={"site": "b"})
    assert r.status_code == 400 and "already exists" in r.json()["message"]

    # The same URLs with new metadata: allowed; another URL, or fewer: not.
    changed = [dict(loc, metadata={**loc["metadata"], "date": "2027-01-01"})
               for loc in shown["locations"]]  # fmt: skip
    replace = [{"op": "replace", "path": "/locations", "value": changed}]
    r = demo.patch(f"/v2/images/{image['id']}", json=replace, headers=PATCH)
    assert r.status_code == 200 and r.json()["locations"] == changed
    for value in ([changed[0]], [changed[0], {"url": f"{web}/disk.qcow2", "metadata": {}}]):
        replace = [{"op": "replace", "path": "/locations", "value": value}]
        r = demo.patch(f"/v2/images/{image['id']}", json=replace, headers=PATCH)
        assert r.status_code == 400, r.text
    assert demo.get(f"/v2/images/{image['id']}").json()["locations"] == changed

    # Removing a location is for admins; the last one stays (Glance's 403).
    remove = [{"op": "remove", "path": "/locations/0"}]
    assert demo.patch(f"/v2/images/{image['id']}", json=remove, headers=PATCH).status_code == 403
    r = admin.patch(f"/v2/images/{image['id']}", json=remove, headers=PATCH)
    assert r.status_code == 200 and [loc["url"] for loc in r.json()["locations"]] == [second]
    r = admin.patch(f"/v2/images/{image['id']}", json=remove, headers=PATCH)
    assert r.status_code == 403 and "Cannot remove last location" in r.json()["message"]
    demo.delete(f"/v2/images/{image['id']}")


def test_removing_an_uploaded_location_deletes_its_data(
    cloud: CloudRunner, admin: httpx.Client, web: str
):
    image = _new_image(admin)
    r = admin.put(f"/v2/images/{image['id']}/file", content=RAW[:4096],
                  headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 204
    assert _add(admin, image["id"], f"{web}/disk.raw").status_code == 200
    stored = cloud.state_dir / "images" / "file" / image["id"]
    assert stored.exists()
    remove = [{"op": "remove", "path": "/locations/0"}]
    r = admin.patch(f"/v2/images/{image['id']}", json=remove, headers=PATCH)
    assert r.status_code == 200 and r.json()["stores"] == "web"
    assert not stored.exists()
    admin.delete(f"/v2/images/{image['id']}")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("gopher://info.cern.ch", "Invalid location"),
        ("file:///etc/passwd", "Invalid location"),
        ("http://127.0.0.1:1/nothing", "does not pass filtering"),  # a port not allowed
        ("{web}/no-such-file", "Invalid location"),  # no size from the web server
        ("http://[::1/disk", "Invalid location"),
        ("http://127.0.0.1:99999/disk", "does not pass filtering"),
        ("{web}/with space", "Invalid location"),
    ],
)
def test_bad_locations_are_refused(demo: httpx.Client, web: str, url: str, says: str):
    image = _new_image(demo)
    r = _add(demo, image["id"], url.format(web=web))
    assert r.status_code == 400 and says in r.json()["message"], r.text
    assert demo.get(f"/v2/images/{image['id']}").json()["status"] == "queued"
    demo.delete(f"/v2/images/{image['id']}")


def test_validation_data_must_agree(demo: httpx.Client, web: str):
    image = _new_image(demo)
    given = {"checksum": "1" * 32, "os_hash_algo": "sha512", "os_hash_value": "ab" * 64}
    r = _add(demo, image["id"], f"{web}/disk.raw", validation_data=given)
    assert r.status_code == 200 and r.json()["os_hash_value"] == "ab" * 64
    assert "validation_data" not in r.json()["locations"][0]
    other = dict(given, checksum="2" * 32)
    r = _add(demo, image["id"], f"{web}/disk.raw#2", validation_data=other)
    assert r.status_code == 409 and "already set with a different value" in r.text
    missing = {"os_hash_value": "ab" * 64}
    r = _add(demo, image["id"], f"{web}/disk.raw#3", validation_data=missing)
    assert r.status_code == 400
    demo.delete(f"/v2/images/{image['id']}")


def test_only_the_owners_members_add_locations(
    cloud: CloudRunner, admin: httpx.Client, demo: httpx.Client, web: str
):
    # Another project's member sees a public image but may not give it data.
    image = _new_image(admin, visibility="public")
    r = _add(demo, image["id"], f"{web}/disk.raw")
    assert r.status_code == 403, r.text
    r = demo.post(f"/v2/images/{image['id']}/locations", json={"url": f"{web}/disk.raw"})
    assert r.status_code == 403, r.text
    # Locations are the owner's to see: others get an empty list and no direct_url.
    assert _add(admin, image["id"], f"{web}/disk.raw").status_code == 200
    seen = demo.get(f"/v2/images/{image['id']}").json()
    assert seen["locations"] == [] and "direct_url" not in seen and seen["status"] == "active"
    # ...and GET .../locations is for services.
    assert demo.get(f"/v2/images/{image['id']}/locations").status_code == 403
    service_token = cloud.token("cumulo", cloud.config.identity.service_password, "service")
    with _client(cloud, service_token) as service:
        r = service.get(f"/v2/images/{image['id']}/locations")
    assert r.status_code == 200
    assert r.json() == [{"url": f"{web}/disk.raw", "metadata": {"store": "web"}}]
    admin.delete(f"/v2/images/{image['id']}")


def test_the_location_api_hashes_the_data_in_the_background(demo: httpx.Client, web: str):
    versions = httpx.get(f"{demo.base_url}/versions").json()["versions"]
    assert [v["id"] for v in versions if v["status"] == "CURRENT"] == ["v2.17"]
    stores = demo.get("/v2/info/stores").json()["stores"]
    web_store = {"id": "web", "description": "HTTP store web (read-only).", "read-only": "true"}
    assert web_store in stores

    url = f"{web}/disk.raw"
    sha256 = hashlib.sha256(RAW).hexdigest()
    image = _new_image(demo)
    given = {"os_hash_algo": "sha256", "os_hash_value": sha256}
    add = f"/v2/images/{image['id']}/locations"
    r = demo.post(add, json={"url": url, "validation_data": given})
    assert r.status_code == 202, r.text
    [task] = _wait_tasks(demo, image["id"], "success")
    assert task["type"] == "location_import" and task["input"]["loc_url"] == url
    shown = demo.get(f"/v2/images/{image['id']}").json()
    assert shown["status"] == "active" and shown["os_hash_algo"] == "sha256"
    assert shown["os_hash_value"] == sha256 and shown["checksum"] == hashlib.md5(RAW).hexdigest()
    assert shown["stores"] == "web" and shown["size"] == len(RAW)
    r = demo.post(f"/v2/images/{image['id']}/locations", json={"url": url})
    assert r.status_code == 409  # only a queued image takes one
    demo.delete(f"/v2/images/{image['id']}")

    # Without validation data: active at once, sha512 taken meanwhile.
    image = _new_image(demo)
    assert demo.post(f"/v2/images/{image['id']}/locations", json={"url": url}).status_code == 202
    _wait_tasks(demo, image["id"], "success")
    shown = demo.get(f"/v2/images/{image['id']}").json()
    assert shown["os_hash_value"] == hashlib.sha512(RAW).hexdigest()
    demo.delete(f"/v2/images/{image['id']}")

    # A hash that does not match: the task fails, the image is queued again.
    image = _new_image(demo)
    wrong = {"os_hash_algo": "sha512", "os_hash_value": "beefdead" * 16}
    add = f"/v2/images/{image['id']}/locations"
    r = demo.post(add, json={"url": url, "validation_data": wrong})
    assert r.status_code == 202
    [task] = _wait_tasks(demo, image["id"], "failure")
    assert "not matched" in task["message"]
    shown = demo.get(f"/v2/images/{image['id']}").json()
    assert shown["status"] == "queued" and shown["os_hash_value"] is None
    demo.delete(f"/v2/images/{image['id']}")


def test_deleting_an_image_stops_the_hashing_of_its_location(demo: httpx.Client, web: str):
    image = _new_image(demo)
    slow_reader_left.clear()
    r = demo.post(f"/v2/images/{image['id']}/locations", json={"url": f"{web}/slow"})
    assert r.status_code == 202
    deadline = time.monotonic() + 30
    while (shown := demo.get(f"/v2/images/{image['id']}").json())["status"] != "active":
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    # Active at once, the hash still being taken (the data comes in over minutes).
    assert shown["os_hash_algo"] == "sha512" and shown["os_hash_value"] is None
    assert shown["size"] == SLOW_SIZE
    [task] = demo.get(f"/v2/images/{image['id']}/tasks").json()["tasks"]
    assert task["status"] == "processing"
    assert demo.delete(f"/v2/images/{image['id']}").status_code == 204
    assert slow_reader_left.wait(10), "the hashing went on reading"


def test_without_secure_hash_the_given_hashes_are_taken(
    cloud: CloudRunner, demo: httpx.Client, web: str
):
    """[image] do_secure_hash = false: the data is not read; validation_data is the hash."""
    settings = cloud.cloud.image.config.image
    settings.do_secure_hash = False
    try:
        image = _new_image(demo)
        given = {"os_hash_algo": "sha256", "os_hash_value": "ab" * 32}
        body = {"url": f"{web}/disk.raw", "validation_data": given}
        assert demo.post(f"/v2/images/{image['id']}/locations", json=body).status_code == 202
        _wait_tasks(demo, image["id"], "success")
        shown = demo.get(f"/v2/images/{image['id']}").json()
        assert shown["status"] == "active" and shown["os_hash_value"] == "ab" * 32
        assert shown["os_hash_algo"] == "sha256" and shown["checksum"] is None
        demo.delete(f"/v2/images/{image['id']}")
    finally:
        settings.do_secure_hash = True


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"url": "{web}/disk.raw", "validation_data": {"os_hash_value": "ab" * 64}}, 400),
        ({"url": "{web}/disk.raw",
          "validation_data": {"os_hash_algo": "sha123", "os_hash_value": "ab" * 64}}, 400),
        ({"url": "{web}/disk.raw",
          "validation_data": {"os_hash_algo": "sha512", "os_hash_value": "ab" * 32}}, 400),
        ({"url": "file:///etc/passwd"}, 403),  # not the http store: for services only
    ],
)  # fmt: skip
def test_the_location_api_refuses_bad_requests(demo: httpx.Client, web: str, body, status):
    image = _new_image(demo)
    if "url" in body:
        body = dict(body, url=body["url"].format(web=web))
    r = demo.post(f"/v2/images/{image['id']}/locations", json=body)
    assert r.status_code == status, r.text
    shown = demo.get(f"/v2/images/{image['id']}").json()
    assert shown["status"] == "queued" and shown["locations"] == []
    assert demo.get(f"/v2/images/{image['id']}/tasks").json()["tasks"] == []
    demo.delete(f"/v2/images/{image['id']}")


def test_servers_boot_from_web_data_that_is_what_it_says(
    cloud: CloudRunner, admin: httpx.Client, web: str
):
    """The compute host inspects what it downloads: a location's data is never inspected
    by the Image service, so data that lies about its format fails the boot."""
    good = _new_image(admin, disk_format="qcow2")
    assert _add(admin, good["id"], f"{web}/disk.qcow2").status_code == 200
    lying = _new_image(admin, disk_format="raw")  # a qcow2 naming /etc/passwd
    assert _add(admin, lying["id"], f"{web}/backed.qcow2").status_code == 200
    for image, status in ((good, "ACTIVE"), (lying, "ERROR")):
        server = cloud.openstack(
            "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network",
            "private", "--wait", f"from-web-{status.lower()}", "-f", "json", check=False,
        )  # fmt: skip
        found = cloud.openstack("server", "show", f"from-web-{status.lower()}", "-f", "json")
        assert found["status"] == status, (server.stderr, found)
        cloud.openstack("server", "delete", "--wait", found["id"])
    for image in (good, lying):
        admin.delete(f"/v2/images/{image['id']}")
