"""Serial consoles (Nova's nova-serialproxy) with the fake driver: the URL from the
`openstack` CLI opens a websocket on the serial proxy whose frames reach the guest's
serial port (the fake guest's terminal echoes what is typed), before and after the
server is live-migrated to another host; tokens are checked as the VNC ones are."""

from __future__ import annotations

import subprocess
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.cloudrunner import CloudRunner, running_cloud

MAIN = "serial-main"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    def configure(config) -> None:
        config.compute.host = MAIN
        config.compute.fake_hosts = 1

    with running_cloud(tmp_path_factory.mktemp("serial"), configure) as runner:
        yield runner


@pytest.fixture(scope="module")
def server(cloud: CloudRunner, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "tiny.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True
    )
    image = cloud.openstack(
        "image", "create", "serial-img", "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    created = cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.nano", "--nic", "none",
        "--wait", f"serial-{uuid.uuid4().hex[:6]}", "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    yield {**created, "image_id": image["id"]}
    cloud.openstack("server", "delete", "--wait", created["id"], check=False)


def _host_of(cloud: CloudRunner, server: str) -> str:
    return cloud.openstack("server", "show", server, "-f", "json")["OS-EXT-SRV-ATTR:host"]


def _serial_url(cloud: CloudRunner, server: str) -> str:
    shown = cloud.openstack(
        "console", "url", "show", "--serial", server, "-f", "json", cloud="cumulo-demo"
    )
    assert shown["type"] == "serial"
    return shown["url"]


def _typed_back(url: str, text: str) -> bytes:
    """What the terminal sends back while `text` and Enter are typed (binary frames,
    as Tempest sends them)."""
    with connect(url, subprotocols=["binary"], open_timeout=10) as ws:
        ws.send(text.encode() + b"\r")
        received = b""
        deadline = time.monotonic() + 10
        while b"\r\n" not in received and time.monotonic() < deadline:
            received += ws.recv(timeout=10)
        return received


def test_the_serial_console_echoes_what_is_typed_and_the_log_shows_it(cloud, server):
    url = _serial_url(cloud, server["id"])
    parts = urlsplit(url)
    assert (parts.scheme, parts.port, parts.path) == ("ws", cloud.config.ports.serialproxy, "/")
    assert _typed_back(url, "echo hello serial") == b"echo hello serial\r\n"
    # A text frame is the same keys typed; a second connection is another session.
    with connect(url, open_timeout=10) as ws:
        ws.send("x\x7fy")  # typed x, erased it, typed y
        assert ws.recv(timeout=10) == b"x\b \by"
    log = cloud.openstack("console", "log", "show", server["id"])
    assert "echo hello serial" in log
    # Tempest's client: no `path` in the URL, so GET /websockify with the token a cookie.
    token = parse_qs(urlsplit(url).query)["token"][0]
    websockify = f"ws://127.0.0.1:{parts.port}/websockify"
    with connect(websockify, additional_headers={"Cookie": f"token={token}"}) as ws:
        ws.send(b"test_live_migration_serial_console")
        assert ws.recv(timeout=10) == b"test_live_migration_serial_console"


def test_admins_see_where_a_serial_token_leads(cloud, server):
    url = _serial_url(cloud, server["id"])
    token = parse_qs(urlsplit(url).query)["token"][0]
    with cloud.api("compute", path="/v2.1") as admin:
        found = admin.get(f"/os-console-auth-tokens/{token}")
    assert found.status_code == 200, found.text
    console = found.json()["console"]
    assert console["instance_uuid"] == server["id"]
    # The fake guest's terminal listens on this host; no unix socket path (QEMU's has one).
    assert console["host"] == "127.0.0.1" and console["port"] > 0
    assert console["internal_access_path"] is None


def test_the_proxy_refuses_bad_tokens_and_vnc_tokens(cloud, server):
    proxy = f"ws://127.0.0.1:{cloud.config.ports.serialproxy}"
    vnc = cloud.openstack(
        "console", "url", "show", "--novnc", server["id"], "-f", "json", cloud="cumulo-demo"
    )["url"]
    vnc_token = parse_qs(parse_qs(urlsplit(vnc).query)["path"][0].lstrip("?"))["token"][0]
    serial_token = parse_qs(urlsplit(_serial_url(cloud, server["id"])).query)["token"][0]
    for url in (f"{proxy}/?token=wrong", f"{proxy}/", f"{proxy}/?token={vnc_token}"):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=10)
        assert refused.value.response.status_code == 403
    # ...and a serial token does not open the VNC proxy.
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{cloud.config.ports.novncproxy}/?token={serial_token}")
    assert refused.value.response.status_code == 403


