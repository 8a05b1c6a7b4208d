"""Remote consoles through the noVNC proxy: console URLs carry a token the proxy checks,
and its websocket relays the guest's VNC bytes both ways (here to a small VNC-like
server standing in for QEMU's, which tests/e2e reaches for real)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cumulo.compute import consoles
from cumulo.compute.consoles import create_console_proxy_app
from tests.cloudrunner import CloudRunner

GREETING = b"RFB 003.008\n"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def demo(cloud: CloudRunner, *args: str, check: bool = True):
    return cloud.openstack(*args, cloud="cumulo-demo", check=check)


@pytest.fixture(scope="module")
def server(cloud: CloudRunner, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "tiny.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True, capture_output=True
    )
    image = cloud.openstack(
        "image", "create", _name("console-img"), "--file", str(path), "--disk-format",
        "qcow2", "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    name = _name("console")
    created = demo(
        cloud, "server", "create", "--image", image["id"], "--flavor", "m1.tiny",
        "--network", "private", "--wait", name, "-f", "json",
    )  # fmt: skip
    yield {**created, "image_id": image["id"]}
    demo(cloud, "server", "delete", "--wait", created["id"], check=False)
    cloud.openstack("image", "delete", image["id"])


@pytest.fixture()
def vnc_server():
    """A VNC-like server: greets like RFB, then echoes what it gets."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(GREETING)
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def _token_of(url: str) -> str:
    path = parse_qs(urlsplit(url).query)["path"][0]  # "?token=..."
    return parse_qs(path.lstrip("?"))["token"][0]


def test_console_url_points_at_the_proxy_with_a_token_admins_can_look_up(
    cloud: CloudRunner, server
):
    url = demo(cloud, "console", "url", "show", "--novnc", server["name"], "-f", "json")["url"]
    parts = urlsplit(url)
    assert (parts.scheme, parts.port, parts.path) == (
        "http",
        cloud.config.ports.novncproxy,
        "/vnc_lite.html",
    )
    token = _token_of(url)
    compute = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1"
    with cloud.http(cloud.token()) as admin:
        found = admin.get(f"{compute}/os-console-auth-tokens/{token}")
        assert found.status_code == 200, found.text
        console = found.json()["console"]
        # The fake hypervisor's screen (a blank VNC server on this host).
        assert console["instance_uuid"] == server["id"]
        assert console["host"] == "127.0.0.1" and console["port"] > 0  # the fake screen
        missing = admin.get(f"{compute}/os-console-auth-tokens/not-a-token")
        assert missing.status_code == 404
        assert "invalid or has expired" in missing.json()["itemNotFound"]["message"]
    with cloud.http(cloud.token("demo", project="demo")) as member:
        assert member.get(f"{compute}/os-console-auth-tokens/{token}").status_code == 403


def test_proxy_relays_the_console_and_refuses_bad_tokens_and_foreign_origins(
    cloud: CloudRunner, server, vnc_server: int
):
    db = cloud.cloud.compute.service.db
    token = cloud.run_async(
        consoles.issue_token(
            db, cloud.config, server["id"], {"host": "127.0.0.1", "port": vnc_server}
        )
    )
    proxy = f"ws://127.0.0.1:{cloud.config.ports.novncproxy}"
    with connect(f"{proxy}/websockify?token={token}", subprotocols=["binary"]) as ws:
        assert ws.subprotocol == "binary"
        assert ws.recv(timeout=10) == GREETING
        ws.send(b"\x01\x02client bytes")
        assert ws.recv(timeout=10) == b"\x01\x02client bytes"
    # A page on the proxy's own host may open it; another site's page may not.
    own = f"http://127.0.0.1:{cloud.config.ports.novncproxy}"
    with connect(f"{proxy}/?token={token}", origin=own) as ws:
        assert ws.recv(timeout=10) == GREETING
    for url, origin in (
        (f"{proxy}/?token={token}", "http://evil.example"),
        (f"{proxy}/?token=wrong", None),
        (f"{proxy}/", None),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=origin, open_timeout=10)
        assert refused.value.response.status_code == 403


def test_a_deleted_servers_console_is_closed(cloud: CloudRunner, server, vnc_server: int):
    name = _name("gone")
    other = demo(
        cloud, "server", "create", "--image", server["image_id"],
        "--flavor", "m1.tiny", "--network", "private", "--wait", name, "-f", "json",
    )  # fmt: skip
    db = cloud.cloud.compute.service.db
    token = cloud.run_async(
        consoles.issue_token(
            db, cloud.config, other["id"], {"host": "127.0.0.1", "port": vnc_server}
        )
    )
    demo(cloud, "server", "delete", "--wait", other["id"])
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{cloud.config.ports.novncproxy}/?token={token}", open_timeout=10)
    assert refused.value.response.status_code == 403


def test_proxy_serves_the_novnc_client_when_it_is_there(cloud: CloudRunner, tmp_path):
    (tmp_path / "vnc_lite.html").write_text("<title>noVNC</title>")
    config = cloud.config.model_copy(deep=True)
    config.compute.novnc_dir = str(tmp_path)
    app = create_console_proxy_app(cloud.cloud.compute.service.db, config)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            return await client.get("/vnc_lite.html")

    page = asyncio.run(fetch())
    assert page.status_code == 200 and "noVNC" in page.text


def test_a_fake_guest_has_a_real_vnc_screen(cloud: CloudRunner, server):
    """With the fake driver the console is a blank VNC screen: the RFB handshake a
    noVNC client makes goes through the proxy to it (version, no security, init, frame)."""
    import struct

    url = demo(cloud, "console", "url", "show", "--novnc", server["id"], "-f", "json")["url"]
    port = cloud.config.ports.novncproxy
    with connect(f"ws://127.0.0.1:{port}/?token={_token_of(url)}") as ws:
        assert ws.recv(timeout=10) == GREETING
        ws.send(GREETING)
        assert ws.recv(timeout=10) == bytes((1, 1))  # one security type: None
        ws.send(bytes((1,)))
        assert ws.recv(timeout=10) == struct.pack(">I", 0)
        ws.send(bytes((1,)))  # ClientInit, shared
        init = ws.recv(timeout=10)
        width, height = struct.unpack(">HH", init[:4])
        assert (width, height) == (640, 400) and b"cumulo fake guest" in init
        ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # a full update
        update = ws.recv(timeout=10)
        assert update[0] == 0 and struct.unpack(">H", update[2:4])[0] == 1
