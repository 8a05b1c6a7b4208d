"""A real guest reads its metadata over HTTP at 169.254.169.254: the tiny QEMU guest,
booted through the whole cloud on a linuxbridge network (and on openvswitch: its tap
on br-int through OVSDB), fetches
/openstack/latest/meta_data.json through its router's metadata proxy and prints what it
read on its console. Another machine on the same network, sending the first guest's
headers itself, gets nothing about it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from cumulo.image.demo import register_for_cloud
from cumulo.network.dataplane import openvswitch
from cumulo.network.dataplane.linuxbridge import bridge_name, scope_of
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e


# Run inside the stand-in namespace: what a guest that forges the proxy's headers gets.
FORGED_REQUEST = """
import sys, urllib.request, urllib.error
req = urllib.request.Request(
    "http://169.254.169.254/openstack/latest/meta_data.json",
    headers={"X-Instance-ID": sys.argv[1], "X-Tenant-ID": sys.argv[2],
             "X-Instance-ID-Signature": "0" * 64, "X-Forwarded-For": sys.argv[3]})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


@pytest.fixture(scope="module", params=["linuxbridge", "openvswitch"])
def cloud(request, tmp_path_factory):
    require_real_guests()
    if request.param == "openvswitch" and not openvswitch.tools_available():
        skip_or_fail(f"the openvswitch data plane needs {', '.join(openvswitch.TOOLS)}")
    state = tmp_path_factory.mktemp("metadata-cloud")
    # No config drive: the guest's only source is the metadata service.
    configure_guest_state_dir(state, "e2e-metadata", request.param, force_config_drive=False)
    runner = CloudRunner(state).start(timeout=120)
    try:
        try:
            runner.run_async(register_for_cloud(runner.cloud))
        except Exception as exc:  # noqa: BLE001 - no kernel package to be had here
            skip_or_fail(f"the tiny test guest could not be built: {exc}")
        yield runner
    finally:
        stop_guest_cloud(runner)


def wait_console(cloud: CloudRunner, name: str, marker: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while marker not in log:
        assert time.monotonic() < deadline, f"{marker!r} never showed:\n{log}"
        time.sleep(1)
        log = cloud.openstack("console", "log", "show", name, cloud="cumulo-demo")
    return log


@pytest.fixture(scope="module")
def guest(cloud):
    server = cloud.openstack(
        "server", "create", "--image", "tiny", "--flavor", "m1.tiny", "--network", "private",
        "--wait", "md1", "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    [server["ip"]] = server["addresses"]["private"]
    yield server
    cloud.openstack("server", "delete", "--wait", "md1", cloud="cumulo-demo", check=False)


def stand_in_request(cloud: CloudRunner, guest: dict) -> str:
    """Another machine on `private` (a port of its own, a namespace plugged into the
    network's bridge with that port's MAC and address) sends md1's headers itself."""
    demo = {"cloud": "cumulo-demo"}
    port = cloud.openstack(
        "port", "create", "--network", "private", f"stand-in-{uuid.uuid4().hex[:6]}",
        "-f", "json", **demo,
    )  # fmt: skip
    [fixed] = port["fixed_ips"]
    subnet = cloud.openstack("subnet", "show", fixed["subnet_id"], "-f", "json", **demo)
    prefix = subnet["cidr"].split("/")[1]
    host_ns = f"cmlo-{scope_of(cloud.state_dir)}-host"
    ns, inner, outer = f"md-standin-{uuid.uuid4().hex[:6]}", "eth0", f"mds{uuid.uuid4().hex[:8]}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    driver = cloud.cloud.network.agent.driver
    ovs = isinstance(driver, openvswitch.OpenvSwitchDriver)
    if ovs:
        # Bound to the host and plugged as a guest's tap: the agent wires it (a port no
        # host's agent knows passes nothing on br-int).
        cloud.openstack("port", "set", "--host", "e2e-metadata", port["id"])
        outer = f"tap{port['id'][:11]}"
    ip("netns", "add", ns)
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        ip("link", "set", outer, "netns", host_ns)
        ip("-n", host_ns, "link", "set", outer, "up")
        if ovs:
            cloud.run_async(openvswitch.plug(driver.daemons.remote, "br-int", outer, port["id"],
                                             port["mac_address"]))  # fmt: skip
            cloud.run_async(driver_idle(cloud))
        else:
            ip("-n", host_ns, "link", "set", outer, "master", bridge_name(port["network_id"]))
        ip("-n", ns, "link", "set", inner, "address", port["mac_address"], "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{fixed['ip_address']}/{prefix}", "dev", inner)
        ip("-n", ns, "route", "add", "default", "via", subnet["gateway_ip"])
        forged = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", FORGED_REQUEST,
             guest["id"], guest["project_id"], guest["ip"]],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "-n", host_ns, "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        cloud.openstack("port", "delete", port["id"], **demo)
    return forged.stdout + forged.stderr


async def driver_idle(cloud: CloudRunner) -> None:
    agent = cloud.cloud.network.agent
    await agent.sync({})
    await agent.wait_idle(60)


def test_the_guest_reads_its_metadata_over_http(cloud, guest):
    log = wait_console(cloud, "md1", "cumulo-guest: ready")
    assert "no config drive" in log, log
    assert f"cumulo-guest: metadata hostname=md1 uuid={guest['id']}" in log, log


def test_a_stand_in_sending_the_guests_headers_gets_nothing(cloud, guest):
    answer = stand_in_request(cloud, guest)
    # The proxy answered (the stand-in reached 169.254.169.254), for nobody it knows.
    assert answer.startswith("404"), answer
    assert guest["id"] not in answer


def test_resync_listens_again_in_a_router_namespace_made_anew(cloud, guest):
    router = cloud.openstack("router", "show", "router1", "-f", "json")
    ns = f"cmlo-{scope_of(cloud.state_dir)}-router-{router['id']}"
    subprocess.run(["ip", "netns", "delete", ns], check=True)
    agent = cloud.cloud.network.agent
    cloud.run_async(agent.sync({}))
    cloud.run_async(agent.wait_idle(60))
    assert stand_in_request(cloud, guest).startswith("404")
    cloud.openstack("server", "reboot", "--hard", "md1", cloud="cumulo-demo")
    deadline = time.monotonic() + 120
    marker = f"cumulo-guest: metadata hostname=md1 uuid={guest['id']}"
    while True:
        log = cloud.openstack("console", "log", "show", "md1", cloud="cumulo-demo")
        if log.count(marker) >= 2:
            break
        assert time.monotonic() < deadline, f"no second metadata read after reboot:\n{log}"
        time.sleep(1)
