"""Image import beyond glance-direct, as operators and users drive it: web-download from a
URL (with the operator's URL filters), several stores (import to some or all, copy-image,
delete from one store), the tasks each import leaves, and the schemas clients read."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import ImageStoreConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir, free_port


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A loopback web server with a qcow2 file, where web-download fetches from."""
    root = tmp_path_factory.mktemp("web")
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(root / "disk.qcow2"), "16M"]
    subprocess.run(cmd, check=True)
    server = ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(_Quiet, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory, files):
    """A cloud whose images may live in two stores, fetching URLs from `files`' port."""
    state = tmp_path_factory.mktemp("image-import")
    configure_state_dir(state)
    config = load_config(state)
    # `fast` is the default (first) store; `cheap` is preferred for reading (weight).
    config.image.stores = [ImageStoreConfig(id="fast"), ImageStoreConfig(id="cheap", weight=10)]
    port = int(files[1].rsplit(":", 1)[1])
    config.image.web_download.allowed_ports = [80, 443, port]
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def glance(two_stores):
    token = two_stores.token()
    with httpx.Client(
        base_url=f"http://127.0.0.1:{two_stores.config.ports.image}",
        headers={"X-Auth-Token": token},
        timeout=60,
    ) as client:
        yield client


def _wait(glance: httpx.Client, image_id: str, done) -> dict:
    deadline = time.monotonic() + 60
    while True:
        image = glance.get(f"/v2/images/{image_id}").json()
        if done(image):
            return image
        assert time.monotonic() < deadline, image
        time.sleep(0.2)


def _new_image(glance: httpx.Client, disk_format: str = "qcow2") -> str:
    body = {"name": f"imp-{uuid.uuid4().hex[:6]}", "disk_format": disk_format,
            "container_format": "bare"}  # fmt: skip
    return glance.post("/v2/images", json=body).json()["id"]


def test_a_user_imports_an_image_from_a_url_with_the_cli(two_stores, files, glance):
    root, base = files
    image = {"id": _new_image(glance)}
    two_stores.openstack(
        "image", "import", image["id"], "--method", "web-download", "--uri",
        f"{base}/disk.qcow2",
    )  # fmt: skip
    done = _wait(glance, image["id"], lambda i: i["status"] == "active")
    data = (root / "disk.qcow2").read_bytes()
    assert done["checksum"] == hashlib.md5(data).hexdigest()
    assert done["stores"] == "fast"  # the default store: the first configured
    assert done["os_glance_importing_to_stores"] == "" and done["os_glance_failed_import"] == ""
    assert glance.get(f"/v2/images/{image['id']}/file").content == data
    # The import is a task, named by the request that started it.
    tasks = glance.get(f"/v2/images/{image['id']}/tasks").json()["tasks"]
    assert [t["status"] for t in tasks] == ["success"]
    assert tasks[0]["type"] == "api_image_import"
    assert tasks[0]["input"]["import_req"]["method"]["name"] == "web-download"
    assert glance.get(f"/v2/tasks/{tasks[0]['id']}").json()["request_id"].startswith("req-")


def test_web_download_refuses_what_the_filters_do_not_allow_and_reports_failures(
    two_stores, files, glance
):
    image_id = _new_image(glance)

    def web(uri: str) -> httpx.Response:
        body = {"method": {"name": "web-download", "uri": uri}}
        return glance.post(f"/v2/images/{image_id}/import", json=body)

    for uri in ("ftp://127.0.0.1/disk.qcow2", "http://127.0.0.1:1/disk.qcow2", "nonsense"):
        refused = web(uri)
        assert refused.status_code == 400, (uri, refused.text)
    assert glance.get(f"/v2/images/{image_id}").json()["status"] == "queued"
    # Allowed, but the file is not there: the task fails and the image is queued again.
    assert web(f"{files[1]}/missing.qcow2").status_code == 202
    tasks = _wait_tasks(glance, image_id)
    assert tasks[-1]["status"] == "failure" and "404" in tasks[-1]["message"]
    image = glance.get(f"/v2/images/{image_id}").json()
    assert image["status"] == "queued" and image["os_glance_failed_import"] == "fast"
    assert "stores" not in image


def _wait_tasks(glance: httpx.Client, image_id: str) -> list[dict]:
    deadline = time.monotonic() + 60
    while True:
        tasks = glance.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
        if tasks and all(t["status"] in ("success", "failure") for t in tasks):
            return tasks
        assert time.monotonic() < deadline, tasks
        time.sleep(0.2)


