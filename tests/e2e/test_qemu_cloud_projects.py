"""New projects on a real cloud (QEMU guests, linuxbridge data plane): each makes its
own network and subnet and boots on it, one after the other, the way new users do.

The story of issue #12: project A's first boot was ACTIVE, project B's failed with
"Device does not exist" (its network's bridge was not there yet when the guest's tap
was plugged) and went ERROR with "No valid host was found". A port must not be handed
to a guest before its network's data plane exists on the host.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import Any

import pytest

from cumulo.image.demo import register_for_cloud
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def guest_cloud(tmp_path_factory):
    """A fresh cloud as `cumulo up --with-demo-image` makes it, with real guests."""
    require_real_guests()
    state = tmp_path_factory.mktemp("qemu-projects")
    configure_guest_state_dir(state, "e2e-projects")
    runner = CloudRunner(state).start(timeout=120)
    try:
        try:
            runner.run_async(register_for_cloud(runner.cloud))
        except Exception as exc:  # noqa: BLE001 - no kernel package to be had here
            skip_or_fail(f"the demo image could not be registered: {exc}")
        yield runner
    finally:
        stop_guest_cloud(runner)


def new_project_user(cloud: CloudRunner, name: str) -> list[str]:
    """A new project with a member user; the CLI options that act as that user."""
    password = uuid.uuid4().hex
    cloud.openstack("project", "create", name)
    cloud.openstack("user", "create", "--project", name, "--password", password, name)
    cloud.openstack("role", "add", "--project", name, "--user", name, "member")
    return ["--os-project-name", name, "--os-username", name, "--os-password", password]


@contextlib.contextmanager
def busy_data_plane(cloud: CloudRunner):
    """The host's network agent makes no change while inside (as when it is busy with
    other networks, or the host is loaded): a new network's bridge is not there yet."""
    driver = cloud.cloud.network.agent.driver
    cloud.run_async(driver._lock.acquire())
    try:
        yield
    finally:
        cloud._loop.call_soon_threadsafe(driver._lock.release)


def wait_for(check, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


def boot_on_a_new_network(cloud: CloudRunner, user: list[str], cidr: str) -> None:
    """Network, subnet and a server on them while the data plane is busy: the port is
    not handed to the guest before the agent wired it; then the guest boots and gets
    its address from the new network's dnsmasq."""

    def os(*args: str) -> Any:
        return cloud.openstack(*user, *args)

    with busy_data_plane(cloud):
        os("network", "create", "net")
        os("subnet", "create", "--network", "net", "--subnet-range", cidr, "subnet")
        os("server", "create", "--image", "tiny", "--flavor", "m1.tiny", "--network", "net", "vm")
        ports = lambda: os("port", "list", "--server", "vm", "-f", "json")  # noqa: E731
        wait_for(ports, 60, "the server's port was never made")
        [port] = ports()
        assert port["Status"] == "DOWN", port
        assert os("server", "show", "vm", "-f", "json")["status"] == "BUILD"
    wait_for(
        lambda: os("server", "show", "vm", "-f", "json")["status"] != "BUILD",
        120,
        "the server stayed in BUILD",
    )
    server = os("server", "show", "vm", "-f", "json")
    assert server["status"] == "ACTIVE", server.get("fault")
    assert [p["Status"] for p in ports()] == ["ACTIVE"]
    [ip] = server["addresses"]["net"]
    wait_for(
        lambda: "cumulo-guest: ready" in os("console", "log", "show", "vm"),
        90,
        "the guest never got ready",
    )
    log = os("console", "log", "show", "vm")
    assert re.search(rf"eth0 ip {re.escape(ip)}/24", log), log


def test_each_new_project_boots_a_guest_on_its_own_new_network(guest_cloud):
    suffix = uuid.uuid4().hex[:6]
    for n, project in enumerate(("a", "b", "c")):
        user = new_project_user(guest_cloud, f"project-{project}-{suffix}")
        boot_on_a_new_network(guest_cloud, user, f"10.{20 + n}.0.0/24")
