"""Compute spread over processes: the controller on PostgreSQL + RabbitMQ, and a compute
host started as its own `cumulo compute` process. Boots land on the remote host over
the broker; killing that agent mid-build ends in ERROR, never a server stuck in BUILD;
the remote guest's VNC, serial and SPICE consoles open through the controller's proxies
(the host relays each to a TCP port), and follow the guest when it is live-migrated.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.client import connect

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.cluster import RABBIT, delete_queues, reachable
from tests.conftest import skip_or_fail
from tests.databases import ServerUnavailable, fresh_database
from tests.functional.test_compute_spice_console import LINK

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    namespace = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    try:
        with fresh_database("postgresql") as url:
            state = tmp_path_factory.mktemp("controller")
            configure_state_dir(state, database=url)
            config = load_config(state)
            config.messaging.transport_url = RABBIT
            config.messaging.namespace = namespace
            config.compute.host = "controller"
            config.compute.build_timeout = 4
            config.compute.report_interval = 1
            config.compute.service_down_time = 5
            write_config(state, config)
            runner = CloudRunner(state).start()
            try:
                yield runner
            finally:
                runner.stop()
                asyncio.run(delete_queues(namespace))
    except ServerUnavailable as exc:
        skip_or_fail(f"PostgreSQL is not reachable: {exc}")


def start_compute_host(
    controller: CloudRunner, tmp_path: Path, name: str, **compute
) -> subprocess.Popen:
    """A second host: the controller's config with its own compute settings."""
    state = tmp_path / name
    state.mkdir()
    shutil.copy(controller.state_dir / "cumulo.toml", state / "cumulo.toml")
    config = load_config(state)
    config.compute.host = name
    for key, value in compute.items():
        setattr(config.compute, key, value)
    write_config(state, config)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cumulo"), "-v", "compute", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OS_")},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        services = controller.openstack("compute", "service", "list", "-f", "json")
        if any(s["Host"] == name and s["State"] == "up" for s in services):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"cumulo compute exited:\n{proc.stdout.read()}")
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"compute host {name} never reported in")


@pytest.fixture(scope="module")
def image(controller: CloudRunner, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "tiny.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True
    )
    return controller.openstack(
        "image",
        "create",
        "tiny",
        "--file",
        str(path),
        "--disk-format",
        "qcow2",
        "--public",
        "-f",
        "json",
    )["id"]


