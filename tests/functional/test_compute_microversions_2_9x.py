"""Compute microversions 2.93 to 2.96, each as its api-ref entry says, and the version
before it unchanged: with the `openstack` CLI and the raw API, on a cloud of three
compute hosts (two fake) with Block Storage's file backend, whose volume data is read
back. Block Storage's os-reimage (3.68), which 2.93 is built on, is tested here too."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.test_compute_flavors import compute

MAIN = "mv29x-main"
PATTERN_A = b"image-A-bytes!" * 64
PATTERN_B = b"image-B-other-bytes?" * 64


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with running_cloud(tmp_path_factory.mktemp("mv29x"), three_hosts) as runner:
        yield runner


def three_hosts(config) -> None:
    """MAIN and two fake hosts, reporting often enough for a forced-down host to show."""
    config.compute.host = MAIN
    config.compute.fake_hosts = 2
    config.compute.report_interval = 0.5
    config.compute.service_down_time = 3


@pytest.fixture(scope="module")
def admin_token(cloud: CloudRunner) -> str:
    return cloud.token("admin")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def _raw_image(cloud: CloudRunner, tmp_path: Path, pattern: bytes, **properties: str) -> str:
    """A raw 1 MiB image starting with `pattern`."""
    path = tmp_path / f"{uuid.uuid4().hex}.raw"
    path.write_bytes(pattern + b"\0" * ((1 << 20) - len(pattern)))
    extra = [arg for k, v in properties.items() for arg in ("--property", f"{k}={v}")]
    created = cloud.openstack(
        "image", "create", _name("img"), "--file", str(path), "--disk-format", "raw",
        "--container-format", "bare", "--public", *extra, "-f", "json",
    )  # fmt: skip
    return created["id"]


@pytest.fixture(scope="module")
def images(cloud: CloudRunner, tmp_path_factory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("images")
    return _raw_image(cloud, tmp, PATTERN_A), _raw_image(cloud, tmp, PATTERN_B)


def _volume_bytes(cloud: CloudRunner, volume_id: str, tmp_path: Path, size: int) -> bytes:
    """The first bytes of the volume's data on the file backend, whatever its format."""
    raw = tmp_path / f"{volume_id}.raw"
    source = cloud.state_dir / "volumes" / f"volume-{volume_id}"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(source), str(raw)], check=True)
    with raw.open("rb") as f:
        return f.read(size)


def _volumes(cloud: CloudRunner, token: str, microversion: str = "3.68") -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": f"volume {microversion}"},
        timeout=30,
    )


def _volume_status(api: httpx.Client, volume_id: str, status: str) -> dict:
    def done() -> dict | None:
        volume = api.get(f"/volumes/{volume_id}").json()["volume"]
        assert volume["status"] != "error", volume
        return volume if volume["status"] == status else None

    return _eventually(done, f"volume {volume_id} to be {status}")


def _server_status(api: httpx.Client, server_id: str, status: str) -> dict:
    def done() -> dict | None:
        server = api.get(f"/servers/{server_id}").json()["server"]
        assert server["status"] != "ERROR" or status == "ERROR", server.get("fault")
        settled = server["status"] == status and not server["OS-EXT-STS:task_state"]
        return server if settled else None

    return _eventually(done, f"server {server_id} to be {status}")


def _boot_from_volume(cloud: CloudRunner, image: str) -> tuple[dict, str]:
    server = cloud.openstack(
        "server", "create", "--image", image, "--boot-from-volume", "1", "--flavor", "m1.nano",
        "--nic", "none", "--wait", _name("bfv"), "-f", "json",
    )  # fmt: skip
    [attached] = server["volumes_attached"]
    volume_id = attached["id"] if isinstance(attached, dict) else attached.split("'")[1]
    return server, volume_id


def test_the_version_document_offers_2_96(cloud: CloudRunner, admin_token: str):
    port = cloud.config.ports.compute
    listed = {v["id"]: v for v in httpx.get(f"http://127.0.0.1:{port}/").json()["versions"]}
    assert listed["v2.1"]["min_version"] == "2.1"
    assert tuple(map(int, listed["v2.1"]["version"].split("."))) >= (2, 96)
    with compute(cloud, admin_token, "2.96") as api:
        r = api.get("/servers")
        assert r.status_code == 200 and r.headers["OpenStack-API-Version"] == "compute 2.96"


