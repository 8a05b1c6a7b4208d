"""A cloud spread over processes, on RabbitMQ + PostgreSQL: `cumulo api` with two workers,
two conductors, two schedulers, two compute hosts and a network agent, each its own
process. Boots are spread over the hosts; every process shows its heartbeat where
OpenStack shows it; killing a conductor and a scheduler mid-build leaves no server in
BUILD; a killed API worker is replaced while the other one answers.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir, wait_for_port
from tests.cluster import (
    RABBIT,
    Processes,
    children,
    delete_queues,
    host_state_dir,
    reachable,
    wait_for,
)
from tests.conftest import skip_or_fail
from tests.databases import ServerUnavailable, fresh_database
from tests.functional.dashboard_helpers import Dashboard

pytestmark = pytest.mark.e2e

COMPUTE_HOSTS = ("compute-1", "compute-2")
CONTROL = {"nova-conductor": ("cond-a", "cond-b"), "nova-scheduler": ("sched-a", "sched-b")}


def _services(cloud: CloudRunner) -> dict[tuple[str, str], str]:
    rows = cloud.openstack("compute", "service", "list", "-f", "json")
    return {(row["Binary"], row["Host"]): row["State"] for row in rows}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    namespace = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    try:
        with fresh_database("postgresql") as url:
            root = tmp_path_factory.mktemp("cluster")
            controller = root / "controller"
            configure_state_dir(controller, database=url)
            config = load_config(controller)
            config.messaging.transport_url = RABBIT
            config.messaging.namespace = namespace
            config.compute.build_timeout = 6
            config.compute.report_interval = 1
            config.compute.service_down_time = 5
            write_config(controller, config)
            procs = Processes(root)
            try:
                api = procs.start("api", "api", "--workers", "2", "--state-dir", str(controller))
                wait_for_port(config.ports.compute, 120, api)
                for binary, hosts in CONTROL.items():
                    role = binary.removeprefix("nova-")
                    for host in hosts:
                        procs.start(host, role, "--state-dir", str(controller), "--host", host)
                for host in COMPUTE_HOSTS:
                    state = host_state_dir(controller, root / host, compute={"host": host})
                    procs.start(host, "compute", "--state-dir", str(state))
                # The network agent of compute-1 beside its compute host, on its state dir.
                procs.start("net-1", "network-agent", "--state-dir", str(root / "compute-1"))
                cloud = CloudRunner(controller)
                wanted = {(b, h) for b, hosts in CONTROL.items() for h in hosts}
                wanted |= {("nova-compute", h) for h in COMPUTE_HOSTS}

                def all_up() -> bool:
                    procs.check_running()
                    services = _services(cloud)
                    return all(services.get(key) == "up" for key in wanted)

                wait_for("every service reports in", all_up, 90)
                cloud.openstack(
                    "quota", "set", "--instances", "100", "--cores", "200", "--ram", "409600",
                    "admin",
                )  # fmt: skip
                yield cloud, procs
            finally:
                procs.stop()
                asyncio.run(delete_queues(namespace))
    except ServerUnavailable as exc:
        skip_or_fail(f"PostgreSQL is not reachable: {exc}")


@pytest.fixture(scope="module")
def image(cluster, tmp_path_factory) -> str:
    cloud, _ = cluster
    path = tmp_path_factory.mktemp("img") / "disk.raw"
    path.write_bytes(b"\0" * 1024 * 1024)
    created = cloud.openstack(
        "image", "create", "disk", "--file", str(path), "--disk-format", "raw",
        "--public", "-f", "json",
    )  # fmt: skip
    return created["id"]


def _boot(cloud: CloudRunner, image: str, name: str, count: int) -> list[str]:
    cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.tiny", "--network", "private",
        "--min", str(count), "--max", str(count), name, "-f", "json",
    )  # fmt: skip
    servers = cloud.openstack("server", "list", "--name", f"^{name}", "-f", "json")
    assert len(servers) == count
    return [s["ID"] for s in servers]


def _settle(cloud: CloudRunner, ids: list[str], timeout: float) -> dict[str, dict]:
    """Until none of the servers is in BUILD; their final rows."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {
            s["ID"]: s
            for s in cloud.openstack("server", "list", "--long", "-f", "json")
            if s["ID"] in ids
        }
        if all(row["Status"] in ("ACTIVE", "ERROR") for row in rows.values()):
            return rows
        building = [i for i, row in rows.items() if row["Status"] not in ("ACTIVE", "ERROR")]
        assert time.monotonic() < deadline, f"still building after {timeout:g} s: {building}"
        time.sleep(1)


def _delete_all(cloud: CloudRunner, ids: list[str]) -> None:
    cloud.openstack("server", "delete", "--wait", *ids)
    left = {s["ID"] for s in cloud.openstack("server", "list", "-f", "json")}
    assert not left & set(ids)


