"""`kill -9` of a `cumulo compute` host in the middle of concurrent QEMU boots, then the
host started again: its guests outlived it and are kept (the same QEMU processes), every
server ends ACTIVE or ERROR with a fault (a build the kill cut off has its guest and
ports removed and is failed by the host's start, as Nova's init_host does), and no QEMU
process, instance directory or tap is left that no server owns.

The controller runs in-process on RabbitMQ with the data plane (its network agent serves
the host `crash-host`); the compute host `crash-host` is a process of its own with a
state dir of its own, as on a second machine.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from cumulo.compute.virt import qemu_process as qp
from tests.churn import footprint
from tests.cloudrunner import (
    CloudRunner,
    configure_guest_state_dir,
    kill_guests,
    stop_guest_cloud,
)
from tests.cluster import RABBIT, Processes, delete_queues, host_state_dir, reachable, wait_for
from tests.conftest import require_real_guests, skip_or_fail
from tests.e2e.test_qemu_cloud_guests import register_tiny_images

pytestmark = pytest.mark.e2e

HOST = "crash-host"
STORM = 5  # QEMU guests under TCG on two cores: enough to have builds at every step


@pytest.fixture
def cluster(tmp_path):
    require_real_guests()
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    namespace = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    controller = tmp_path / "controller"
    # The controller's data plane wires the ports bound to crash-host; its own compute
    # host is a fake one that nothing here boots on.
    configure_guest_state_dir(controller, HOST)
    config = load_config(controller)
    config.messaging.transport_url = RABBIT
    config.messaging.namespace = namespace
    config.compute.host = "controller"
    config.compute.driver = "fake"
    config.compute.report_interval = 1
    config.compute.service_down_time = 5
    write_config(controller, config)
    host = host_state_dir(controller, tmp_path / HOST, compute={"host": HOST, "driver": "qemu"})
    procs = Processes(tmp_path)
    runner = None
    try:
        runner = CloudRunner(controller).start(timeout=120)
        yield runner, procs, host, tmp_path
    finally:
        try:
            if runner is not None:
                if procs.procs.get(HOST) is None or procs.procs[HOST].poll() is not None:
                    procs.start(HOST, "compute", "--state-dir", str(host))  # to delete guests
                stop_guest_cloud(runner)
        finally:
            procs.stop()
            kill_guests(host, HOST)
            asyncio.run(delete_queues(namespace))


def _host_up(runner: CloudRunner, procs: Processes) -> bool:
    procs.check_running()
    services = runner.openstack("compute", "service", "list", "-f", "json")
    return any(s["Host"] == HOST and s["State"] == "up" for s in services)


def _boot(runner: CloudRunner, name: str) -> dict:
    return runner.openstack(
        "server", "create", "--image", "tiny", "--flavor", "m1.tiny", "--network", "private",
        "--availability-zone", f"nova:{HOST}", name, "-f", "json",
    )  # fmt: skip


def _qemu_pid(host: str, server_id) -> int | None:
    directory = host / "compute" / HOST / "instances" / server_id
    pid = qp.read_pid(directory)
    return pid if qp.process_alive(pid, server_id) else None


def test_a_killed_compute_host_restarts_keeping_its_guests_and_failing_only_what_it_cut_off(
    cluster,
):
    runner, procs, host, root = cluster
    procs.start(HOST, "compute", "--state-dir", str(host))
    wait_for("crash-host reports in", lambda: _host_up(runner, procs), 90)
    register_tiny_images(runner, root)
    keeper = _boot(runner, "keeper")
    wait_for(
        "keeper ACTIVE",
        lambda: (
            runner.openstack("server", "show", keeper["id"], "-f", "json")["status"] == "ACTIVE"
        ),
        180,
    )
    keeper_pid = _qemu_pid(host, keeper["id"])
    assert keeper_pid is not None

    # The storm: boots at once, and the host killed while they are under way.
    made: list[str] = []

    def boot(n: int) -> None:
        made.append(_boot(runner, f"storm-{n}")["id"])

    threads = [threading.Thread(target=boot, args=(n,)) for n in range(STORM)]
    for thread in threads:
        thread.start()
    # Killed as soon as a build is in the host's hands (read straight from the API: a
    # CLI call takes longer than a tiny guest's build).
    compute = httpx.Client(
        base_url=f"http://127.0.0.1:{runner.config.ports.compute}",
        headers={"X-Auth-Token": runner.token("admin"), "OpenStack-API-Version": "compute 2.79"},
        timeout=30,
    )

    def on_the_host() -> bool:
        found = compute.get("/v2.1/servers/detail").json()["servers"]
        return any(
            s["name"].startswith("storm-")
            and s["status"] == "BUILD"
            and s["OS-EXT-STS:task_state"] in ("networking", "block_device_mapping", "spawning")
            for s in found
        )

    wait_for("a build under way on the host", on_the_host, 120)
    procs.kill(HOST)
    for thread in threads:
        thread.join()
    compute.close()
    # The guests outlive their host's agent.
    assert qp.process_alive(keeper_pid, keeper["id"])

    procs.start(HOST, "compute", "--state-dir", str(host))
    wait_for("crash-host back", lambda: _host_up(runner, procs), 90)

    def servers() -> list[dict]:
        return runner.openstack("server", "list", "--long", "-f", "json")

    wait_for(
        "every server ACTIVE or ERROR",
        lambda: {s["Status"] for s in servers()} <= {"ACTIVE", "ERROR"},
        300,
    )
    shown = {s: runner.openstack("server", "show", s, "-f", "json") for s in [keeper["id"], *made]}
    assert shown[keeper["id"]]["status"] == "ACTIVE"
    assert _qemu_pid(host, keeper["id"]) == keeper_pid  # the same guest, never restarted
    for server_id, server in shown.items():
        if server["status"] == "ERROR":
            assert server["fault"]["message"], server["name"]
        else:
            assert _qemu_pid(host, server_id) is not None, f"{server['name']} ACTIVE, no QEMU"
    # Nothing that no server owns: QEMU processes, instance directories.
    active = {s for s, server in shown.items() if server["status"] == "ACTIVE"}
    assert footprint(host)["processes"]["qemu-system-x86_64"] == len(active)
    instances = host / "compute" / HOST / "instances"
    assert {p.name for p in instances.iterdir()} <= set(shown)

    # Deleting everything leaves no guest, directory, tap or port.
    for server_id in shown:
        runner.openstack("server", "delete", "--wait", server_id)
    assert footprint(host)["processes"]["qemu-system-x86_64"] == 0
    assert not list(instances.iterdir())
    assert footprint(runner.state_dir)["links"]["tap"] == 0
    ports = runner.openstack("port", "list", "--device-owner", "compute:nova", "-f", "json")
    assert ports == []
    procs.check_running()
