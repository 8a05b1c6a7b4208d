"""Personality files (file injection, below 2.57) and the hostnames servers get from
their names, as a user sees them: the `openstack` CLI and the raw API on the shared
cloud, the files read back from the config drive the (fake) hypervisor was given and
from the metadata service as the guest's proxy asks it."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_servers import demo, image  # noqa: F401 - fixture
from tests.functional.test_metadata_service import _as_proxy


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _compute(cloud: CloudRunner, version: str | None = None) -> httpx.Client:
    headers = {"X-Auth-Token": cloud.token("demo", project="demo")}
    if version:
        headers["OpenStack-API-Version"] = f"compute {version}"
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1", headers=headers, timeout=30
    )


def _drive(cloud: CloudRunner, server_id: str) -> dict[str, bytes]:
    """Every file of the config drive the (fake) hypervisor was given for the guest."""
    for manager in cloud.cloud.compute.managers:
        guest = manager.driver.guests.get(server_id)
        if guest is not None:
            return dict(guest.spec.config_drive or {})
    raise AssertionError(f"no host runs {server_id}")


def _guest(cloud: CloudRunner, server_id: str) -> dict:
    shown = demo(cloud, "server", "show", server_id, "-f", "json")
    [ip] = shown["addresses"]["private"]
    return {"id": server_id, "project": shown["project_id"], "ip": ip}


def _poll_active(cloud: CloudRunner, server_id: str) -> bool:
    deadline = time.monotonic() + 60
    while True:
        shown = demo(cloud, "server", "show", server_id, "-f", "json")
        if shown["status"] == "ACTIVE" and shown["OS-EXT-STS:task_state"] is None:
            return True
        assert shown["status"] != "ERROR" and time.monotonic() < deadline, shown["status"]
        time.sleep(0.2)


@pytest.fixture(scope="module")
def network(cloud: CloudRunner) -> str:
    return demo(cloud, "network", "show", "private", "-f", "json")["id"]


def _body(image: str, network: str, **extra) -> dict:  # noqa: F811
    return {
        "server": {
            "name": _name("pers"),
            "imageRef": image,
            "flavorRef": "1",
            "networks": [{"uuid": network}],
            **extra,
        }
    }


def test_injected_files_reach_the_guest_on_the_config_drive_and_metadata_service(
    cloud: CloudRunner,
    image: str,  # noqa: F811
    network: str,
):
    # The raw API: python-openstackclient 10.5's `server create --file` hands the SDK an
    # open file, which it cannot serialize (a client bug: the request is never sent).
    personality = [{"path": "/etc/motd", "contents": _b64("hello from personality\n")}]
    with _compute(cloud, "2.56") as api:
        body = _body(image, network, personality=personality, config_drive=True)
        r = api.post("/servers", json=body)
        assert r.status_code == 202, r.text
        server = r.json()["server"]
    _poll_active(cloud, server["id"])
    drive = _drive(cloud, server["id"])
    meta = json.loads(drive["openstack/latest/meta_data.json"])
    assert meta["files"] == [{"path": "/etc/motd", "content_path": "/content/0000"}]
    assert drive["openstack/content/0000"] == b"hello from personality\n"
    with _as_proxy(cloud, _guest(cloud, server["id"])) as md:
        served = md.get("/openstack/latest/meta_data.json").json()
        assert served["files"] == meta["files"]
        content = md.get("/openstack/content/0000")
        assert content.status_code == 200 and content.content == b"hello from personality\n"
        assert md.get("/openstack/content").text == "0000"
        assert md.get("/openstack/content/0001").status_code == 404
    # A rebuild replaces them: the new files only (none given: none left).
    with _compute(cloud) as api:
        r = api.post(
            f"/servers/{server['id']}/action",
            json={
                "rebuild": {
                    "imageRef": image,
                    "personality": [{"path": "/etc/rebuilt", "contents": _b64("rebuilt")}],
                }
            },
        )
        assert r.status_code == 202, r.text
        assert "personality" not in r.json()["server"]
    _poll_active(cloud, server["id"])
    drive = _drive(cloud, server["id"])
    assert json.loads(drive["openstack/latest/meta_data.json"])["files"] == [
        {"path": "/etc/rebuilt", "content_path": "/content/0000"}
    ]
    assert drive["openstack/content/0000"] == b"rebuilt"
    with _compute(cloud) as api:
        r = api.post(f"/servers/{server['id']}/action", json={"rebuild": {"imageRef": image}})
        assert r.status_code == 202, r.text
    _poll_active(cloud, server["id"])
    drive = _drive(cloud, server["id"])
    assert "files" not in json.loads(drive["openstack/latest/meta_data.json"])
    assert not [name for name in drive if name.startswith("openstack/content/")]
    demo(cloud, "server", "delete", "--wait", server["id"])


def test_a_rebuild_gives_the_guest_the_new_admin_password_on_its_config_drive(
    cloud: CloudRunner,
    image: str,  # noqa: F811
    network: str,
):
    with _compute(cloud) as api:
        r = api.post("/servers", json=_body(image, network, config_drive=True))
        assert r.status_code == 202, r.text
        server = r.json()["server"]
        _poll_active(cloud, server["id"])
        built = json.loads(_drive(cloud, server["id"])["openstack/latest/meta_data.json"])
        assert built["admin_pass"] == server["adminPass"]
        # The password the user gives, then a new random one that the response shows.
        action = f"/servers/{server['id']}/action"
        r = api.post(action, json={"rebuild": {"imageRef": image, "adminPass": "Rebuilt-Pass-1"}})
        assert r.status_code == 202, r.text
        assert r.json()["server"]["adminPass"] == "Rebuilt-Pass-1"
        _poll_active(cloud, server["id"])
        meta = json.loads(_drive(cloud, server["id"])["openstack/latest/meta_data.json"])
        assert meta["admin_pass"] == "Rebuilt-Pass-1"
        r = api.post(action, json={"rebuild": {"imageRef": image}})
        assert r.status_code == 202, r.text
        given = r.json()["server"]["adminPass"]
        assert given not in ("Rebuilt-Pass-1", server["adminPass"])
        _poll_active(cloud, server["id"])
        meta = json.loads(_drive(cloud, server["id"])["openstack/latest/meta_data.json"])
        assert meta["admin_pass"] == given
        r = api.post(action, json={"rebuild": {"imageRef": image, "adminPass": 12}})
        assert r.status_code == 400, r.text
        assert "adminPass" in r.json()["badRequest"]["message"]
    demo(cloud, "server", "delete", "--wait", server["id"])


@pytest.mark.parametrize(
    ("version", "personality", "status", "text"),
    [
        # Nova's format check: contents must be base64.
        (None, [{"path": "/etc/a", "contents": "This is a test file."}], 400, "is not a 'base64'"),
        (None, [{"path": "/etc/a"}], 400, "contents"),
        (None, [{"path": "/etc/a", "contents": _b64("x"), "mode": "0644"}], 400, "'mode'"),
        (None, {"path": "/etc/a"}, 400, "is not of type 'array'"),
        # Removed in 2.57.
        ("2.57", [{"path": "/etc/a", "contents": _b64("x")}], 400, "'personality' was unexpected"),
        # The default quotas: 5 files, paths of 255, contents of 10240 (base64) bytes.
        (
            None,
            [{"path": f"/etc/f{i}", "contents": _b64("x")} for i in range(6)],
            403,
            "Personality file limit exceeded",
        ),
        (
            "2.56",
            [{"path": "/" + "p" * 255, "contents": _b64("x")}],
            403,
            "Personality file path exceeds maximum 255",
        ),
        (
            None,
            [{"path": "/etc/big", "contents": _b64("x" * 8000)}],
            403,
            "Personality file content exceeds maximum 10240",
        ),
    ],
)
def test_bad_personality_is_refused_and_creates_nothing(
    cloud: CloudRunner,
    image: str,  # noqa: F811
    network: str,
    version,
    personality,
    status,
    text,
):
    with _compute(cloud, version) as api:
        before = api.get("/servers").json()
        r = api.post("/servers", json=_body(image, network, personality=personality))
        assert r.status_code == status, r.text
        [(_, err)] = r.json().items()
        assert err["code"] == status and text in err["message"], err
        assert api.get("/servers").json() == before


def test_personality_limits_and_quotas_are_shown_below_2_57(cloud: CloudRunner):
    project = cloud.openstack("project", "show", "demo", "-f", "json")["id"]
    injected = {
        "injected_files": 5,
        "injected_file_content_bytes": 10240,
        "injected_file_path_bytes": 255,
    }
    with _compute(cloud, "2.56") as api:
        absolute = api.get("/limits").json()["limits"]["absolute"]
        assert absolute["maxPersonality"] == 5 and absolute["maxPersonalitySize"] == 10240
        quota = api.get(f"/os-quota-sets/{project}").json()["quota_set"]
        assert injected.items() <= quota.items()
    with _compute(cloud, "2.57") as api:
        absolute = api.get("/limits").json()["limits"]["absolute"]
        assert "maxPersonality" not in absolute and "maxPersonalitySize" not in absolute
        quota = api.get(f"/os-quota-sets/{project}").json()["quota_set"]
        assert not set(injected) & set(quota)


def test_rebuild_with_bad_personality_is_refused(
    cloud: CloudRunner,
    image: str,  # noqa: F811
    network: str,
):
    with _compute(cloud) as api:
        r = api.post("/servers", json=_body(image, network))
        assert r.status_code == 202, r.text
        server_id = r.json()["server"]["id"]
    _poll_active(cloud, server_id)
    with _compute(cloud, "2.57") as api:
        r = api.post(
            f"/servers/{server_id}/action",
            json={"rebuild": {"imageRef": image, "personality": []}},
        )
        assert r.status_code == 400 and "'personality' was unexpected" in r.text
    with _compute(cloud) as api:
        r = api.post(
            f"/servers/{server_id}/action",
            json={
                "rebuild": {
                    "imageRef": image,
                    "personality": [{"path": "/a", "contents": "plain text."}],
                }
            },
        )
        assert r.status_code == 400 and "base64" in r.text
        assert api.get(f"/servers/{server_id}").json()["server"]["status"] == "ACTIVE"
        assert api.delete(f"/servers/{server_id}").status_code == 204


# -- hostnames ---------------------------------------------------------------------------


def test_a_name_with_dots_gives_a_sanitized_hostname_and_2_94_keeps_an_fqdn(
    cloud: CloudRunner,
    image: str,  # noqa: F811
    network: str,
):
    with _compute(cloud, "2.93") as api:
        r = api.post("/servers", json=_body(image, network, name="guest-instance-1.domain.com"))
        assert r.status_code == 202, r.text
        sanitized = r.json()["server"]["id"]
        r = api.post(
            "/servers", json=_body(image, network, hostname="web01.example.com")
        )  # 2.90-2.93: no dots
        assert r.status_code == 400 and "hostname" in r.text
    with _compute(cloud, "2.94") as api:
        fqdn = "a-very-long-host-name-for-this-server-more-than-64-chars.example.com"
        r = api.post("/servers", json=_body(image, network, hostname=fqdn))
        assert r.status_code == 202, r.text
        qualified = r.json()["server"]["id"]
        for bad in ("bad host", "x" * 256, "", "emoji-☃"):
            r = api.post("/servers", json=_body(image, network, hostname=bad))
            assert r.status_code == 400 and "hostname" in r.text, bad
        _poll_active(cloud, sanitized)
        _poll_active(cloud, qualified)
        shown = api.get(f"/servers/{sanitized}").json()["server"]
        assert shown["OS-EXT-SRV-ATTR:hostname"] == "guest-instance-1-domain-com"
        assert api.get(f"/servers/{qualified}").json()["server"]["OS-EXT-SRV-ATTR:hostname"] == fqdn
        # Updates and rebuilds take an FQDN too from 2.94.
        r = api.put(f"/servers/{sanitized}", json={"server": {"hostname": "db.example.org"}})
        assert r.status_code == 200 and r.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == (
            "db.example.org"
        )
        r = api.post(
            f"/servers/{qualified}/action",
            json={"rebuild": {"imageRef": image, "hostname": "rebuilt.example.net"}},
        )
        assert r.status_code == 202, r.text
        _poll_active(cloud, qualified)
        with _as_proxy(cloud, _guest(cloud, qualified)) as md:
            meta = md.get("/openstack/latest/meta_data.json").json()
            assert meta["hostname"] == "rebuilt.example.net"
        for server_id in (sanitized, qualified):
            assert api.delete(f"/servers/{server_id}").status_code == 204
