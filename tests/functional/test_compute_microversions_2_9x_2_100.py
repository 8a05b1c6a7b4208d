"""Compute microversions 2.97 to 2.101, each as its api-ref entry says, and the version
before it unchanged: server shares (2.97; no Shared File Systems service and no virtiofs
host here, so none is ever attached), image properties in the server (2.98), the
spice-direct console type and the console token's TLS port (2.99), scheduler hints in
the server (2.100), volume attach accepted without a body (2.101); with the raw API and
the `openstack` CLI, which negotiates 2.100."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute
from tests.functional.test_compute_microversions_2_9x import _eventually, _name


def _server_status(api: httpx.Client, server_id: str, status: str) -> dict:
    def done() -> dict | None:
        server = api.get(f"/servers/{server_id}").json()["server"]
        assert server["status"] != "ERROR", server.get("fault")
        settled = server["status"] == status and not server["OS-EXT-STS:task_state"]
        return server if settled else None

    return _eventually(done, f"server {server_id} to be {status}")


@pytest.fixture(scope="module")
def admin_token(cloud: CloudRunner) -> str:
    return cloud.token("admin")


def _image(cloud: CloudRunner, tmp_path: Path, **properties: str) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.raw"
    path.write_bytes(b"\0" * (1 << 20))
    extra = [arg for k, v in properties.items() for arg in ("--property", f"{k}={v}")]
    created = cloud.openstack(
        "image", "create", _name("img"), "--file", str(path), "--disk-format", "raw",
        "--container-format", "bare", "--public", *extra, "-f", "json",
    )  # fmt: skip
    return created["id"]


@pytest.fixture(scope="module")
def images(cloud: CloudRunner, tmp_path_factory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("img2100")
    first = _image(cloud, tmp, hw_disk_bus="virtio", os_distro="cirros", site_note="not-nova")
    second = _image(cloud, tmp, hw_video_model="vga", architecture="x86_64")
    yield first, second
    for image in (first, second):
        cloud.openstack("image", "delete", image, check=False)


def _boot(api: httpx.Client, image: str, hints: dict | None = None) -> str:
    body: dict[str, Any] = {
        "server": {"name": _name("mv"), "flavorRef": "0", "imageRef": image, "networks": "none"}
    }
    if hints is not None:
        body["os:scheduler_hints"] = hints
    made = api.post("/servers", json=body)
    assert made.status_code == 202, made.text
    server_id = made.json()["server"]["id"]
    _server_status(api, server_id, "ACTIVE")
    return server_id


@pytest.fixture(scope="module")
def server(cloud: CloudRunner, admin_token: str, images) -> str:
    with compute(cloud, admin_token, "2.100") as api:
        server_id = _boot(api, images[0])
    yield server_id
    cloud.openstack("server", "delete", "--wait", server_id, check=False)


def test_2_97_a_servers_shares_are_listed_and_none_can_be_attached(
    cloud: CloudRunner, admin_token: str, server: str
):
    shares = f"/servers/{server}/shares"
    share_id = str(uuid.uuid4())
    with compute(cloud, admin_token, "2.96") as old, compute(cloud, admin_token, "2.97") as api:
        assert old.get(shares).status_code == 404
        listed = api.get(shares)
        assert listed.status_code == 200 and listed.json() == {"shares": []}
        assert api.get(shares, params={"all_tenants": "1"}).status_code == 400
        shown = api.get(f"{shares}/{share_id}")
        assert shown.status_code == 404 and share_id in shown.json()["itemNotFound"]["message"]
        # The body first (Nova's schema): a share id is a UUID, a tag alphanumerics and '-'.
        for bad in ({}, {"share": {}}, {"share": {"share_id": "nope"}},
                    {"share": {"share_id": share_id, "tag": "no spaces"}},
                    {"share": {"share_id": share_id, "other": 1}}):  # fmt: skip
            assert api.post(shares, json=bad).status_code == 400, bad
        body = {"share": {"share_id": share_id, "tag": "data-1"}}
        # A running server: shares attach and detach only while it is stopped.
        running = api.post(shares, json=body)
        assert running.status_code == 409 and "vm_state active" in running.text
        assert api.delete(f"{shares}/{share_id}").status_code == 409
        assert api.post(f"/servers/{server}/action", json={"os-stop": None}).status_code == 202
        _server_status(api, server, "SHUTOFF")
        # Stopped: its host cannot mount a share in a guest (no virtiofs here).
        stopped = api.post(shares, json=body)
        assert stopped.status_code == 409, stopped.text
        assert "not configured correctly" in stopped.json()["conflictingRequest"]["message"]
        detached = api.delete(f"{shares}/{share_id}")
        assert detached.status_code == 404 and share_id in detached.text
        assert api.get(shares).json() == {"shares": []}
        assert api.post(f"/servers/{server}/action", json={"os-start": None}).status_code == 202
        _server_status(api, server, "ACTIVE")
    # Another project's server is not found.
    with compute(cloud, cloud.token("demo", project="demo"), "2.97") as demo:
        assert demo.get(shares).status_code == 404
        assert demo.post(shares, json=body).status_code == 404


def test_2_98_servers_show_their_images_known_properties(
    cloud: CloudRunner, admin_token: str, images
):
    first, second = images
    with compute(cloud, admin_token, "2.98") as api, compute(cloud, admin_token, "2.97") as old:
        server_id = _boot(api, first)
        image = api.get(f"/servers/{server_id}").json()["server"]["image"]
        assert image["id"] == first
        # The properties Nova knows; the site's own (site_note) are not among them.
        assert image["properties"]["hw_disk_bus"] == "virtio"
        assert image["properties"]["os_distro"] == "cirros"
        assert "site_note" not in image["properties"]
        assert set(image) == {"id", "links", "properties"}
        assert "properties" not in old.get(f"/servers/{server_id}").json()["server"]["image"]
        detail = {s["id"]: s for s in api.get("/servers/detail").json()["servers"]}
        assert detail[server_id]["image"]["properties"] == image["properties"]
        old_detail = {s["id"]: s for s in old.get("/servers/detail").json()["servers"]}
        assert "properties" not in old_detail[server_id]["image"]
        updated = api.put(f"/servers/{server_id}", json={"server": {"name": _name("up")}})
        assert updated.json()["server"]["image"]["properties"] == image["properties"]
        # A rebuild from another image: the server keeps that image's properties.
        rebuilt = api.post(f"/servers/{server_id}/action", json={"rebuild": {"imageRef": second}})
        assert rebuilt.status_code == 202, rebuilt.text
        props = rebuilt.json()["server"]["image"]["properties"]
        assert props["hw_video_model"] == "vga" and props["architecture"] == "x86_64"
        assert "hw_disk_bus" not in props and "os_distro" not in props
        _server_status(api, server_id, "ACTIVE")
        assert api.delete(f"/servers/{server_id}").status_code == 204


def test_2_99_spice_direct_console_type_and_the_tokens_tls_port(
    cloud: CloudRunner, admin_token: str, server: str
):
    consoles = f"/servers/{server}/remote-consoles"
    direct = {"remote_console": {"protocol": "spice", "type": "spice-direct"}}
    with compute(cloud, admin_token, "2.98") as old, compute(cloud, admin_token, "2.99") as api:
        # Before 2.99 spice-direct is no console type.
        r = old.post(consoles, json=direct)
        assert r.status_code == 400 and "spice-direct" in r.text
        # From 2.99 it is one (tests/functional/test_compute_spice_console.py connects).
        r = api.post(consoles, json=direct)
        assert r.status_code == 200, r.text
        spice_url = r.json()["remote_console"]["url"]
        [spice_token] = parse_qs(urlsplit(spice_url).query)["token"]
        shown = api.get(f"/os-console-auth-tokens/{spice_token}").json()["console"]
        assert shown["tls_port"] is None and shown["internal_access_path"] is None
        vnc = api.post(consoles, json={"remote_console": {"protocol": "vnc", "type": "novnc"}})
        assert vnc.status_code == 200, vnc.text
        url = vnc.json()["remote_console"]["url"]
        token = parse_qs(parse_qs(urlsplit(url).query)["path"][0].lstrip("?"))["token"][0]
        found = api.get(f"/os-console-auth-tokens/{token}").json()["console"]
        assert found["instance_uuid"] == server and found["tls_port"] is None
        assert "tls_port" not in old.get(f"/os-console-auth-tokens/{token}").json()["console"]
        # 2.99 takes no query parameter here; before it they were ignored.
        assert api.get(f"/os-console-auth-tokens/{token}", params={"x": "1"}).status_code == 400
        assert old.get(f"/os-console-auth-tokens/{token}", params={"x": "1"}).status_code == 200


def test_2_100_servers_show_the_scheduler_hints_they_were_created_with(
    cloud: CloudRunner, admin_token: str, images, server: str
):
    first, _ = images
    hints = {"same_host": server, "site_hint": ["a", "b"]}
    with compute(cloud, admin_token, "2.100") as api, compute(cloud, admin_token, "2.99") as old:
        hinted = _boot(api, first, hints)
        expected = {"same_host": [server], "site_hint": ["a", "b"]}
        assert api.get(f"/servers/{hinted}").json()["server"]["scheduler_hints"] == expected
        assert api.get(f"/servers/{server}").json()["server"]["scheduler_hints"] == {}
        detail = {s["id"]: s for s in api.get("/servers/detail").json()["servers"]}
        assert detail[hinted]["scheduler_hints"] == expected
        assert detail[server]["scheduler_hints"] == {}
        updated = api.put(f"/servers/{hinted}", json={"server": {"name": _name("up")}})
        assert updated.json()["server"]["scheduler_hints"] == expected
        assert "scheduler_hints" not in old.get(f"/servers/{hinted}").json()["server"]
        rebuilt = api.post(f"/servers/{hinted}/action", json={"rebuild": {"imageRef": first}})
        assert rebuilt.json()["server"]["scheduler_hints"] == expected
        _server_status(api, hinted, "ACTIVE")
    # The CLI negotiates 2.100 and shows them.
    shown = cloud.openstack("server", "show", hinted, "-f", "json")
    assert shown["scheduler_hints"] == expected
    assert shown["image"]
    cloud.openstack("server", "delete", "--wait", hinted)


def _volume_status(cloud: CloudRunner, volume_id: str, status: str) -> dict:
    def done() -> dict | None:
        volume = cloud.openstack("volume", "show", volume_id, "-f", "json")
        assert volume["status"] != "error", volume
        return volume if volume["status"] == status else None

    return _eventually(done, f"volume {volume_id} to be {status}")


def test_2_101_volume_attach_is_accepted_without_a_body(
    cloud: CloudRunner, admin_token: str, server: str
):
    first = cloud.openstack("volume", "create", "--size", "1", _name("v"), "-f", "json")["id"]
    second = cloud.openstack("volume", "create", "--size", "1", _name("v"), "-f", "json")["id"]
    attachments = f"/servers/{server}/os-volume_attachments"
    with compute(cloud, admin_token, "2.100") as old, compute(cloud, admin_token, "2.101") as api:
        _volume_status(cloud, first, "available")
        _volume_status(cloud, second, "available")
        before = old.post(attachments, json={"volumeAttachment": {"volumeId": first}})
        assert before.status_code == 200, before.text
        assert before.json()["volumeAttachment"]["volumeId"] == first
        accepted = api.post(attachments, json={"volumeAttachment": {"volumeId": second}})
        assert accepted.status_code == 202, accepted.text
        assert accepted.content == b""
        # The client watches the volume: it ends in-use, and the server lists it.
        _volume_status(cloud, second, "in-use")
        listed = api.get(attachments).json()["volumeAttachments"]
        assert {a["volumeId"] for a in listed} == {first, second}
        # The checks before the answer are unchanged: a volume attached already is 400,
        # an unknown one 404.
        again = api.post(attachments, json={"volumeAttachment": {"volumeId": second}})
        assert again.status_code == 400 and "already attached" in again.text
        missing = api.post(attachments, json={"volumeAttachment": {"volumeId": str(uuid.uuid4())}})
        assert missing.status_code == 404, missing.text
        for volume_id in (first, second):
            assert api.delete(f"{attachments}/{volume_id}").status_code == 202
    for volume_id in (first, second):
        _volume_status(cloud, volume_id, "available")
        cloud.openstack("volume", "delete", volume_id)