def test_a_dashboard_session_is_served_by_either_api_worker(cluster):
    """Both workers serve the dashboard's port: a session made through one is found by
    the other (sessions live in the dashboard's database, not a worker's memory). Each
    request on a new connection, so the kernel spreads them over the workers."""
    cloud, procs = cluster
    workers = children(procs.procs["api"].pid)
    assert len(workers) == 2
    base = f"http://127.0.0.1:{cloud.config.ports.dashboard}"
    admin = Dashboard(base, "admin", cloud.config.identity.admin_password)
    try:
        cookies = dict(admin.http.cookies)
        for _ in range(20):
            with httpx.Client(base_url=base, cookies=cookies, timeout=60) as fresh:
                answer = fresh.get("/")
            assert answer.status_code == 200, (answer.status_code, answer.headers)
            assert admin.csrf in answer.text  # the same session, whichever worker answered
    finally:
        admin.close()


def test_every_process_shows_its_heartbeat(cluster):
    cloud, procs = cluster
    services = _services(cloud)
    for binary, hosts in CONTROL.items():
        for host in hosts:
            assert services[(binary, host)] == "up"
    rows = cloud.openstack("compute", "service", "list", "-f", "json")
    zones = {row["Binary"]: row["Zone"] for row in rows}
    assert zones["nova-conductor"] == zones["nova-scheduler"] == "internal"
    assert zones["nova-compute"] == "nova"
    agents = cloud.openstack("network", "agent", "list", "--host", "compute-1", "-f", "json")
    assert {a["Agent Type"] for a in agents} >= {"DHCP agent", "L3 agent"}
    assert all(a["Alive"] for a in agents)
    volume = cloud.openstack("volume", "service", "list", "-f", "json")
    assert any(s["Binary"] == "cinder-scheduler" and s["State"] == "up" for s in volume)
    # A user's zones are where compute hosts are (an admin also sees Nova's `internal`).
    zones_listed = cloud.openstack(
        "availability", "zone", "list", "--compute", "-f", "json", cloud="cumulo-demo"
    )
    assert {z["Zone Name"] for z in zones_listed} == {"nova"}


def test_boots_are_spread_over_the_hosts(cluster, image):
    cloud, procs = cluster
    ids = _boot(cloud, image, f"spread-{uuid.uuid4().hex[:6]}", 12)
    rows = _settle(cloud, ids, 90)
    assert {row["Status"] for row in rows.values()} == {"ACTIVE"}
    hosts = {
        cloud.openstack("server", "show", i, "-f", "json")["OS-EXT-SRV-ATTR:host"] for i in ids
    }
    assert hosts == set(COMPUTE_HOSTS)
    # No double booking: what the hypervisors count used is what the servers take.
    used = sum(
        h["vcpus_used"]
        for h in (
            # (the usage fields are gone from compute 2.88)
            cloud.openstack(
                "hypervisor", "show", "--os-compute-api-version", "2.87", row["ID"], "-f", "json"
            )  # fmt: skip
            for row in cloud.openstack("hypervisor", "list", "-f", "json")
        )
    )
    assert used == 12
    _delete_all(cloud, ids)
    procs.check_running()


def test_a_conductor_and_a_scheduler_killed_mid_build(cluster, image):
    cloud, procs = cluster
    ids = _boot(cloud, image, f"doomed-{uuid.uuid4().hex[:6]}", 10)
    procs.kill("cond-a")
    procs.kill("sched-a")
    rows = _settle(cloud, ids, 90)  # the survivors finish the builds or fail them
    for row in rows.values():
        if row["Status"] == "ERROR":
            fault = cloud.openstack("server", "show", row["ID"], "-f", "json")["fault"]
            assert fault["message"]
    wait_for(
        "the killed services are shown down",
        lambda: all(
            _services(cloud)[key] == "down"
            for key in (("nova-conductor", "cond-a"), ("nova-scheduler", "sched-a"))
        ),
        30,
    )
    _delete_all(cloud, ids)
    # The survivors alone still build.
    again = _boot(cloud, image, f"after-{uuid.uuid4().hex[:6]}", 3)
    assert {row["Status"] for row in _settle(cloud, again, 60).values()} == {"ACTIVE"}
    _delete_all(cloud, again)


def test_a_killed_api_worker_is_replaced(cluster):
    cloud, procs = cluster
    parent = procs.procs["api"].pid
    workers = children(parent)
    assert len(workers) == 2
    victim = min(workers)
    os.kill(victim, 9)
    # The other worker answers meanwhile.
    for _ in range(5):
        cloud.openstack("server", "list", "-f", "json")
    wait_for(
        "a new worker replaces the killed one",
        lambda: len(children(parent) - {victim}) == 2,
        60,
    )
    replacement = (children(parent) - workers).pop()
    config = cloud.config
    # Once it listens (its cloud opened), both workers serve every port.
    wait_for(
        "the replacement listens",
        lambda: f":{config.ports.compute:04X}".encode() in _listening_of(replacement),
        60,
    )
    for _ in range(10):
        cloud.openstack("flavor", "list", "-f", "json")
    procs.check_running()


def _listening_of(pid: int) -> bytes:
    """/proc/net/tcp lines of the sockets `pid` holds open (their inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return b"\n".join(
        line.encode() for line in lines if line.split()[9] in inodes and line.split()[3] == "0A"
    )