def test_an_admin_keeps_an_image_in_several_stores(two_stores, glance, tmp_path: Path):
    stores = glance.get("/v2/info/stores").json()["stores"]
    assert [(s["id"], s.get("default", False), s["weight"]) for s in stores] == [
        ("fast", True, 0),
        ("cheap", False, 10),
    ]
    # Staged data imported to every store at once.
    image_id = _new_image(glance, "raw")
    data = b"x" * 4096
    staged = glance.put(
        f"/v2/images/{image_id}/stage",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert staged.status_code == 204
    body = {"method": {"name": "glance-direct"}, "all_stores": True}
    assert glance.post(f"/v2/images/{image_id}/import", json=body).status_code == 202
    image = _wait(glance, image_id, lambda i: i["status"] == "active")
    assert image["stores"] == "cheap,fast"  # highest weight first
    # Removed from one store, still readable from the other; never from the last one.
    assert glance.delete(f"/v2/stores/fast/{image_id}").status_code == 204
    assert glance.get(f"/v2/images/{image_id}").json()["stores"] == "cheap"
    assert glance.get(f"/v2/images/{image_id}/file").content == data
    assert glance.delete(f"/v2/stores/cheap/{image_id}").status_code == 409
    assert glance.delete(f"/v2/stores/nowhere/{image_id}").status_code == 404
    # copy-image puts it back; asking for a store that already has it is a conflict.
    copy = {"method": {"name": "copy-image"}, "stores": ["fast"]}
    assert glance.post(f"/v2/images/{image_id}/import", json=copy).status_code == 202
    image = _wait(glance, image_id, lambda i: i["stores"] == "cheap,fast")
    assert image["status"] == "active" and image["os_glance_importing_to_stores"] == ""
    again = glance.post(f"/v2/images/{image_id}/import", json=copy)
    assert again.status_code == 409
    unknown = {"method": {"name": "copy-image"}, "stores": ["nowhere"]}
    assert glance.post(f"/v2/images/{image_id}/import", json=unknown).status_code == 400
    # Deleting the image removes its data from every store.
    assert glance.delete(f"/v2/images/{image_id}").status_code == 204
    for store in ("fast", "cheap"):
        assert not (two_stores.state_dir / "images" / store / image_id).exists()


def test_copying_to_other_stores_is_for_admins(two_stores, glance):
    demo = two_stores.token("demo", project="demo")
    with httpx.Client(
        base_url=str(glance.base_url), headers={"X-Auth-Token": demo}, timeout=60
    ) as client:
        body = {"name": "mine", "disk_format": "raw", "container_format": "bare"}
        image_id = client.post("/v2/images", json=body).json()["id"]
        put = client.put(
            f"/v2/images/{image_id}/file",
            content=b"y" * 1024,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 204
        copy = {"method": {"name": "copy-image"}, "stores": ["cheap"]}
        assert client.post(f"/v2/images/{image_id}/import", json=copy).status_code == 403
        assert client.delete(f"/v2/stores/fast/{image_id}").status_code == 403
        assert client.get("/v2/tasks").status_code == 403


def test_clients_read_the_schemas_of_images_members_and_tasks(glance):
    for name, key in (("image", "name"), ("images", "images"), ("member", "member_id"),
                      ("members", "members"), ("task", "status"), ("tasks", "tasks")):  # fmt: skip
        schema = glance.get(f"/v2/schemas/{name}").json()
        assert schema["name"] == name and key in schema["properties"]
    image = glance.get("/v2/schemas/image").json()
    assert image["additionalProperties"] == {"type": "string"}
    assert "qcow2" in image["properties"]["disk_format"]["enum"]
    assert glance.get("/v2/schemas/nothing").status_code == 404
    assert glance.get("/v2/images/").status_code == 404
    assert glance.delete("/v2/images/").status_code == 404


def test_an_admin_imports_with_a_legacy_import_task(two_stores, files, glance):
    task = {
        "type": "import",
        "input": {
            "import_from": f"{files[1]}/disk.qcow2",
            "import_from_format": "qcow2",
            "image_properties": {
                "name": "tasked",
                "disk_format": "qcow2",
                "container_format": "bare",
            },  # fmt: skip
        },
    }
    created = glance.post("/v2/tasks", json=task)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while (shown := glance.get(f"/v2/tasks/{task_id}").json())["status"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert shown["status"] == "success" and shown["type"] == "import"
    image = glance.get(f"/v2/images/{shown['result']['image_id']}").json()
    assert image["status"] == "active" and image["name"] == "tasked"
    assert task_id in [t["id"] for t in glance.get("/v2/tasks").json()["tasks"]]
    # Unknown types, missing input and refused URLs are 400 before anything is made.
    assert glance.post("/v2/tasks", json={**task, "type": "export"}).status_code == 400
    assert glance.post("/v2/tasks", json={"type": "import", "input": {}}).status_code == 400
    refused = {**task, "input": {**task["input"], "import_from": "file:///etc/passwd"}}
    assert glance.post("/v2/tasks", json=refused).status_code == 400


def test_glance_download_copies_an_image_of_an_image_service_in_the_catalog(glance):
    # The source: an image with data and properties (some are copied, some not).
    source = _new_image(glance, "raw")
    data = b"z" * 8192
    glance.put(
        f"/v2/images/{source}/file",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    patch = [
        {"op": "add", "path": "/hw_cpu_cores", "value": "5"},
        {"op": "add", "path": "/os_distro", "value": "rhel"},
        {"op": "add", "path": "/speed", "value": "88mph"},
    ]
    patched = glance.patch(
        f"/v2/images/{source}",
        json=patch,
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert patched.status_code == 200
    body = {"name": "dst", "disk_format": "iso", "container_format": "ovf"}
    target = glance.post("/v2/images", json=body).json()["id"]

    def download(**method) -> httpx.Response:
        method = {"name": "glance-download", "glance_region": "RegionOne", **method}
        return glance.post(f"/v2/images/{target}/import", json={"method": method})

    assert download(glance_image_id="foo").status_code == 400  # not a UUID
    assert download(glance_image_id=source, glance_service_interface="public").status_code == 202
    done = _wait(glance, target, lambda i: i["status"] == "active")
    assert (done["disk_format"], done["container_format"]) == ("raw", "bare")
    assert done["hw_cpu_cores"] == "5" and done["os_distro"] == "rhel" and "speed" not in done
    assert glance.get(f"/v2/images/{target}/file").content == data
    # An unknown region: the task fails and the image is queued again.
    other = glance.post("/v2/images", json=body).json()["id"]
    method = {"name": "glance-download", "glance_region": "nowhere", "glance_image_id": source}
    assert glance.post(f"/v2/images/{other}/import", json={"method": method}).status_code == 202
    tasks = _wait_tasks(glance, other)
    assert tasks[-1]["status"] == "failure" and "nowhere" in tasks[-1]["message"]
    assert glance.get(f"/v2/images/{other}").json()["status"] == "queued"
