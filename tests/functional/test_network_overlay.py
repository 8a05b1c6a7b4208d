"""Agents joined by VXLAN, as the server sees them: each tenant network's DHCP server and
each router go to one tunnelling agent (a second one on the shared segment would clash)
and move to another when it dies; each host's desired state names the other hosts'
underlay addresses, where each remote port's MAC lives (L2 population) and the remote
ports' IPv4 addresses (ARP responder)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from cumulo.common.db import utcnow
from cumulo.network.agents import report_state
from cumulo.network.dataplane.agent import agent_topic
from cumulo.network.dataplane.state import desired_state
from cumulo.network.models import Agent
from tests.cloudrunner import CloudRunner, configure_state_dir

ENDS = {"vx-1": "192.0.2.1", "vx-2": "192.0.2.2"}


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    state = tmp_path_factory.mktemp("overlay")
    configure_state_dir(state)
    runner = CloudRunner(state).start()
    try:
        yield runner
    finally:
        runner.stop()


def _report(runner: CloudRunner, host: str, start: bool = True) -> None:
    configurations = {"driver": "linuxbridge", "tunneling_ip": ENDS[host]}
    service = runner.cloud.network
    runner.run_async(report_state(service, host, agent_topic(host), configurations, start))


def _hosting(runner: CloudRunner, option: str, resource: str) -> set[str]:
    rows = runner.openstack("network", "agent", "list", option, resource, "-f", "json")
    return {row["Host"] for row in rows} & set(ENDS)


def test_one_tunnelling_agent_serves_each_network_and_router_and_another_takes_over(overlay):
    for host in ENDS:
        _report(overlay, host)
    tag = uuid.uuid4().hex[:6]
    net = overlay.openstack("network", "create", f"ov-{tag}", "-f", "json")
    subnet = overlay.openstack(
        "subnet", "create", "--network", net["id"], "--subnet-range", "10.77.0.0/24",
        f"ov-{tag}", "-f", "json",
    )  # fmt: skip
    router = overlay.openstack("router", "create", f"ov-{tag}", "-f", "json")
    overlay.openstack("router", "add", "subnet", router["id"], subnet["id"])
    [dhcp_host] = _hosting(overlay, "--network", net["id"])
    # vx-1 registered first and took the demo network and router1: the least loaded
    # agent, vx-2, takes the new ones.
    assert _hosting(overlay, "--network", "private") == {"vx-1"}
    assert dhcp_host == "vx-2"
    assert _hosting(overlay, "--router", router["id"]) == {"vx-2"}

    # A guest's port bound on vx-2: vx-1 sends its MAC straight to vx-2's underlay address.
    port = overlay.openstack(
        "port", "create", "--network", net["id"], "--host", "vx-2", f"ov-{tag}", "-f", "json"
    )
    state = overlay.run_async(desired_state(overlay.cloud.network, "vx-1"))
    tunnel = state["tunnel"]
    assert tunnel["local_ip"] == ENDS["vx-1"]
    assert isinstance(tunnel["vni"][net["id"]], int)
    assert [port["mac_address"], ENDS["vx-2"]] in tunnel["macs"][net["id"]]
    assert ENDS["vx-2"] in tunnel["peers"][net["id"]]
    # ...and answers ARP requests for its address itself (openvswitch's ARP responder).
    address = port["fixed_ips"][0]["ip_address"]
    assert [address, port["mac_address"]] in tunnel["arp"][net["id"]]
    # The cloud's own agent does not tunnel: its bridges stay its own.
    own = overlay.cloud.network.agent.host
    assert overlay.run_async(desired_state(overlay.cloud.network, own))["tunnel"] is None

    # The DHCP agent's host dies; at the other's next heartbeat the network moves there.
    dead = dhcp_host
    alive = next(h for h in ENDS if h != dead)

    async def age() -> None:
        async with overlay.cloud.network.db.write() as session:
            await session.execute(
                update(Agent)
                .where(Agent.host == dead)
                .values(heartbeat_timestamp=utcnow() - timedelta(minutes=10))
            )

    overlay.run_async(age())
    _report(overlay, alive, start=False)
    assert _hosting(overlay, "--network", net["id"]) == {alive}
    assert _hosting(overlay, "--router", router["id"]) == {alive}
    overlay.openstack("router", "remove", "subnet", router["id"], subnet["id"])
    overlay.openstack("router", "delete", router["id"])
    overlay.openstack("port", "delete", port["id"])
    overlay.openstack("network", "delete", net["id"])
