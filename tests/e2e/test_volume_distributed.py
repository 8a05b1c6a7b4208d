"""Block Storage spread over processes: the controller on PostgreSQL + RabbitMQ, and a
storage host started as its own `cumulo volume` process with a backend of its own.
A volume type sends volumes there over the broker; the storage host makes and
removes the file, exports it over NBD for another host, and once it stops its
backend goes down and gets no new volumes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import VolumeBackendConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.cluster import RABBIT, delete_queues, reachable
from tests.conftest import skip_or_fail
from tests.databases import ServerUnavailable, fresh_database

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
            config.volume.host = "controller"
            config.volume.report_interval = 1
            config.volume.service_down_time = 4
            write_config(state, config)
            runner = CloudRunner(state).start()
            try:
                yield runner
            finally:
                runner.stop()
                asyncio.run(delete_queues(namespace))
    except ServerUnavailable as exc:
        skip_or_fail(f"PostgreSQL is not reachable: {exc}")


def start_storage_host(controller: CloudRunner, state: Path, name: str) -> subprocess.Popen:
    state.mkdir()
    shutil.copy(controller.state_dir / "cumulo.toml", state / "cumulo.toml")
    config = load_config(state)
    config.volume.host = name
    config.volume.backends = [VolumeBackendConfig(name="remote", capacity_gb=20)]
    write_config(state, config)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cumulo"), "-v", "volume", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OS_")},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        services = controller.openstack("volume", "service", "list", "-f", "json")
        if any(s["Host"] == f"{name}@remote" and s["State"] == "up" for s in services):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"cumulo volume exited:\n{proc.stdout.read()}")
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"storage host {name} never reported in")


def show(controller: CloudRunner, volume_id: str) -> dict:
    port = controller.config.ports.block_storage
    r = httpx.get(
        f"http://127.0.0.1:{port}/v3/volumes/{volume_id}",
        headers={"X-Auth-Token": controller.token("admin")},
        timeout=30,
    )
    return r.json()["volume"] if r.status_code == 200 else {"status": "missing"}


def wait(controller: CloudRunner, volume_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (body := show(controller, volume_id))["status"] != status:
        assert time.monotonic() < deadline, f"volume {volume_id} stuck in {body['status']}"
        time.sleep(0.2)
    return body


def test_volumes_live_on_a_remote_storage_host(controller: CloudRunner, tmp_path: Path):
    name = f"storage-{uuid.uuid4().hex[:6]}"
    state = tmp_path / name
    proc = start_storage_host(controller, state, name)
    try:
        vtype = f"remote-{uuid.uuid4().hex[:6]}"
        controller.openstack(
            "volume", "type", "create", "--property", "volume_backend_name=remote", vtype
        )
        vid = controller.openstack(
            "volume", "create", "--type", vtype, "--size", "1", f"v-{vtype}", "-f", "json"
        )["id"]
        body = wait(controller, vid, "available")
        assert body["os-vol-host-attr:host"] == f"{name}@remote#remote"
        path = state / "volumes" / "remote" / f"volume-{vid}"
        assert path.stat().st_size == 1 << 30
        assert not (controller.state_dir / "volumes" / f"volume-{vid}").exists()
        pools = controller.openstack("volume", "backend", "pool", "list", "-f", "json")
        assert {p["Name"] for p in pools} >= {f"{name}@remote#remote", "controller@file#file"}

        # A host elsewhere gets an NBD export served by the storage host, gone on detach.
        conn = controller.sdk()
        r = conn.block_storage.post(
            "/attachments",
            json={
                "attachment": {
                    "volume_uuid": vid,
                    "instance_uuid": str(uuid.uuid4()),
                    "connector": {"host": "compute-elsewhere"},
                }
            },
            microversion="3.44",
        )
        assert r.status_code == 200, r.text
        att = r.json()["attachment"]
        info = att["connection_info"]
        assert info["driver_volume_type"] == "nbd"
        probe = subprocess.run(
            ["qemu-img", "info", "--output=json", info["data"]["uri"]],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probe.returncode == 0 and '"virtual-size": 1073741824' in probe.stdout
        assert conn.block_storage.delete(f"/attachments/{att['id']}", microversion="3.44").ok
        gone = subprocess.run(
            ["qemu-img", "info", info["data"]["uri"]], capture_output=True, timeout=30
        )
        assert gone.returncode != 0

        controller.openstack("volume", "delete", vid)
        deadline = time.monotonic() + 30
        while path.exists() or show(controller, vid)["status"] != "missing":
            assert time.monotonic() < deadline, "the remote volume was not deleted"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # Its backend goes down; a volume of its type finds no valid backend.
    deadline = time.monotonic() + 20
    while True:
        services = controller.openstack("volume", "service", "list", "-f", "json")
        state_of = {s["Host"]: s["State"] for s in services}
        if state_of.get(f"{name}@remote") == "down":
            break
        assert time.monotonic() < deadline, state_of
        time.sleep(0.5)
    late = controller.openstack(
        "volume", "create", "--type", vtype, "--size", "1", f"late-{vtype}", "-f", "json"
    )["id"]
    assert wait(controller, late, "error")["os-vol-host-attr:host"] is None
    controller.openstack("volume", "delete", late)
