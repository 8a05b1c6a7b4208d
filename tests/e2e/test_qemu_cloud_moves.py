"""Real QEMU guests moved between two compute hosts of one cloud with the `openstack`
CLI: the controller's own host and a second `cumulo compute` process, over RabbitMQ.
A guest counts aloud every second: after `openstack server migrate --live-migration`
it runs on the other host and its counter went on (its memory moved with it), and its
VNC and serial consoles open there through the controller's proxies; a cold
migration, shelve/unshelve and rescue go through the whole flow on real guests too.

Skipped with the reason when QEMU, the guest's packages or RabbitMQ are unavailable
(failed under CI)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.cluster import RABBIT, delete_queues, reachable
from tests.conftest import skip_or_fail
from tests.e2e.test_compute_distributed import (
    console_at,
    console_token,
    start_compute_host,
    through_proxy,
)

pytestmark = pytest.mark.e2e

COUNTING = (
    '#!/bin/sh\n(i=0; while true; do i=$((i+1)); echo "tick $i" > /dev/console; sleep 1; done) &\n'
)


def stop_host(host) -> None:
    """SIGTERM a `cumulo compute` host and wait; killed if it takes over a minute (seen
    once in CI taking over 30 s, not investigated yet: this file is about moves)."""
    host.terminate()
    try:
        host.wait(60)
    except subprocess.TimeoutExpired:
        host.kill()
        host.wait(30)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    for tool in ("qemu-system-x86_64", "qemu-img", "qemu-nbd"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} is not installed")
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    from cumulo.testing.guest import GuestBuildError, build_guest

    try:
        guest = build_guest()
    except GuestBuildError as exc:
        skip_or_fail(f"the tiny test guest cannot be built: {exc}")
    namespace = f"cumulo-moves-{uuid.uuid4().hex[:8]}"
    state = tmp_path_factory.mktemp("qemu-moves-controller")
    configure_state_dir(state)
    config = load_config(state)
    config.messaging.transport_url = RABBIT
    config.messaging.namespace = namespace
    config.compute.driver = "qemu"
    config.compute.qemu_accel = "tcg"
    config.compute.host = "qm-a"
    config.compute.migration_address = "127.0.0.1"
    config.compute.report_interval = 1
    config.compute.shelved_offload_time = -1  # shelved guests stay on their host here
    write_config(state, config)
    runner = CloudRunner(state).start(timeout=120)
    runner.second = None
    try:
        runner.second_dir = tmp_path_factory.mktemp("qm-b")
        runner.second = start_compute_host(runner, runner.second_dir, "qm-b")
        runner.guest = guest
        yield runner
    finally:
        for server in runner.openstack("server", "list", "--all-projects", "-f", "json"):
            runner.openstack("server", "delete", "--wait", server["ID"], check=False)
        if runner.second is not None:
            stop_host(runner.second)
        runner.stop()
        asyncio.run(delete_queues(namespace))


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    def upload(name: str, path, fmt: str, *props: str) -> str:
        return cloud.openstack(
            "image", "create", name, "--file", str(path), "--disk-format", fmt,
            "--container-format", fmt if fmt in ("aki", "ari") else "bare", "--public",
            *props, "-f", "json",
        )["id"]  # fmt: skip

    kernel = upload("tiny-kernel", cloud.guest.kernel, "aki")
    ramdisk = upload("tiny-ramdisk", cloud.guest.initramfs, "ari")
    root = tmp_path_factory.mktemp("root") / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(root), "16M"], check=True)
    return upload(
        "tiny", root, "qcow2", "--property", f"kernel_id={kernel}", "--property",
        f"ramdisk_id={ramdisk}", "--property", f"os_command_line={cloud.guest.command_line}",
    )  # fmt: skip


def wait_status(cloud: CloudRunner, server: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = cloud.openstack("server", "show", server, "-f", "json")
        if shown["status"] == status and shown["OS-EXT-STS:task_state"] is None:
            return shown
        if shown["status"] == "ERROR" or time.monotonic() > deadline:
            raise AssertionError(f"{server} is {shown['status']}: {shown.get('fault')}")
        time.sleep(0.5)


def console_ticks(cloud: CloudRunner, server: str, at_least: int, timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while True:
        log = cloud.openstack("console", "log", "show", server)
        ticks = [int(n) for n in re.findall(r"tick (\d+)", log)]
        if ticks and max(ticks) >= at_least:
            return ticks
        if time.monotonic() > deadline:
            raise AssertionError(f"no tick {at_least} on the console of {server}:\n{log[-1500:]}")
        time.sleep(0.5)


def boot(cloud: CloudRunner, image: str, host: str, tmp_path) -> dict:
    (tmp_path / "count.sh").write_text(COUNTING)
    return cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.tiny", "--nic", "none",
        "--user-data", str(tmp_path / "count.sh"), "--availability-zone", f"nova:{host}",
        "--wait", f"mover-{uuid.uuid4().hex[:6]}", "-f", "json",
    )  # fmt: skip


def test_live_migration_moves_a_running_guest_to_the_other_host(cloud, image, tmp_path):
    server = boot(cloud, image, "qm-a", tmp_path)
    before = max(console_ticks(cloud, server["id"], 3))
    cloud.openstack(
        "server", "migrate", "--live-migration", "--host", "qm-b", "--block-migration",
        "--wait", server["id"],
    )  # fmt: skip
    moved = wait_status(cloud, server["id"], "ACTIVE")
    assert moved["OS-EXT-SRV-ATTR:host"] == "qm-b"
    ticks = console_ticks(cloud, server["id"], before + 2)
    assert min(ticks) >= before, "the counter went on from where it was: no reboot"
    # Its consoles followed it: the controller's proxies reach qm-b's relays (TCP).
    ports = cloud.config.ports
    vnc = console_token(cloud, server["id"], "novnc")
    assert console_at(cloud, vnc)["internal_access_path"] is None
    assert through_proxy(ports.novncproxy, vnc, b"", b"\n").startswith(b"RFB 003.008")
    serial = console_token(cloud, server["id"], "serial")
    typed = b"echo relayed $((6 * 7))\r"
    assert b"relayed 42" in through_proxy(ports.serialproxy, serial, typed, b"relayed 42")
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server["id"], "-f", "json"
    )
    assert (migration["Type"], migration["Status"]) == ("live-migration", "completed")
    assert (migration["Source Compute"], migration["Dest Compute"]) == ("qm-a", "qm-b")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_cold_migration_and_confirm_on_real_guests(cloud, image, tmp_path):
    server = boot(cloud, image, "qm-b", tmp_path)
    console_ticks(cloud, server["id"], 1)
    cloud.openstack("server", "migrate", "--wait", server["id"])
    moved = wait_status(cloud, server["id"], "VERIFY_RESIZE")
    assert moved["OS-EXT-SRV-ATTR:host"] == "qm-a"
    console_ticks(cloud, server["id"], 1)  # it boots there from the copied disk
    cloud.openstack("server", "migrate", "confirm", server["id"])
    wait_status(cloud, server["id"], "ACTIVE")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_rescue_and_shelve_on_a_real_guest(cloud, image, tmp_path):
    server = boot(cloud, image, "qm-a", tmp_path)
    cloud.openstack("server", "rescue", server["id"])
    wait_status(cloud, server["id"], "RESCUE")
    log = cloud.openstack("console", "log", "show", server["id"])
    deadline = time.monotonic() + 90
    while not re.search(r"disks vda vdb vdc", log):  # rescue disk, own disk, config drive
        assert time.monotonic() < deadline, log[-1500:]
        time.sleep(0.5)
        log = cloud.openstack("console", "log", "show", server["id"])
    cloud.openstack("server", "unrescue", server["id"])
    wait_status(cloud, server["id"], "ACTIVE")
    cloud.openstack("server", "shelve", server["id"])
    wait_status(cloud, server["id"], "SHELVED")
    base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1"
    with cloud.http(cloud.token()) as client:
        offload = client.post(f"{base}/servers/{server['id']}/action", json={"shelveOffload": None})
        assert offload.status_code == 202
    offloaded = wait_status(cloud, server["id"], "SHELVED_OFFLOADED")
    assert offloaded["OS-EXT-SRV-ATTR:host"] is None
    # Unshelved from its snapshot (which kept the image's kernel): it boots and counts.
    cloud.openstack("server", "unshelve", server["id"])
    wait_status(cloud, server["id"], "ACTIVE")
    console_ticks(cloud, server["id"], 1)
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_evacuate_rebuilds_on_the_other_host_and_the_dead_host_cleans_up(cloud, image, tmp_path):
    server = boot(cloud, image, "qm-b", tmp_path)
    guest_dir = cloud.second_dir / "qm-b" / "compute" / "qm-b" / "instances" / server["id"]
    assert guest_dir.is_dir()
    down = ("--os-compute-api-version", "2.53", "compute", "service", "set")
    cloud.openstack(*down, "--down", "qm-b", "cumulo-compute")
    try:
        # Before 2.95 an evacuated running server runs again (from 2.95 it is left stopped).
        cloud.openstack("--os-compute-api-version", "2.94", "server", "evacuate", server["id"])
        evacuated = wait_status(cloud, server["id"], "ACTIVE")
        assert evacuated["OS-EXT-SRV-ATTR:host"] == "qm-a"
        console_ticks(cloud, server["id"], 1)  # rebuilt from its image: it boots and counts
        # The "dead" host comes back: its agent removes the guest that left it.
        stop_host(cloud.second)
        cloud.second = None
        cloud.openstack(*down, "--up", "qm-b", "cumulo-compute")
        cloud.second = restart_compute_host(cloud, "qm-b")
        deadline = time.monotonic() + 60
        while guest_dir.exists():
            assert time.monotonic() < deadline, "the evacuated guest was left on qm-b"
            time.sleep(0.5)
        [migration] = cloud.openstack(
            "server", "migration", "list", "--server", server["id"], "-f", "json"
        )
        assert (migration["Type"], migration["Status"]) == ("evacuation", "completed")
    finally:
        cloud.openstack(*down, "--up", "qm-b", "cumulo-compute")
    cloud.openstack("server", "delete", "--wait", server["id"])


def restart_compute_host(cloud: CloudRunner, name: str):
    """Start the host's `cumulo compute` again on the state dir it had."""
    state = cloud.second_dir / name
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cumulo"), "-v", "compute", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("OS_")},
    )
    return proc
