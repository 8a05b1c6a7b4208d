"""Bad input to the Image API: the api-ref status, Glance's error body, no data left behind."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import CloudRunner

OCTETS = {"Content-Type": "application/octet-stream"}
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def _name(prefix: str = "bad") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": token},
        timeout=60,
    )


@pytest.fixture
def image_http(cloud: CloudRunner, admin_token: str) -> Iterator[httpx.Client]:
    with _client(cloud, admin_token) as client:
        yield client


def _assert_glance_error(r: httpx.Response, status: int, title: str, says: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == f"{status} {title}" and body["title"] == title
    assert says in body["message"], body["message"]


def _assert_no_data(cloud: CloudRunner, image_id: str) -> None:
    """Neither the store nor the staging area holds anything of the image."""
    assert image_id not in {p.name for p in (cloud.state_dir / "images").iterdir()}
    assert image_id not in {p.name for p in (cloud.state_dir / "images-staging").iterdir()}


def _new_image(client: httpx.Client, disk_format: str = "qcow2") -> dict:
    r = client.post(
        "/v2/images",
        json={"name": _name(), "disk_format": disk_format, "container_format": "bare"},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _qcow2(path: Path, *extra: str) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), "1M"], check=True)
    return path.read_bytes()


def test_data_that_is_not_the_declared_disk_format_is_refused(
    cloud: CloudRunner, image_http: httpx.Client, tmp_path: Path
):
    image = _new_image(image_http, disk_format="raw")
    data = _qcow2(tmp_path / "really.qcow2")
    r = image_http.put(f"/v2/images/{image['id']}/file", content=data, headers=OCTETS)
    _assert_glance_error(r, 400, "Bad Request", "does not match disk_format raw")
    assert image_http.get(f"/v2/images/{image['id']}").json()["status"] == "queued"
    _assert_no_data(cloud, image["id"])
    image_http.delete(f"/v2/images/{image['id']}")


def test_qcow2_with_a_backing_file_is_refused(
    cloud: CloudRunner, image_http: httpx.Client, tmp_path: Path
):
    image = _new_image(image_http)
    data = _qcow2(tmp_path / "backed.qcow2", "-b", "/etc/passwd", "-F", "raw")
    r = image_http.put(f"/v2/images/{image['id']}/file", content=data, headers=OCTETS)
    _assert_glance_error(r, 400, "Bad Request", "backing file")
    _assert_no_data(cloud, image["id"])
    image_http.delete(f"/v2/images/{image['id']}")


def test_qcow2_with_an_external_data_file_is_refused(
    cloud: CloudRunner, image_http: httpx.Client, tmp_path: Path
):
    image = _new_image(image_http)
    data = _qcow2(tmp_path / "ext.qcow2", "-o", f"data_file={tmp_path / 'ext.raw'}")
    r = image_http.put(f"/v2/images/{image['id']}/file", content=data, headers=OCTETS)
    _assert_glance_error(r, 400, "Bad Request", "external data file")
    _assert_no_data(cloud, image["id"])
    image_http.delete(f"/v2/images/{image['id']}")


def test_custom_property_of_the_wrong_type_is_refused(image_http: httpx.Client):
    name = _name()
    r = image_http.post("/v2/images", json={"name": name, "hw_disk_bus": 5})
    _assert_glance_error(r, 400, "Bad Request", "5 is not of type 'string'")
    r = image_http.post("/v2/images", json={"name": name, "min_ram": "lots"})
    _assert_glance_error(r, 400, "Bad Request", "is not of type 'integer'")
    assert image_http.get("/v2/images", params={"name": name}).json()["images"] == []
    image = _new_image(image_http)
    r = image_http.patch(
        f"/v2/images/{image['id']}",
        json=[{"op": "add", "path": "/hw_disk_bus", "value": ["virtio"]}],
        headers=PATCH,
    )
    _assert_glance_error(r, 400, "Bad Request", "is not of type 'string'")
    r = image_http.patch(
        f"/v2/images/{image['id']}",
        json=[{"op": "replace", "path": "/status", "value": "active"}],
        headers=PATCH,
    )
    _assert_glance_error(r, 403, "Forbidden", "Attribute 'status' is read-only.")
    r = image_http.patch(f"/v2/images/{image['id']}", json=[], headers={"Content-Type": "a/b"})
    assert r.status_code == 415 and "json-patch" in r.headers["Accept-Patch"]
    image_http.delete(f"/v2/images/{image['id']}")


def test_protected_image_cannot_be_deleted(image_http: httpx.Client):
    r = image_http.post("/v2/images", json={"name": _name(), "protected": True})
    image = r.json()
    r = image_http.delete(f"/v2/images/{image['id']}")
    _assert_glance_error(r, 403, "Forbidden", "is protected and cannot be deleted")
    image_http.patch(
        f"/v2/images/{image['id']}",
        json=[{"op": "replace", "path": "/protected", "value": False}],
        headers=PATCH,
    )
    assert image_http.delete(f"/v2/images/{image['id']}").status_code == 204


def test_another_projects_private_image_is_not_found(cloud: CloudRunner, image_http: httpx.Client):
    r = image_http.post("/v2/images", json={"name": _name(), "visibility": "private"})
    image = r.json()
    with _client(cloud, cloud.token("demo", project="demo")) as demo:
        r = demo.get(f"/v2/images/{image['id']}")
        _assert_glance_error(r, 404, "Not Found", f"No image found with ID {image['id']}")
        assert demo.delete(f"/v2/images/{image['id']}").status_code == 404
        listed = {i["id"] for i in demo.get("/v2/images?visibility=all").json()["images"]}
        assert image["id"] not in listed
    image_http.delete(f"/v2/images/{image['id']}")


def test_upload_to_an_active_image_conflicts(cloud: CloudRunner, image_http: httpx.Client):
    image = _new_image(image_http, disk_format="raw")
    first = b"\0" * 4096
    assert image_http.put(
        f"/v2/images/{image['id']}/file", content=first, headers=OCTETS
    ).is_success
    r = image_http.put(f"/v2/images/{image['id']}/file", content=b"x" * 10, headers=OCTETS)
    _assert_glance_error(r, 409, "Conflict", "from active to saving is not allowed")
    assert image_http.get(f"/v2/images/{image['id']}/file").content == first
    image_http.delete(f"/v2/images/{image['id']}")
    _assert_no_data(cloud, image["id"])


def test_upload_past_the_quota_is_413_and_leaves_nothing(
    cloud: CloudRunner, admin_http: httpx.Client
):
    from cumulo.common.config import ImageQuota

    # A new project with its own small quota: 2 images, 64 KiB.
    project_name = _name("quota")
    project = admin_http.post("/v3/projects", json={"project": {"name": project_name}})
    project_id = project.json()["project"]["id"]
    roles = {r["name"]: r["id"] for r in admin_http.get("/v3/roles").json()["roles"]}
    admin_id = admin_http.get(
        "/v3/users", params={"name": "admin"}
    ).json()["users"][0]["id"]  # fmt: skip
    admin_http.put(f"/v3/projects/{project_id}/users/{admin_id}/roles/{roles['member']}")
    assert cloud.cloud is not None and cloud.cloud.image is not None
    cloud.cloud.image.config.image.project_quotas[project_id] = ImageQuota(
        image_count=2, image_size_total=64 * 1024
    )
    token = cloud.token("admin", project=project_name)
    with _client(cloud, token) as client:
        image = _new_image(client, disk_format="raw")
        r = client.put(f"/v2/images/{image['id']}/file", content=b"\0" * 65 * 1024, headers=OCTETS)
        _assert_glance_error(r, 413, "Request Entity Too Large", "quota")
        assert client.get(f"/v2/images/{image['id']}").json()["status"] == "queued"
        _assert_no_data(cloud, image["id"])
        _new_image(client)
        r = client.post("/v2/images", json={"name": _name()})
        _assert_glance_error(r, 413, "Request Entity Too Large", "at most 2 images")
        usage = client.get("/v2/info/usage").json()["usage"]
        assert usage["image_count_total"] == {"limit": 2, "usage": 2}


def test_missing_or_revoked_token_is_401(cloud: CloudRunner):
    with _client(cloud, "") as anon:
        del anon.headers["X-Auth-Token"]
        _assert_glance_error(anon.get("/v2/images"), 401, "Unauthorized", "authentication")
    token = cloud.token("demo", project="demo")
    with _client(cloud, token) as demo:
        assert demo.get("/v2/images").status_code == 200
        cloud.openstack("token", "revoke", token)
        _assert_glance_error(demo.get("/v2/images"), 401, "Unauthorized", "authentication")


def test_locations_are_not_managed_unless_the_cloud_shows_them(image_http: httpx.Client):
    """Without [image] show_multiple_locations (the default) and an http store, images
    show no locations and none can be given (Glance's 403s)."""
    image = _new_image(image_http, disk_format="raw")
    assert "locations" not in image and "direct_url" not in image
    add = [{"op": "add", "path": "/locations/-",
            "value": {"url": "http://example.com/disk.raw", "metadata": {}}}]  # fmt: skip
    r = image_http.patch(f"/v2/images/{image['id']}", json=add, headers=PATCH)
    _assert_glance_error(r, 403, "Forbidden", "locations are invisible")
    r = image_http.post(f"/v2/images/{image['id']}/locations", json={"url": "http://x/y"})
    _assert_glance_error(r, 403, "Forbidden", "http store must be enabled")
    r = image_http.post("/v2/images", json={"name": _name(), "locations": []})
    _assert_glance_error(r, 403, "Forbidden", "'locations' is reserved")
    assert image_http.get(f"/v2/images/{image['id']}").json()["status"] == "queued"
    image_http.delete(f"/v2/images/{image['id']}")
