"""An HA router (Neutron's l3-ha) on two network hosts of one cloud, with real agents,
real keepalived and VXLAN between the hosts, on linuxbridge and openvswitch, routing
east-west and north-south across its failovers.

host-a is the controller (the cloud in-process, on RabbitMQ) with its own network agent;
host-b and host-c run `cumulo network-agent` as processes of their own, each on a state
dir of its own, each with its data plane in a namespace of its own. A veth from each
host into a bridge of the test is the underlay. Two guests (namespaces plugged into
their ports' taps on host-a, as the compute side plugs one) on two tenant networks
reach each other only through the router, which runs on host-b and host-c: keepalived
elects one of them by VRRP over the project's HA network; the agents report it and the
API shows each one's `ha_state`; host-a sends the router's traffic to the active one.
The router's gateway is on `public`, a flat network whose wire is a second bridge of
the test joining host-b and host-c (linuxbridge: their `physical_interface_mappings`;
openvswitch: the wire's end on br-ex, as an operator adds the outside interface) and a
namespace standing for the outside machine (the subnet's gateway, 172.24.4.1, with no
route to the tenant networks): guest 1 reaches it only through SNAT, and it reaches
guest 2 on a floating IP, wherever the router is active.

The router starts as a plain one on host-b and is made HA (down, ha, up), then runs on
host-b and host-c. The active host's keepalived stopped: the other one takes the router,
the pings go on through it, the stopped one reports standby and its keepalived is
started again. Then the new active host dies (its agent killed, its keepalived killed,
its underlay and its external wire cut): the other one takes the router back and the
pings go on. Needs root, keepalived, nftables, ping and RabbitMQ (and Open vSwitch for
its half): skipped without them, failed under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane import keepalived, openvswitch
from cumulo.network.dataplane.openvswitch import OpenvSwitchDriver
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
from tests.e2e.test_network_dataplane import attach_external, netns_list, ping, plug_guest, sh

pytestmark = pytest.mark.e2e

UNDERLAY = {"host-a": "192.168.234.1", "host-b": "192.168.234.2", "host-c": "192.168.234.3"}
NETWORK_HOSTS = ("host-b", "host-c")
OUTSIDE = "172.24.4.1"  # the outside machine: `public`'s gateway (its default)


class HaCloud:
    def __init__(self, runner: CloudRunner, procs: Processes, dirs: dict[str, Path],
                 devices: dict[str, str], wires: dict[str, str], tag: str) -> None:  # fmt: skip
        self.runner = runner
        self.procs = procs
        self.dirs = dirs
        self.devices = devices  # host -> its underlay interface
        self.wires = wires  # host -> its interface on the external network's wire
        self.tag = tag
        self.conn = runner.sdk()
        self.outside = f"cmlo-g{tag}-out"

    def wire_external(self, host: str, network_id: str) -> None:
        """On openvswitch, the host's wire onto its br-ex once its data plane has one (a
        linuxbridge host has it from its physical_interface_mappings)."""
        if load_config(self.dirs[host]).network.driver != "openvswitch":
            return
        driver = OpenvSwitchDriver(self.dirs[host])

        def has_br_ex() -> bool:
            links = sh("ip", "-n", driver.host_ns, "link", "show", check=False).stdout
            return f" {openvswitch.EXTERNAL}:" in links

        wait_for(f"br-ex on {host}", has_br_ex, 90)
        sh("ip", "link", "set", self.wires[host], "netns", driver.host_ns)
        attach_external(driver, self.wires[host], network_id)

    def wired_to(self, mac: str) -> str | None:
        """The host whose wire the outside's switch sends `mac` to (what it learnt)."""
        fdb = json.loads(sh("bridge", "-n", self.outside, "-json", "fdb", "show").stdout or "[]")
        ports = {f"{device}p": host for host, device in self.wires.items()}
        return next((ports[e["ifname"]] for e in fdb
                     if e.get("mac") == mac and e.get("ifname") in ports), None)  # fmt: skip

    def states(self, router_id: str) -> dict[str, str | None]:
        """host -> the router's ha_state there, as GET /routers/{id}/l3-agents shows."""
        # The SDK's token (kept while valid): a login per poll is slow under load.
        with self.runner.api("network", token=self.conn.auth_token, path="/v2.0") as api:
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
    tools = ("ip", "bridge", "nft", "ping", "keepalived",
             *(openvswitch.TOOLS if driver == "openvswitch" else ()))  # fmt: skip
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
    wire = f"cmlo-n{tag}"  # the external network's, and each network host's end of it
    wires = {host: f"cmlo-n{host[-1]}{tag}" for host in NETWORK_HOSTS}
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
        mappings = {"public": wires[host]} if driver == "linuxbridge" else {}
        dirs[host] = host_state_dir(
            controller, root / host,
            network={"agent_host": host, f"{tunnel}_local_ip": f"{UNDERLAY[host]}/24",
                     f"{tunnel}_device": devices[host], "physical_interface_mappings": mappings},
        )  # fmt: skip
    procs = Processes(root)
    runner = None
    try:
        add_underlay(underlay, list(devices.values()))
        # The outside machine holds the external network's wire (its switch) and its
        # address there; its namespace's deletion takes the wire away.
        outside = f"cmlo-g{tag}-out"
        sh("ip", "netns", "add", outside)
        add_underlay(wire, list(wires.values()), netns=outside)
        sh("ip", "-n", outside, "addr", "add", f"{OUTSIDE}/24", "dev", wire)
        runner = CloudRunner(controller).start(timeout=120)
        for host in NETWORK_HOSTS:
            procs.start(host, "network-agent", "--state-dir", str(dirs[host]))
        conn = runner.sdk()

        def joined() -> bool:
            procs.check_running()
            alive = {a.host for a in conn.network.agents(agent_type="L3 agent") if a.is_alive}
            return set(NETWORK_HOSTS) <= alive

        wait_for("host-b and host-c join", joined, 90)
        yield HaCloud(runner, procs, dirs, devices, wires, tag)
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