def test_3_68_reimage_replaces_a_volumes_data_with_the_image(
    cloud: CloudRunner, admin_token: str, images, tmp_path: Path
):
    image_a, image_b = images
    with _volumes(cloud, admin_token) as api, _volumes(cloud, admin_token, "3.67") as old:
        made = api.post(
            "/volumes", json={"volume": {"size": 1, "imageRef": image_a, "name": _name("v")}}
        )
        assert made.status_code == 202, made.text
        volume_id = made.json()["volume"]["id"]
        _volume_status(api, volume_id, "available")
        action = f"/volumes/{volume_id}/action"
        assert old.post(action, json={"os-reimage": {"image_id": image_b}}).status_code == 404
        bad = api.post(action, json={"os-reimage": {"image_id": image_b, "other": 1}})
        assert bad.status_code == 400
        assert api.post(action, json={"os-reimage": {}}).status_code == 400
        missing = api.post(action, json={"os-reimage": {"image_id": str(uuid.uuid4())}})
        assert missing.status_code == 404
        r = api.post(action, json={"os-reimage": {"image_id": image_b}})
        assert r.status_code == 202, r.text
        volume = _volume_status(api, volume_id, "available")
        assert volume["volume_image_metadata"]["image_id"] == image_b
        assert _volume_bytes(cloud, volume_id, tmp_path, len(PATTERN_B)) == PATTERN_B
        # A reserved volume only with reimage_reserved.
        attachment = api.post(
            "/attachments",
            json={"attachment": {"volume_uuid": volume_id, "instance_uuid": str(uuid.uuid4())}},
        ).json()["attachment"]
        _volume_status(api, volume_id, "reserved")
        refused = api.post(action, json={"os-reimage": {"image_id": image_a}})
        assert refused.status_code == 400 and "reserved" in refused.text
        r = api.post(action, json={"os-reimage": {"image_id": image_a, "reimage_reserved": True}})
        assert r.status_code == 202, r.text
        _volume_status(api, volume_id, "reserved")
        assert _volume_bytes(cloud, volume_id, tmp_path, len(PATTERN_A)) == PATTERN_A
        assert api.delete(f"/attachments/{attachment['id']}").status_code == 200
        _volume_status(api, volume_id, "available")
        assert api.delete(f"/volumes/{volume_id}").status_code == 202


def test_2_93_rebuild_of_a_volume_backed_server_reimages_its_root_volume(
    cloud: CloudRunner, admin_token: str, images, tmp_path: Path
):
    image_a, image_b = images
    server, volume_id = _boot_from_volume(cloud, image_a)
    assert _volume_bytes(cloud, volume_id, tmp_path, len(PATTERN_A)) == PATTERN_A
    action = f"/servers/{server['id']}/action"
    with compute(cloud, admin_token, "2.92") as old, compute(cloud, admin_token, "2.93") as api:
        # 2.92: only the image the volume holds.
        r = old.post(action, json={"rebuild": {"imageRef": image_b}})
        assert r.status_code == 400
        assert "Unable to rebuild with a different image for a volume-backed server" in r.text
        r = old.post(action, json={"rebuild": {"imageRef": image_a}})
        assert r.status_code == 202, r.text
        _server_status(old, server["id"], "ACTIVE")
        # 2.93: an image larger than the volume is refused.
        tmp = tmp_path / "big"
        tmp.mkdir()
        big = _raw_image(cloud, tmp, PATTERN_B, min_disk="5")
        r = api.post(action, json={"rebuild": {"imageRef": big}})
        assert r.status_code == 400 and "Volume is smaller" in r.text
    cloud.openstack(
        "--os-compute-api-version", "2.93", "server", "rebuild", "--image", image_b,
        "--reimage-boot-volume", "--wait", server["id"],
    )  # fmt: skip
    with compute(cloud, admin_token, "2.93") as api:
        rebuilt = _server_status(api, server["id"], "ACTIVE")
        assert rebuilt["image"] == ""  # still volume-backed
        assert [v["id"] for v in rebuilt["os-extended-volumes:volumes_attached"]] == [volume_id]
        actions = api.get(f"/servers/{server['id']}/os-instance-actions").json()
        assert [a["action"] for a in actions["instanceActions"]][:2] == ["rebuild", "rebuild"]
    assert _volume_bytes(cloud, volume_id, tmp_path, len(PATTERN_B)) == PATTERN_B
    with _volumes(cloud, admin_token) as volumes:
        volume = volumes.get(f"/volumes/{volume_id}").json()["volume"]
        assert volume["status"] == "in-use"
        assert volume["volume_image_metadata"]["image_id"] == image_b
        [attachment] = volume["attachments"]
        assert attachment["server_id"] == server["id"]
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_2_94_hostname_may_be_a_fully_qualified_domain_name(
    cloud: CloudRunner, admin_token: str, images
):
    image_a, _ = images
    fqdn = "web-1.example.org"
    body = {"name": _name("fq"), "flavorRef": "0", "imageRef": image_a, "networks": "none"}
    with compute(cloud, admin_token, "2.93") as old, compute(cloud, admin_token, "2.94") as api:
        r = old.post("/servers", json={"server": {**body, "hostname": fqdn}})
        assert r.status_code == 400 and "hostname" in r.text
        for bad in ("a" * 256, "under score!", "host/name"):
            r = api.post("/servers", json={"server": {**body, "hostname": bad}})
            assert r.status_code == 400, bad
        made = api.post("/servers", json={"server": {**body, "hostname": fqdn}})
        assert made.status_code == 202, made.text
        server_id = made.json()["server"]["id"]
        server = _server_status(api, server_id, "ACTIVE")
        assert server["OS-EXT-SRV-ATTR:hostname"] == fqdn
        long_name = ".".join(["label"] * 40)  # 239 characters
        r = api.put(f"/servers/{server_id}", json={"server": {"hostname": long_name}})
        assert r.status_code == 200 and r.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == long_name
        r = old.put(f"/servers/{server_id}", json={"server": {"hostname": fqdn}})
        assert r.status_code == 400
    cloud.openstack(
        "--os-compute-api-version", "2.94", "server", "set", "--hostname", fqdn, server_id
    )  # fmt: skip
    shown = cloud.openstack("server", "show", server_id, "-f", "json")
    assert shown["OS-EXT-SRV-ATTR:hostname"] == fqdn
    cloud.openstack("server", "delete", "--wait", server_id)


