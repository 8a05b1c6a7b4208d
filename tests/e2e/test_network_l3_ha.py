"""An HA router (Neutron's l3-ha) on two network hosts of one cloud, with real agents,
real keepalived and VXLAN between the hosts, on linuxbridge and openvswitch.

host-a is the controller (the cloud in-process, on RabbitMQ) with its own network agent;
host-b and host-c run `cumulo network-agent` as processes of their own, each on a state
dir of its own, each with its data plane in a namespace of its own. A veth from each
host into a bridge of the test is the underlay. Two guests (namespaces plugged into
their ports' taps on host-a, as the compute side plugs one) on two tenant networks
reach each other only through the router, which runs on host-b and host-c: keepalived
elects one of them by VRRP over the project's HA network; the agents report it and the
API shows each one's `ha_state`; host-a sends the router's traffic to the active one.

The router starts as a plain one on host-b and is made HA (down, ha, up), then runs on
host-b and host-c. The active host's keepalived stopped: the other one takes the router,
the ping goes on through it, the stopped one reports standby and its keepalived is
started again. Then the new active host dies (its agent killed, its keepalived killed,
its underlay cut): the other one takes the router back and the ping goes on. Needs
root, keepalived, ping and RabbitMQ (and Open vSwitch for its half): skipped without
them, failed under CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane import keepalived, openvswitch
from tests.cloudrunner import CloudRunner, configure_state_dir, remove_data_plane
from tests.cluster import (
    RABBIT,
    Processes,
    add_underlay,
    delete_queues,
    host_state_dir,
    reachable,
    remove_underlay,
    wait_for,
)
from tests.conftest import skip_or_fail
from tests.e2e.test_network_dataplane import netns_list, ping, plug_guest, sh

pytestmark = pytest.mark.e2e

UNDERLAY = {"host-a": "192.168.234.1", "host-b": "192.168.234.2", "host-c": "192.168.234.3"}
NETWORK_HOSTS = ("host-b", "host-c")


class HaCloud:
    def __init__(self, runner: CloudRunner, procs: Processes, dirs: dict[str, Path],
                 devices: dict[str, str], tag: str) -> None:  # fmt: skip
        self.runner = runner
        self.procs = procs
        self.dirs = dirs
        self.devices = devices
        self.tag = tag
        self.conn = runner.sdk()

    def states(self, router_id: str) -> dict[str, str | None]:
        """host -> the router's ha_state there, as GET /routers/{id}/l3-agents shows."""
        with self.runner.api("network", path="/v2.0") as api:
            agents = api.get(f"/routers/{router_id}/l3-agents").json()["agents"]
        return {a["host"]: a["ha_state"] for a in agents}

    def keepalived_pid(self, host: str, router_id: str) -> int | None:
        files = self.dirs[host] / "network" / "keepalived" / router_id
        return keepalived.Keepalived(files, "").pid

    def guest(self, name: str, port, gateway: str) -> str:
        """A namespace plugged into the port's tap on host-a (once host-a's agent has
        made the network's bridge), its address set by hand."""
        agent = self.runner.cloud.network.agent

        async def settle() -> None:
            await agent.sync({})
            await agent.wait_idle(60)

        self.runner.run_async(settle())
        ns = f"cmlo-g{self.tag}-{name}"
        plug_guest(self.runner, ns, port)
        sh("ip", "-n", ns, "addr", "add", f"{port.fixed_ips[0]['ip_address']}/24", "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
        return ns


@pytest.fixture(scope="module", params=["linuxbridge", "openvswitch"])
def ha_cloud(request, tmp_path_factory: pytest.TempPathFactory):
    driver = request.param
    if os.geteuid() != 0:
        skip_or_fail("HA routers' data plane needs root (network namespaces)")
    tools = ("ip", "ping", "keepalived", *(openvswitch.TOOLS if driver == "openvswitch" else ()))
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the HA router test on {driver} needs: {', '.join(missing)}")
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    tag = uuid.uuid4().hex[:4]
    namespace = f"cumulo-test-{tag}"
    root = tmp_path_factory.mktemp(f"l3ha-{driver}")
    underlay = f"cmlo-u{tag}"
    devices = {host: f"cmlo-u{host[-1]}{tag}" for host in UNDERLAY}
    tunnel = "ovs_tunnel" if driver == "openvswitch" else "tunnel"
    controller = root / "host-a"
    configure_state_dir(controller)
    config = load_config(controller)
    config.messaging.transport_url = RABBIT
    config.messaging.namespace = namespace
    config.compute.host = config.network.agent_host = "host-a"
    config.network.driver = driver
    config.network.host_leg = False  # clouds run side by side on this machine
    config.network.max_l3_agents_per_router = 2
    setattr(config.network, f"{tunnel}_local_ip", f"{UNDERLAY['host-a']}/24")
    setattr(config.network, f"{tunnel}_device", devices["host-a"])
    write_config(controller, config)
    dirs = {"host-a": controller}
    for host in NETWORK_HOSTS:
        dirs[host] = host_state_dir(
            controller, root / host,
            network={"agent_host": host, f"{tunnel}_local_ip": f"{UNDERLAY[host]}/24",
                     f"{tunnel}_device": devices[host]},
        )  # fmt: skip
    procs = Processes(root)
    runner = None
    try:
        add_underlay(underlay, list(devices.values()))
        runner = CloudRunner(controller).start(timeout=120)
        for host in NETWORK_HOSTS:
            procs.start(host, "network-agent", "--state-dir", str(dirs[host]))
        conn = runner.sdk()

        def joined() -> bool:
            procs.check_running()
            alive = {a.host for a in conn.network.agents(agent_type="L3 agent") if a.is_alive}
            return set(NETWORK_HOSTS) <= alive

        wait_for("host-b and host-c join", joined, 90)
        yield HaCloud(runner, procs, dirs, devices, tag)
    finally:
        try:
            if runner is not None:
                runner.stop()
        finally:
            procs.stop()
            for ns in netns_list():
                if ns.startswith(f"cmlo-g{tag}-"):
                    sh("ip", "netns", "delete", ns, check=False)
            try:
                for host in NETWORK_HOSTS:
                    remove_data_plane(dirs[host])
            finally:
                remove_data_plane(controller)
                remove_underlay(underlay, list(devices.values()))
                asyncio.run(delete_queues(namespace))


def test_an_ha_router_fails_over_when_its_keepalived_stops_and_when_its_host_dies(
    ha_cloud: HaCloud,
):
    conn, cloud = ha_cloud.conn, ha_cloud
    # A router that is not HA yet, running on host-b (its addresses set by the agent).
    router = conn.network.create_router(name=f"ha-{cloud.tag}", ha=False)
    agents = {a.host: a for a in conn.network.agents(agent_type="L3 agent")}
    for agent in conn.network.routers_hosting_l3_agents(router):
        conn.network.remove_router_from_agent(agent, router)
    conn.network.add_router_to_agent(agents["host-b"], router)
    guests = {}
    for i in (1, 2):
        net = conn.network.create_network(name=f"ha-{cloud.tag}-{i}")
        subnet = conn.network.create_subnet(network_id=net.id, cidr=f"10.6{i}.0.0/24",
                                            ip_version=4, enable_dhcp=False)  # fmt: skip
        conn.network.add_interface_to_router(router, subnet_id=subnet.id)
        port = conn.network.create_port(
            network_id=net.id, binding_host_id="host-a", device_owner="compute:nova"
        )
        port = conn.network.get_port(port.id)
        guests[i] = (cloud.guest(f"g{i}", port, subnet.gateway_ip), port.fixed_ips[0]["ip_address"])

    def roles() -> tuple[str, str] | None:
        """(active host, standby host) once the API shows exactly one of each."""
        states = cloud.states(router.id)
        active = [h for h in NETWORK_HOSTS if states.get(h) == "active"]
        standby = [h for h in NETWORK_HOSTS if states.get(h) == "standby"]
        return (active[0], standby[0]) if len(active) == len(standby) == 1 else None

    (g1, _), (_, ip2) = guests[1], guests[2]
    wait_for("guest 1 reaches guest 2 through the router", lambda: ping(g1, ip2).returncode == 0,
             60)  # fmt: skip
    # Made HA (taken down first, as Neutron wants), then on host-b and host-c only (two
    # agents: max_l3_agents_per_router), whichever the scheduler chose.
    conn.network.update_router(router, is_admin_state_up=False)
    conn.network.update_router(router, is_ha=True)
    conn.network.update_router(router, is_admin_state_up=True)
    hosting = {a.host for a in conn.network.routers_hosting_l3_agents(router)}
    for host in hosting - set(NETWORK_HOSTS):
        conn.network.remove_router_from_agent(agents[host], router)
    for host in set(NETWORK_HOSTS) - hosting:
        conn.network.add_router_to_agent(agents[host], router)
    assert set(cloud.states(router.id)) == set(NETWORK_HOSTS)
    wait_for("one host active, the other standby", lambda: roles() is not None, 90)
    first, second = roles()
    wait_for("the ping through the HA router", lambda: ping(g1, ip2).returncode == 0, 60)
    # The active host's keepalived stops (SIGTERM: it gives the router up at once).
    stopped = cloud.keepalived_pid(first, router.id)
    assert stopped is not None and cloud.keepalived_pid(second, router.id) is not None
    os.kill(stopped, signal.SIGTERM)
    wait_for(f"{second} active, {first} standby", lambda: roles() == (second, first), 60)
    wait_for("the ping through the new active host", lambda: ping(g1, ip2).returncode == 0, 60)
    # ...and the agent started it again (it stays standby: nopreempt).
    wait_for(f"keepalived on {first} again",
             lambda: cloud.keepalived_pid(first, router.id) not in (None, stopped), 30)  # fmt: skip
    # Now the active host dies: its agent and keepalived killed, its underlay cut.
    cloud.procs.kill(second)
    pid = cloud.keepalived_pid(second, router.id)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)  # (its addresses stay where they are: a dead host)
    sh("ip", "link", "set", f"{cloud.devices[second]}p", "down")
    wait_for(f"{first} active again", lambda: cloud.states(router.id).get(first) == "active", 60)
    wait_for("the ping through the surviving host", lambda: ping(g1, ip2).returncode == 0, 60)
    assert ping(guests[2][0], guests[1][1]).returncode == 0