def test_an_ha_router_fails_over_east_west_and_north_south_when_keepalived_stops_and_host_dies(
    ha_cloud: HaCloud,
):
    conn, cloud = ha_cloud.conn, ha_cloud
    # A router that is not HA yet, running on host-b (its addresses set by the agent).
    router = conn.network.create_router(name=f"ha-{cloud.tag}", ha=False)
    agents = {a.host: a for a in conn.network.agents(agent_type="L3 agent")}
    for agent in conn.network.routers_hosting_l3_agents(router):
        conn.network.remove_router_from_agent(agent, router)
    conn.network.add_router_to_agent(agents["host-b"], router)
    # Guest 2 answers pings from anywhere (the default group: only from its members).
    icmp = conn.network.create_security_group(name=f"ha-{cloud.tag}-icmp")
    conn.network.create_security_group_rule(
        security_group_id=icmp.id, direction="ingress", ethertype="IPv4", protocol="icmp"
    )
    guests = {}
    for i in (1, 2):
        net = conn.network.create_network(name=f"ha-{cloud.tag}-{i}")
        subnet = conn.network.create_subnet(network_id=net.id, cidr=f"10.6{i}.0.0/24",
                                            ip_version=4, enable_dhcp=False)  # fmt: skip
        conn.network.add_interface_to_router(router, subnet_id=subnet.id)
        port = conn.network.create_port(
            network_id=net.id, binding_host_id="host-a", device_owner="compute:nova"
        )
        if i == 2:
            groups = [*port.security_group_ids, icmp.id]
            conn.network.update_port(port, security_group_ids=groups)
        port = conn.network.get_port(port.id)
        guests[i] = (cloud.guest(f"g{i}", port, subnet.gateway_ip), port.fixed_ips[0]["ip_address"])
    # Its gateway on `public` (SNAT) and a floating IP for guest 2.
    public = conn.network.find_network("public")
    conn.network.update_router(router, external_gateway_info={"network_id": public.id})
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id)  # guest 2's
    floating = fip.floating_ip_address
    [gateway] = conn.network.ports(device_id=router.id, device_owner="network:router_gateway")
    cloud.wire_external("host-b", public.id)

    def roles() -> tuple[str, str] | None:
        """(active host, standby host) once the API shows exactly one of each."""
        states = cloud.states(router.id)
        active = [h for h in NETWORK_HOSTS if states.get(h) == "active"]
        standby = [h for h in NETWORK_HOSTS if states.get(h) == "standby"]
        return (active[0], standby[0]) if len(active) == len(standby) == 1 else None

    (g1, _), (g2, ip2) = guests[1], guests[2]

    def routed(where: str, timeout: float = 60) -> None:
        """The outside reaches guest 2 on its floating IP (first: an inbound-only guest's
        case), guest 1 the outside (SNAT: the outside has no route back to the guests'
        networks) and guest 2 (east-west)."""
        wait_for(f"the outside reaches guest 2's floating IP {where}",
                 lambda: ping(cloud.outside, floating).returncode == 0, timeout)  # fmt: skip
        wait_for(f"guest 1 reaches the outside {where}",
                 lambda: ping(g1, OUTSIDE).returncode == 0, timeout)  # fmt: skip
        wait_for(f"guest 1 reaches guest 2 {where}", lambda: ping(g1, ip2).returncode == 0,
                 timeout)  # fmt: skip

    routed("through the router on host-b")
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
    cloud.wire_external("host-c", public.id)
    wait_for("one host active, the other standby", lambda: roles() is not None, 90)
    first, second = roles()
    routed(f"through the HA router, active on {first}")
    # The active host's keepalived stops (SIGTERM: it gives the router up at once).
    stopped = cloud.keepalived_pid(first, router.id)
    assert stopped is not None and cloud.keepalived_pid(second, router.id) is not None
    os.kill(stopped, signal.SIGTERM)
    wait_for(f"{second} active, {first} standby", lambda: roles() == (second, first), 60)
    # Its gratuitous ARPs tell the outside's switch where the gateway's MAC is now.
    wait_for(f"the outside's switch sends the gateway's MAC to {second}",
             lambda: cloud.wired_to(gateway.mac_address) == second, 30)  # fmt: skip
    routed(f"through the new active host {second}")
    # ...and the agent started it again (it stays standby: nopreempt).
    wait_for(f"keepalived on {first} again",
             lambda: cloud.keepalived_pid(first, router.id) not in (None, stopped), 30)  # fmt: skip
    # Now the active host dies: its agent and keepalived killed, its wires cut.
    cloud.procs.kill(second)
    pid = cloud.keepalived_pid(second, router.id)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)  # (its addresses stay where they are: a dead host)
    sh("ip", "link", "set", f"{cloud.devices[second]}p", "down")
    sh("ip", "-n", cloud.outside, "link", "set", f"{cloud.wires[second]}p", "down")
    wait_for(f"{first} active again", lambda: cloud.states(router.id).get(first) == "active", 60)
    wait_for(f"the outside's switch sends the gateway's MAC to {first}",
             lambda: cloud.wired_to(gateway.mac_address) == first, 30)  # fmt: skip
    routed(f"through the surviving host {first}")
    assert ping(g2, guests[1][1], attempts=5).returncode == 0  # (and back: a new flow)
