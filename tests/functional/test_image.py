"""Images as a new user drives them: the real openstack CLI and openstacksdk."""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import CloudRunner


def _name(prefix: str = "img") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _qcow2(path: Path, size: str = "16M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def _digest(path: Path, algo: str) -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


def _store_files(cloud: CloudRunner) -> set[str]:
    return {p.name for p in (cloud.state_dir / "images").iterdir()}


@pytest.fixture
def image_http(cloud: CloudRunner, admin_token: str):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": admin_token},
        timeout=60,
    ) as client:
        yield client


def test_version_discovery_lists_v2_with_multiple_choices(cloud: CloudRunner):
    with httpx.Client(base_url=f"http://127.0.0.1:{cloud.config.ports.image}") as anon:
        root = anon.get("/")
        versions = anon.get("/versions")
    assert root.status_code == 300 and versions.status_code == 200
    current = [v for v in root.json()["versions"] if v["status"] == "CURRENT"]
    assert [v["id"] for v in current] == ["v2.16"]
    assert current[0]["links"][0]["href"].endswith("/v2/")


def test_catalog_lists_the_image_service(cloud: CloudRunner):
    catalog = cloud.openstack("catalog", "show", "image", "-f", "json")
    assert catalog["type"] == "image" and str(cloud.config.ports.image) in str(catalog)


def test_image_lifecycle_with_the_openstack_cli(cloud: CloudRunner, tmp_path: Path):
    disk = _qcow2(tmp_path / "disk.qcow2")
    name = _name()
    created = cloud.openstack(
        "image", "create", "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", name, "-f", "json",
    )  # fmt: skip
    assert created["status"] == "active"
    assert created["checksum"] == _digest(disk, "md5")
    assert created["size"] == disk.stat().st_size
    assert created["virtual_size"] == 16 * 1024 * 1024
    assert created["properties"]["os_hash_algo"] == "sha512"
    assert created["properties"]["os_hash_value"] == _digest(disk, "sha512")
    assert created["id"] in _store_files(cloud)

    listed = cloud.openstack("image", "list", "-f", "json")
    assert {"ID": created["id"], "Name": name, "Status": "active"} in listed

    cloud.openstack("image", "set", "--property", "os_distro=cirros", name)
    shown = cloud.openstack("image", "show", name, "-f", "json")
    assert shown["properties"]["os_distro"] == "cirros"

    out = tmp_path / "out.qcow2"
    cloud.openstack("image", "save", "--file", str(out), name)
    assert out.read_bytes() == disk.read_bytes()

    cloud.openstack("image", "delete", name)
    assert cloud.openstack("image", "show", name, check=False).returncode != 0
    assert created["id"] not in _store_files(cloud)


def test_sharing_with_another_project_who_accepts(cloud: CloudRunner, tmp_path: Path):
    disk = _qcow2(tmp_path / "shared.qcow2", "1M")
    name = _name("shared")
    image = cloud.openstack(
        "image", "create", "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", "--shared", name, "-f", "json",
    )  # fmt: skip
    demo_ids = lambda: {i["ID"] for i in cloud.openstack(  # noqa: E731
        "image", "list", "-f", "json", cloud="cumulo-demo")}  # fmt: skip
    assert image["id"] not in demo_ids()

    member = cloud.openstack("image", "add", "project", name, "demo", "-f", "json")
    assert member["status"] == "pending"
    cloud.openstack("image", "set", "--accept", image["id"], cloud="cumulo-demo")
    assert image["id"] in demo_ids()

    out = tmp_path / "as-demo.qcow2"
    cloud.openstack("image", "save", "--file", str(out), image["id"], cloud="cumulo-demo")
    assert out.read_bytes() == disk.read_bytes()
    # A member may not delete or change the image.
    denied = cloud.openstack("image", "delete", image["id"], cloud="cumulo-demo", check=False)
    assert denied.returncode != 0
    cloud.openstack("image", "delete", image["id"])


def test_sdk_create_image_with_glance_direct_import(cloud: CloudRunner, tmp_path: Path):
    disk = _qcow2(tmp_path / "import.qcow2", "8M")
    conn = cloud.sdk()
    image = conn.image.create_image(
        _name("import"),
        filename=str(disk),
        disk_format="qcow2",
        container_format="bare",
        import_method="glance-direct",
    )
    deadline = time.monotonic() + 30
    while (image := conn.image.get_image(image.id)).status != "active":
        assert image.status in ("uploading", "importing"), image.status
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert image.checksum == _digest(disk, "md5")
    assert image.virtual_size == 8 * 1024 * 1024
    assert conn.image.get_import_info().import_methods["value"] == [
        "glance-direct",
        "web-download",
        "copy-image",
        "glance-download",
    ]
    assert [s.id for s in conn.image.stores()] == ["file"]
    conn.image.delete_image(image)


