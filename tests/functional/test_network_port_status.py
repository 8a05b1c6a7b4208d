"""A port's status, as Neutron keeps it: a port bound to a host is ACTIVE only once that
host's network agent has wired it (the compute host waits for that before it hands
the port to a guest), and DOWN while administratively down."""

from __future__ import annotations

import time
import uuid

from tests.cloudrunner import CloudRunner


def _status(cloud: CloudRunner, port: str) -> str:
    return cloud.openstack("port", "show", port, "-f", "json")["status"]


def _becomes(cloud: CloudRunner, port: str, status: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while _status(cloud, port) != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def test_a_bound_port_is_down_until_its_hosts_agent_wires_it(cloud: CloudRunner):
    name = f"status-{uuid.uuid4().hex[:8]}"
    agent_host = cloud.cloud.network.agent.host
    # Bound to a host with no network agent: nothing wires it, it stays DOWN.
    port = cloud.openstack(
        "port", "create", "--network", "private", "--host", "no-agent-here", name, "-f", "json"
    )
    assert port["status"] == "DOWN"
    time.sleep(2)  # several agent rounds
    assert _status(cloud, name) == "DOWN"

    # Bound to the host whose agent runs here: DOWN first, ACTIVE once wired.
    cloud.openstack("port", "set", "--host", agent_host, name)
    assert _becomes(cloud, name, "ACTIVE")

    # Administratively down: DOWN (the agent does not bring it back), then up again.
    cloud.openstack("port", "set", "--disable", name)
    assert _status(cloud, name) == "DOWN"
    time.sleep(2)
    assert _status(cloud, name) == "DOWN"
    cloud.openstack("port", "set", "--enable", name)
    assert _becomes(cloud, name, "ACTIVE")

    # Unbound: DOWN.
    cloud.openstack("port", "unset", "--host", name)
    assert _status(cloud, name) == "DOWN"
    cloud.openstack("port", "delete", name)