def _wait(controller: CloudRunner, server: str, statuses: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = controller.openstack("server", "show", server, "-f", "json")
        if shown["status"] in statuses:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{server} still {shown['status']}")
        time.sleep(0.5)


def test_a_server_boots_on_a_remote_compute_host_and_its_consoles_reach_it(
    controller: CloudRunner, image, tmp_path
):
    name = f"remote-{uuid.uuid4().hex[:6]}"
    # Its console address is 127.0.0.2: not the loopback its fake guests' screens are on.
    proc = start_compute_host(controller, tmp_path, name, console_server_listen="127.0.0.2")
    try:
        server = controller.openstack(
            "server",
            "create",
            "--image",
            image,
            "--flavor",
            "m1.tiny",
            "--network",
            "public",
            "--availability-zone",
            f"nova:{name}",
            "--wait",
            "vm-remote",
            "-f",
            "json",
        )
        assert server["OS-EXT-SRV-ATTR:host"] == name
        assert server["addresses"]["public"]
        assert "login:" in controller.openstack("console", "log", "show", "vm-remote")
        _check_consoles_through_the_proxies(controller, server["id"])
        controller.openstack("server", "delete", "--wait", "vm-remote")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_killing_a_compute_agent_mid_build_ends_in_error(controller: CloudRunner, image, tmp_path):
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    proc = start_compute_host(controller, tmp_path, name, fake_spawn_delay=60.0)
    server = controller.openstack(
        "server",
        "create",
        "--image",
        image,
        "--flavor",
        "m1.tiny",
        "--network",
        "public",
        "--availability-zone",
        f"nova:{name}",
        "vm-doomed",
        "-f",
        "json",
    )
    deadline = time.monotonic() + 30
    while (
        controller.openstack("server", "show", server["id"], "-f", "json")["OS-EXT-STS:task_state"]
        != "spawning"
    ):
        assert time.monotonic() < deadline, "the build never reached spawning"
        time.sleep(0.3)
    proc.kill()  # the host dies mid-build
    proc.wait(10)
    failed = _wait(controller, server["id"], {"ERROR", "ACTIVE"}, timeout=30)
    assert failed["status"] == "ERROR"
    assert "timed out" in failed["fault"]["message"]
    # Once the dead host is seen down, deleting the server does not wait for it.
    deadline = time.monotonic() + 30
    while any(
        s["Host"] == name and s["State"] == "up"
        for s in controller.openstack("compute", "service", "list", "-f", "json")
    ):
        assert time.monotonic() < deadline, "the dead host is still reported up"
        time.sleep(0.5)
    controller.openstack("server", "delete", "--wait", server["id"])
    assert controller.openstack("port", "list", "--device-id", server["id"], "-f", "json") == []


def test_a_host_enrols_with_a_token_takes_boots_and_drains(
    controller: CloudRunner, image, tmp_path
):
    """A fresh state dir, the controller's Identity URL and a token: nothing else."""
    cumulo = str(Path(sys.executable).parent / "cumulo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    token = subprocess.run(
        [cumulo, "host", "token", "create", "--state-dir", str(controller.state_dir)],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    name = f"enrolled-{uuid.uuid4().hex[:6]}"
    state = tmp_path / name
    proc = subprocess.Popen(
        [cumulo, "-v", "compute", "--state-dir", str(state), "--host", name,
         "--join", controller.auth_url, "--token", token],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(
            s["Host"] == name and s["State"] == "up"
            for s in controller.openstack("compute", "service", "list", "-f", "json")
        ):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the enrolled host never reported in"
            time.sleep(0.5)
        assert (state / "cumulo.toml").stat().st_mode & 0o777 == 0o600
        server = controller.openstack(
            "server", "create", "--image", image, "--flavor", "m1.tiny", "--network", "public",
            "--availability-zone", f"nova:{name}", "--wait", f"vm-{name}", "-f", "json",
        )  # fmt: skip
        assert server["OS-EXT-SRV-ATTR:host"] == name
        # The token was for one host: a second one is refused, and nothing is written.
        again = subprocess.run(
            [cumulo, "compute", "--state-dir", str(tmp_path / "second"), "--join",
             controller.auth_url, "--token", token],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert again.returncode == 1 and "refused the enrolment (401)" in again.stderr
        assert not (tmp_path / "second" / "cumulo.toml").exists()
        # Disabled, it takes no new boots (the scheduler passes it over).
        controller.openstack("compute", "service", "set", "--disable", name, "nova-compute")
        refused = controller.openstack(
            "server", "create", "--image", image, "--flavor", "m1.tiny", "--network", "public",
            "--availability-zone", f"nova:{name}", "--wait", f"vm2-{name}", check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        shown = controller.openstack("server", "show", f"vm2-{name}", "-f", "json")
        assert shown["status"] == "ERROR"
        controller.openstack("server", "delete", "--wait", f"vm-{name}", f"vm2-{name}")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def console_token(controller: CloudRunner, server: str, kind: str) -> str:
    """A console URL from the CLI (`console url show --<kind>`), its token."""
    url = controller.openstack("console", "url", "show", f"--{kind}", server, "-f", "json")["url"]
    query = parse_qs(urlsplit(url).query)
    if kind == "novnc":  # noVNC's page, told its websocket's path: ?token=...
        query = parse_qs(query["path"][0].lstrip("?"))
    return query["token"][0]


def through_proxy(port: int, token: str, send: bytes, until: bytes) -> bytes:
    """What the console sends back through the proxy's websocket on `port` (after `send`),
    up to `until`."""
    with connect(f"ws://127.0.0.1:{port}/?token={token}", subprotocols=["binary"]) as ws:
        if send:
            ws.send(send)
        received = b""
        deadline = time.monotonic() + 30
        while until not in received:
            assert time.monotonic() < deadline, received
            received += ws.recv(timeout=10)
    return received


def console_at(controller: CloudRunner, token: str) -> dict:
    """Where the token leads (os-console-auth-tokens, admin): host, port, path."""
    return controller.openstack("console", "connection", "show", token, "-f", "json")


def _check_consoles_through_the_proxies(controller: CloudRunner, server: str) -> None:
    """The remote host's guest: VNC, serial and spice-html5 through the controller's
    proxies, relayed by its host on its console address; live-migrated to the
    controller's own host, a new console is there and the old host's relay is closed."""
    ports = controller.config.ports
    vnc = console_token(controller, server, "novnc")
    relay = console_at(controller, vnc)
    assert relay["host"] == "127.0.0.2" and relay["internal_access_path"] is None
    assert through_proxy(ports.novncproxy, vnc, b"", b"\n").startswith(b"RFB 003.008")
    serial = console_token(controller, server, "serial")
    assert through_proxy(ports.serialproxy, serial, b"hi\r", b"\r\n") == b"hi\r\n"
    spice = console_token(controller, server, "spice")
    assert through_proxy(ports.spicehtml5proxy, spice, LINK, b"REDQ")[:4] == b"REDQ"
    controller.openstack(
        "server", "migrate", "--live-migration", "--host", "controller", "--wait", server
    )
    moved = console_token(controller, server, "novnc")
    assert console_at(controller, moved)["host"] == "127.0.0.1"
    assert through_proxy(ports.novncproxy, moved, b"", b"\n").startswith(b"RFB 003.008")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", relay["port"]), timeout=5).close()
