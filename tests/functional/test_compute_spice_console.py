"""SPICE consoles with the fake driver (its hosts' SPICE server answers a client's link
as a real one does): spice-html5 from the `openstack` CLI through this cloud's proxy,
spice-direct (2.99) from the raw API to the host's port that os-console-auth-tokens
gives an admin, the old os-getSPICEConsole action, and the refusals."""

from __future__ import annotations

import socket
import struct
import subprocess
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute

# A SPICE client's SpiceLinkMess for the main channel (as Tempest's test sends it).
LINK = struct.pack("<4sIIIIBBIIIII", b"REDQ", 2, 2, 42 - 16, 0, 1, 0, 1, 1, 18, 11, 9)


def _link_reply(head: bytes) -> tuple[bytes, int, int, int]:
    magic, major, minor, _size, error = struct.unpack_from("<4sIIII", head)
    return magic, major, minor, error


@pytest.fixture(scope="module")
def server(cloud: CloudRunner, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "tiny.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True
    )
    image = cloud.openstack(
        "image", "create", f"spice-{uuid.uuid4().hex[:6]}", "--file", str(path),
        "--disk-format", "qcow2", "--container-format", "bare", "-f", "json",
        cloud="cumulo-demo",
    )  # fmt: skip
    created = cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.nano", "--nic", "none",
        "--wait", f"spice-{uuid.uuid4().hex[:6]}", "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    yield created
    cloud.openstack("server", "delete", "--wait", created["id"], check=False)
    cloud.openstack("image", "delete", image["id"], check=False)


def test_spice_html5_through_the_proxy_reaches_the_guests_spice_server(cloud, server):
    shown = cloud.openstack(
        "console", "url", "show", "--spice", server["id"], "-f", "json", cloud="cumulo-demo"
    )
    assert shown["type"] == "spice-html5" and shown["protocol"] == "spice"
    parts = urlsplit(shown["url"])
    assert (parts.port, parts.path) == (cloud.config.ports.spicehtml5proxy, "/spice_auto.html")
    [token] = parse_qs(parts.query)["token"]
    ws_url = f"ws://127.0.0.1:{cloud.config.ports.spicehtml5proxy}/?token={token}"
    with connect(ws_url, subprotocols=["binary"], open_timeout=10) as ws:
        ws.send(LINK)
        head = ws.recv(timeout=10)
        while len(head) < 20:
            head += ws.recv(timeout=10)
    assert _link_reply(head) == (b"REDQ", 2, 2, 0)
    # A VNC token opens no SPICE console, nor a made-up one.
    vnc = cloud.openstack(
        "console", "url", "show", "--novnc", server["id"], "-f", "json", cloud="cumulo-demo"
    )
    vnc_token = parse_qs(parse_qs(urlsplit(vnc["url"]).query)["path"][0].lstrip("?"))["token"][0]
    for bad in (vnc_token, "nope"):
        with pytest.raises(InvalidStatus, match="403"):  # refused at the handshake
            connect(f"ws://127.0.0.1:{cloud.config.ports.spicehtml5proxy}/?token={bad}")


def test_spice_direct_gives_a_spice_client_the_hosts_port(cloud, server):
    with (
        compute(cloud, cloud.token("demo", project="demo"), "2.99") as demo,
        compute(cloud, cloud.token("admin"), "2.99") as admin,
    ):
        body = {"remote_console": {"protocol": "spice", "type": "spice-direct"}}
        made = demo.post(f"/servers/{server['id']}/remote-consoles", json=body)
        assert made.status_code == 200, made.text
        console = made.json()["remote_console"]
        assert (console["protocol"], console["type"]) == ("spice", "spice-direct")
        [token] = parse_qs(urlsplit(console["url"]).query)["token"]
        # Only admins (the proxy's credentials) learn where it leads.
        assert demo.get(f"/os-console-auth-tokens/{token}").status_code == 403
        shown = admin.get(f"/os-console-auth-tokens/{token}").json()["console"]
        assert shown["instance_uuid"] == server["id"]
        assert shown["tls_port"] is None and shown["internal_access_path"] is None
        with socket.create_connection((shown["host"], shown["port"]), timeout=10) as sock:
            sock.sendall(LINK)
            head = b""
            while len(head) < 20:
                head += sock.recv(20 - len(head))
        assert _link_reply(head) == (b"REDQ", 2, 2, 0)
        # Before 2.99 there is no spice-direct; the old action gives spice-html5 only.
        with compute(cloud, cloud.token("demo", project="demo"), "2.98") as old:
            r = old.post(f"/servers/{server['id']}/remote-consoles", json=body)
            assert r.status_code == 400 and "spice-direct" in r.text
        with compute(cloud, cloud.token("demo", project="demo")) as v21:
            action = f"/servers/{server['id']}/action"
            got = v21.post(action, json={"os-getSPICEConsole": {"type": "spice-html5"}})
            assert got.status_code == 200 and got.json()["console"]["type"] == "spice-html5"
            assert "/spice_auto.html?token=" in got.json()["console"]["url"]
            bad = v21.post(action, json={"os-getSPICEConsole": {"type": "spice-direct"}})
            assert bad.status_code == 400