def test_the_api_shapes_other_projects_and_the_old_action(cloud, server):
    body = {"remote_console": {"protocol": "serial", "type": "serial"}}
    v26 = {"OpenStack-API-Version": "compute 2.6"}
    path = f"/servers/{server['id']}"
    with cloud.api("compute", path="/v2.1") as admin:
        made = admin.post(f"{path}/remote-consoles", json=body, headers=v26)
        assert made.status_code == 200, made.text
        assert made.json()["remote_console"]["protocol"] == "serial"
        wrong = {"remote_console": {"protocol": "serial", "type": "novnc"}}
        assert admin.post(f"{path}/remote-consoles", json=wrong, headers=v26).status_code == 400
        # Below 2.6 the action (Nova's os-getSerialConsole).
        old = admin.post(f"{path}/action", json={"os-getSerialConsole": {"type": "serial"}})
        assert old.status_code == 200, old.text
        assert old.json()["console"]["type"] == "serial"
        assert old.json()["console"]["url"].startswith("ws://")
        bad = admin.post(f"{path}/action", json={"os-getSerialConsole": {"type": "novnc"}})
        assert bad.status_code == 400
    # A member of another project does not see the server.
    project, user, password = f"serial-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}", "pw"
    cloud.openstack("project", "create", project)
    cloud.openstack("user", "create", "--password", password, user)
    cloud.openstack("role", "add", "--project", project, "--user", user, "member")
    with cloud.api("compute", cloud.token(user, password, project), "/v2.1") as other:
        foreign = other.post(f"{path}/remote-consoles", json=body, headers=v26)
    assert foreign.status_code == 404, foreign.text


def test_serial_consoles_switched_off_are_400(cloud, server):
    compute = cloud.cloud.compute.service.config.compute  # the running cloud's [compute]
    compute.serial_console_enabled = False
    try:
        shown = cloud.openstack(
            "console", "url", "show", "--serial", server["id"], check=False, cloud="cumulo-demo"
        )
    finally:
        compute.serial_console_enabled = True
    assert shown.returncode != 0 and "Unavailable console type serial" in shown.stderr


def test_the_console_follows_the_server_through_a_live_migration(cloud, server):
    """Tempest's LiveMigrationRemoteConsolesV26Test, with both hosts holding a console."""
    other = cloud.openstack(
        "server", "create", "--image", server["image_id"], "--flavor", "m1.nano",
        "--nic", "none", "--hint", f"different_host={server['id']}", "--wait",
        f"serial-{uuid.uuid4().hex[:6]}", "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    try:
        host = _host_of(cloud, server["id"])
        target = _host_of(cloud, other["id"])
        assert host != target
        before = _serial_url(cloud, server["id"])
        assert _typed_back(before, "before") == b"before\r\n"
        assert _typed_back(_serial_url(cloud, other["id"]), "other") == b"other\r\n"
        cloud.openstack(
            "server", "migrate", "--live-migration", "--host", target, "--block-migration",
            "--wait", server["id"],
        )  # fmt: skip
        assert _host_of(cloud, server["id"]) == target
        assert _typed_back(_serial_url(cloud, server["id"]), "after") == b"after\r\n"
        assert _typed_back(_serial_url(cloud, other["id"]), "other") == b"other\r\n"
    finally:
        cloud.openstack("server", "delete", "--wait", other["id"], check=False)
