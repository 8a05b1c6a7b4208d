"""The message broker goes away during concurrent boots and comes back: every server ends
ACTIVE or ERROR with a fault (none stays in BUILD), an API call that needs the bus in
between gets 503 with `Retry-After` (never 500), and the processes reconnect by
themselves: boots after the outage go ACTIVE.

The cloud reaches RabbitMQ through a TCP proxy of the test, which cuts every connection
and refuses new ones (what clients of a restarting broker see) and then lets them
through again: the machine's broker itself is shared with other tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.cluster import CuttableProxy, delete_queues, reachable
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cloud_via_proxy(tmp_path_factory):
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    namespace = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    proxy = CuttableProxy(5672).start()
    state = tmp_path_factory.mktemp("broker-outage")
    configure_state_dir(state)
    config = load_config(state)
    config.messaging.transport_url = f"rabbit://guest:guest@127.0.0.1:{proxy.port}/"
    config.messaging.namespace = namespace
    config.compute.build_timeout = 8
    config.compute.fake_spawn_delay = 0.5
    write_config(state, config)
    runner = CloudRunner(state).start(timeout=60)
    try:
        yield runner, proxy
    finally:
        runner.stop()
        proxy.close()
        asyncio.run(delete_queues(namespace))


def _statuses(runner: CloudRunner, prefix: str) -> dict[str, str]:
    rows = runner.openstack("server", "list", "--name", f"^{prefix}", "-f", "json")
    return {row["ID"]: row["Status"] for row in rows}


def _settled(runner: CloudRunner, prefix: str, count: int, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = _statuses(runner, prefix)
        if len(statuses) == count and set(statuses.values()) <= {"ACTIVE", "ERROR"}:
            return statuses
        assert time.monotonic() < deadline, f"not settled after {timeout:g} s: {statuses}"
        time.sleep(1)


def test_boots_across_a_broker_outage_end_active_or_error_and_the_cloud_reconnects(
    cloud_via_proxy, tmp_path
):
    runner, proxy = cloud_via_proxy
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    image = runner.openstack("image", "create", "disk", "--file", str(disk),
                             "--disk-format", "raw", "-f", "json")["id"]  # fmt: skip
    runner.openstack("quota", "set", "--instances", "50", "--cores", "100", "admin")
    prefix = f"across-{uuid.uuid4().hex[:6]}"
    runner.openstack(
        "server", "create", "--image", image, "--flavor", "m1.tiny", "--nic", "none",
        "--min", "10", "--max", "10", prefix,
    )  # fmt: skip
    proxy.cut()
    try:
        # An API call that needs the bus meanwhile: 503 with Retry-After, never 500, and
        # no server of it left behind.
        token = runner.token()
        during = httpx.post(
            f"http://127.0.0.1:{runner.config.ports.compute}/v2.1/servers",
            headers={"X-Auth-Token": token},
            json={"server": {"name": f"{prefix}-during", "imageRef": image,
                             "flavorRef": "1", "networks": "none"}},
            timeout=60,
        )  # fmt: skip
        assert during.status_code in (202, 503), during.text
        if during.status_code == 503:
            assert during.headers["Retry-After"] == "5"
            assert "message bus" in during.json()["serviceUnavailable"]["message"]
        time.sleep(3)
    finally:
        proxy.restore()
    count = 11 if during.status_code == 202 else 10
    statuses = _settled(runner, prefix, count, 90)
    if during.status_code == 503:
        assert runner.openstack("server", "list", "--name", f"{prefix}-during", "-f", "json") == []
    for server, status in statuses.items():
        if status == "ERROR":
            assert runner.openstack("server", "show", server, "-f", "json")["fault"]["message"]
    # Reconnected by themselves: new boots go ACTIVE.
    after = f"after-{uuid.uuid4().hex[:6]}"
    runner.openstack(
        "server", "create", "--image", image, "--flavor", "m1.tiny", "--nic", "none",
        "--min", "3", "--max", "3", after,
    )  # fmt: skip
    assert set(_settled(runner, after, 3, 60).values()) == {"ACTIVE"}
    runner.openstack("server", "delete", "--wait", *statuses, *_statuses(runner, after))