def test_2_95_evacuate_leaves_the_server_stopped_on_its_new_host(
    cloud: CloudRunner, admin_token: str, images
):
    image_a, _ = images
    dead = f"{MAIN}-fake1"
    server = cloud.openstack(
        "server", "create", "--image", image_a, "--flavor", "m1.nano", "--nic", "none",
        "--availability-zone", f"nova:{dead}", "--wait", _name("ev"), "-f", "json",
    )  # fmt: skip
    cloud.openstack(
        "--os-compute-api-version", "2.53", "compute", "service", "set", "--down", dead,
        "cumulo-compute",
    )  # fmt: skip
    try:
        cloud.openstack("--os-compute-api-version", "2.95", "server", "evacuate", server["id"])
        with compute(cloud, admin_token, "2.95") as api:
            moved = _server_status(api, server["id"], "SHUTOFF")
        assert moved["OS-EXT-SRV-ATTR:host"] not in (dead, None)
        assert moved["OS-EXT-STS:vm_state"] == "stopped"
        [migration] = cloud.openstack(
            "server", "migration", "list", "--server", server["id"], "-f", "json"
        )
        assert migration["Type"] == "evacuation" and migration["Status"] == "done"
        cloud.openstack("server", "start", server["id"])
        with compute(cloud, admin_token, "2.95") as api:
            _server_status(api, server["id"], "ACTIVE")
    finally:
        cloud.openstack(
            "--os-compute-api-version", "2.53", "compute", "service", "set", "--up", dead,
            "cumulo-compute",
        )  # fmt: skip
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_2_96_servers_show_the_zone_they_are_pinned_to(
    cloud: CloudRunner, admin_token: str, images
):
    image_a, _ = images
    pinned = cloud.openstack(
        "server", "create", "--image", image_a, "--flavor", "m1.nano", "--nic", "none",
        "--availability-zone", "nova", "--wait", _name("az"), "-f", "json",
    )  # fmt: skip
    free = cloud.openstack(
        "server", "create", "--image", image_a, "--flavor", "m1.nano", "--nic", "none",
        "--wait", _name("az"), "-f", "json",
    )  # fmt: skip
    # The CLI negotiates 2.96 and shows the field.
    assert pinned["pinned_availability_zone"] == "nova"
    assert cloud.openstack("server", "show", free["id"], "-f", "json")[
        "pinned_availability_zone"
    ] in (None, "None", "")
    with compute(cloud, admin_token, "2.96") as api, compute(cloud, admin_token, "2.95") as old:
        assert api.get(f"/servers/{pinned['id']}").json()["server"]["pinned_availability_zone"] == (
            "nova"
        )
        assert (
            api.get(f"/servers/{free['id']}").json()["server"]["pinned_availability_zone"] is None
        )
        detail = {s["id"]: s for s in api.get("/servers/detail").json()["servers"]}
        assert detail[pinned["id"]]["pinned_availability_zone"] == "nova"
        assert detail[free["id"]]["pinned_availability_zone"] is None
        updated = api.put(f"/servers/{free['id']}", json={"server": {"name": _name("az")}})
        assert "pinned_availability_zone" in updated.json()["server"]
        assert (
            "pinned_availability_zone" not in old.get(f"/servers/{pinned['id']}").json()["server"]
        )
        before = {s["id"]: s for s in old.get("/servers/detail").json()["servers"]}
        assert "pinned_availability_zone" not in before[pinned["id"]]
    for server in (pinned, free):
        cloud.openstack("server", "delete", "--wait", server["id"])