def test_list_filters_sorting_and_next_links(image_http: httpx.Client):
    tag = _name("tag")
    ids = []
    for i in range(5):
        r = image_http.post(
            "/v2/images",
            json={"name": f"{tag}-{i}", "disk_format": "raw", "container_format": "bare",
                  "tags": [tag], "min_ram": i},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    seen, url = [], f"/v2/images?tag={tag}&sort_key=name&sort_dir=asc&limit=2"
    while url:
        body = image_http.get(url).json()
        seen += [i["name"] for i in body["images"]]
        url = body.get("next")
    assert seen == [f"{tag}-{i}" for i in range(5)]
    r = image_http.get("/v2/images", params={"tag": tag, "sort": "name:desc", "status": "queued"})
    assert [i["name"] for i in r.json()["images"]] == [f"{tag}-{i}" for i in range(4, -1, -1)]
    r = image_http.get("/v2/images", params={"tag": tag, "name": f"in:{tag}-1,{tag}-3"})
    assert sorted(i["name"] for i in r.json()["images"]) == [f"{tag}-1", f"{tag}-3"]
    r = image_http.get("/v2/images", params={"tag": tag, "sort_key": "nope"})
    assert r.status_code == 400 and r.json()["code"] == "400 Bad Request"
    for image_id in ids:
        assert image_http.delete(f"/v2/images/{image_id}").status_code == 204


def test_hidden_images_and_json_patch(image_http: httpx.Client):
    r = image_http.post("/v2/images", json={"name": _name(), "os_hidden": True})
    image = r.json()
    listed = {i["id"] for i in image_http.get("/v2/images").json()["images"]}
    hidden = {i["id"] for i in image_http.get("/v2/images?os_hidden=true").json()["images"]}
    assert image["id"] not in listed and image["id"] in hidden
    patch = [
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
        {"op": "replace", "path": "/os_hidden", "value": False},
        {"op": "replace", "path": "/protected", "value": True},
    ]
    r = image_http.patch(
        f"/v2/images/{image['id']}",
        json=patch,
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["hw_disk_bus"] == "virtio" and r.json()["protected"] is True
    assert image_http.delete(f"/v2/images/{image['id']}").status_code == 403
    image_http.patch(
        f"/v2/images/{image['id']}",
        json=[{"op": "replace", "path": "/protected", "value": False}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert image_http.delete(f"/v2/images/{image['id']}").status_code == 204


def test_download_ranges_and_deactivation(cloud: CloudRunner, image_http: httpx.Client):
    data = bytes(range(256)) * 4096
    image = image_http.post(
        "/v2/images", json={"name": _name(), "disk_format": "raw", "container_format": "bare"}
    ).json()
    r = image_http.put(
        f"/v2/images/{image['id']}/file",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 204, r.text
    full = image_http.get(f"/v2/images/{image['id']}/file")
    assert full.content == data
    assert full.headers["Content-MD5"] == hashlib.md5(data).hexdigest()
    part = image_http.get(f"/v2/images/{image['id']}/file", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    bad = image_http.get(f"/v2/images/{image['id']}/file", headers={"Range": "bytes=9999999-"})
    assert bad.status_code == 416

    # Deactivated: the owner (not an admin) may no longer download the data.
    project_id = image["owner"]
    assert image_http.post(f"/v2/images/{image['id']}/actions/deactivate").status_code == 204
    with httpx.Client(base_url=str(image_http.base_url)) as demo:
        demo.headers["X-Auth-Token"] = cloud.token("demo", project="demo")
        assert demo.get(f"/v2/images/{image['id']}").status_code == 404
    assert image_http.get(f"/v2/images/{image['id']}").json()["status"] == "deactivated"
    assert image_http.post(f"/v2/images/{image['id']}/actions/reactivate").status_code == 204
    assert image_http.get(f"/v2/images/{image['id']}").json()["owner"] == project_id
    assert image_http.delete(f"/v2/images/{image['id']}").status_code == 204
