"""Two hosts of one cloud on the openvswitch data plane, joined by VXLAN, with real agents.

host-a is the controller (the cloud in-process, on RabbitMQ) with its own network agent
and fake compute host; host-b runs `cumulo network-agent` and `cumulo compute` (fake
hypervisor) as processes of their own, on a state dir of their own: each host's switch
(ovsdb-server, ovs-vswitchd, run dir `<state dir>/network/ovs`) lives in its host's
namespace. A veth from each into a bridge of the test is the underlay, moved by each
agent onto its br-phy. Two tenant networks with the same CIDR; a server on each host on
each network, booted through the Compute API, so that the compute service binds its
port to its host and the host's agent wires it. The fake hypervisor makes no tap: the
test plugs a namespace standing for each guest into the port's `binding:vif_details`
(the host's br-int through its ovsdb), as the QEMU driver plugs a tap.

Guests on one network on different hosts ping each other over the tunnel; the other
network's guest with the same address is never reached; each agent's br-tun pins the
other host's guests' MACs to the tunnel to that host (L2 population, learnt from the
port bindings and the agents' reported tunnel addresses), floods each network only to
the hosts with something on it, answers ARP requests for the other host's guests itself
(Neutron's ARP responder), and forgets a MAC whose server is gone. Needs root,
Open vSwitch, ping and RabbitMQ: skipped without them, failed under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane import openvswitch
from cumulo.network.dataplane.linuxbridge import tap_name
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
from tests.e2e.test_network_dataplane import netns_list, ping, sh

pytestmark = pytest.mark.e2e

UNDERLAY = {"host-a": "192.168.233.1", "host-b": "192.168.233.2"}
CIDR = "10.77.0.0/24"


class Host:
    """One host of the cloud: its state dir, and its switch's run dir."""

    def __init__(self, name: str, state_dir: Path) -> None:
        self.name = name
        self.state_dir = state_dir
        self.run_dir = state_dir / "network" / "ovs"

    def flows(self, bridge: str) -> str:
        env = {**os.environ, "OVS_RUNDIR": str(self.run_dir)}
        return sh("ovs-ofctl", "-O", "OpenFlow13", "--names", "dump-flows", bridge,
                  env_extra=env).stdout  # fmt: skip

    def wired(self, port_id: str) -> bool:
        """Whether the host's agent has written the flows of the port's tap on br-int
        (it does once its watch sees the tap plugged)."""
        return re.search(rf'in_port="?{tap_name(port_id)}\b', self.flows("br-int")) is not None

    def pinned(self, mac: str) -> dict[str, int]:
        """br-tun's L2 population flows for `mac`: tunnel port -> packets sent."""
        found = {}
        for flow in self.flows("br-tun").splitlines():
            if "table=20" in flow and "priority=2," in flow and f"dl_dst={mac}" in flow:
                tunnel = re.search(r'output:"?([\w-]+)"?', flow).group(1)
                found[tunnel] = int(flow.split("n_packets=")[1].split(",")[0])
        return found

    def arp_answers(self, vlan: int, address: str) -> int | None:
        """Requests br-tun's ARP responder answered for `address` (None: no answer)."""
        for flow in self.flows("br-tun").splitlines():
            if "table=21" in flow and f"dl_vlan={vlan},arp_tpa={address} " in flow:
                return int(flow.split("n_packets=")[1].split(",")[0])
        return None

    def flooded_to(self, vlan: int) -> list[str]:
        """The tunnels br-tun floods the network of local VLAN `vlan` to."""
        for flow in self.flows("br-tun").splitlines():
            if "table=22" in flow and f"dl_vlan={vlan} " in flow:
                return re.findall(r'output:"?([\w-]+)"?', flow)
        return []

    def local_vlan(self, network_id: str) -> int | None:
        try:
            return json.loads((self.run_dir / "local_vlans.json").read_text()).get(network_id)
        except (OSError, ValueError):
            return None


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        skip_or_fail("the openvswitch data plane needs root (network namespaces)")
    missing = [t for t in (*openvswitch.TOOLS, "ip", "ping") if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the two-host openvswitch test needs: {', '.join(missing)}")
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    tag = uuid.uuid4().hex[:4]
    namespace = f"cumulo-test-{tag}"
    root = tmp_path_factory.mktemp("ovs-hosts")
    underlay = f"cmlo-u{tag}"
    devices = {"host-a": f"cmlo-ua{tag}", "host-b": f"cmlo-ub{tag}"}
    controller = root / "host-a"
    configure_state_dir(controller)
    config = load_config(controller)
    config.messaging.transport_url = RABBIT
    config.messaging.namespace = namespace
    config.compute.host = config.network.agent_host = "host-a"
    config.network.driver = "openvswitch"
    config.network.host_leg = False  # clouds run side by side on this machine
    config.network.ovs_tunnel_local_ip = f"{UNDERLAY['host-a']}/24"
    config.network.ovs_tunnel_device = devices["host-a"]
    write_config(controller, config)
    host_b = host_state_dir(
        controller, root / "host-b",
        compute={"host": "host-b"},
        network={"agent_host": "host-b", "ovs_tunnel_local_ip": f"{UNDERLAY['host-b']}/24",
                 "ovs_tunnel_device": devices["host-b"]},
    )  # fmt: skip
    procs = Processes(root)
    runner = None
    guests = f"cmlo-g{tag}-"
    try:
        add_underlay(underlay, list(devices.values()))
        runner = CloudRunner(controller).start(timeout=120)
        procs.start("network-b", "network-agent", "--state-dir", str(host_b))
        procs.start("compute-b", "compute", "--state-dir", str(host_b))
        conn = runner.sdk()

        def joined() -> bool:
            procs.check_running()
            computes = [s for s in conn.compute.services() if s.host == "host-b"]
            agents = list(conn.network.agents(host="host-b", agent_type="Open vSwitch agent"))
            return any(s.state == "up" for s in computes) and any(a.is_alive for a in agents)

        wait_for("host-b joins", joined, 90)
        yield (
            runner,
            procs,
            {"host-a": Host("host-a", controller), "host-b": Host("host-b", host_b)},
            guests,
        )
    finally:
        try:
            if runner is not None:
                conn = runner.sdk()
                for server in conn.compute.servers(all_projects=True):
                    conn.compute.delete_server(server)
                for server in conn.compute.servers(all_projects=True):
                    conn.compute.wait_for_delete(server, wait=60)
                runner.stop()
        finally:
            procs.stop()
            for ns in netns_list():
                if ns.startswith(guests):
                    sh("ip", "netns", "delete", ns, check=False)
            try:
                remove_data_plane(host_b)
            finally:
                remove_data_plane(controller)
                remove_underlay(underlay, list(devices.values()))
                asyncio.run(delete_queues(namespace))


def server_image(conn, host: Host):
    """The fake hypervisor's image for the servers (made by the first test that asks)."""
    image = conn.image.find_image("ovs-two-hosts")
    if image is None:
        image_file = host.state_dir / "disk.raw"
        image_file.write_bytes(b"\0" * 1024 * 1024)
        image = conn.image.create_image(
            name="ovs-two-hosts", filename=str(image_file), disk_format="raw",
            container_format="bare", wait=True,
        )  # fmt: skip
    return image


def boot(runner: CloudRunner, image: str, name: str, port_id: str, host: str):
    """A server (the fake hypervisor's) on `host` behind the port."""
    conn = runner.sdk()
    return conn.compute.create_server(
        name=name, image_id=image, flavor_id=conn.compute.find_flavor("m1.tiny").id,
        networks=[{"port": port_id}], availability_zone=f"nova:{host}",
    )  # fmt: skip


def plug_guest(runner: CloudRunner, name: str, port) -> str:
    """A namespace standing for the server's guest, plugged where the port's binding says
    (the host's br-int, through its ovsdb), with the port's MAC and address."""
    details = port.binding_vif_details
    tap = tap_name(port.id)
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", tap,
       "netns", details["netns"])  # fmt: skip
    sh("ip", "-n", name, "link", "set", "eth0", "address", port.mac_address, "mtu", "1450", "up")
    sh("ip", "-n", name, "addr", "add", f"{port.fixed_ips[0]['ip_address']}/24", "dev", "eth0")
    sh("ip", "-n", details["netns"], "link", "set", tap, "up")
    runner.run_async(openvswitch.plug(details["ovsdb"], details["bridge_name"], tap, port.id,
                                      port.mac_address))  # fmt: skip
    return name


def neighbour_mac(guest: str, address: str) -> str:
    out = sh("ip", "-n", guest, "neigh", "show", address).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def test_guests_on_two_hosts_talk_over_vxlan_with_remote_macs_pinned_to_their_tunnel(cloud):
    runner, procs, hosts, prefix = cloud
    conn = runner.sdk()
    shown = {a.host: a for a in conn.network.agents(agent_type="Open vSwitch agent")}
    for name, address in UNDERLAY.items():
        assert shown[name].configuration["tunneling_ip"] == address
        assert shown[name].configuration["tunnel_types"] == ["vxlan"]
        assert shown[name].configuration["enable_distributed_routing"] is True

    image = server_image(conn, hosts["host-a"])
    # Two tenant networks, one CIDR; the same address on host-b on both.
    nets, subnets = [], []
    for name in ("ovs-blue", "ovs-red"):
        net = conn.network.create_network(name=name)
        nets.append(net)
        subnets.append(conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=CIDR,
                                                  enable_dhcp=False))  # fmt: skip
    placed = {  # (network, host, address)
        "blue-a": (0, "host-a", "10.77.0.11"),
        "blue-b": (0, "host-b", "10.77.0.12"),
        "red-a": (1, "host-a", "10.77.0.15"),
        "red-b": (1, "host-b", "10.77.0.12"),
    }
    ports, servers = {}, {}
    for name, (n, host, address) in placed.items():
        ports[name] = conn.network.create_port(
            network_id=nets[n].id, name=name,
            fixed_ips=[{"subnet_id": subnets[n].id, "ip_address": address}],
        )  # fmt: skip
        servers[name] = boot(runner, image.id, name, ports[name].id, host)
    for name, (_, host, _) in placed.items():
        server = conn.compute.wait_for_server(servers[name], status="ACTIVE", wait=90)
        assert server.compute_host == host
        ports[name] = conn.network.get_port(ports[name].id)  # bound: its vif_details
        assert ports[name].binding_host_id == host and ports[name].status == "ACTIVE"
        assert ports[name].binding_vif_type == "ovs"
        assert (
            ports[name].binding_vif_details["ovsdb"].endswith(f"{hosts[host].run_dir}/db.sock")
        )  # each host's own switch
    guests = {name: plug_guest(runner, f"{prefix}{name}", ports[name]) for name in placed}
    wait_for(
        "each host's agent wires its guests' taps",
        lambda: all(hosts[host].wired(ports[name].id) for name, (_, host, _) in placed.items()),
        60,
    )

    # Same network, different hosts: over the tunnel, to blue's machine.
    assert ping(guests["blue-a"], "10.77.0.12", attempts=10).returncode == 0
    assert neighbour_mac(guests["blue-a"], "10.77.0.12") == ports["blue-b"].mac_address
    assert ping(guests["blue-b"], "10.77.0.11", attempts=3).returncode == 0
    # Red, the same CIDR and the same far address: red's machine, never blue's.
    assert ping(guests["red-a"], "10.77.0.12", attempts=10).returncode == 0
    assert neighbour_mac(guests["red-a"], "10.77.0.12") == ports["red-b"].mac_address
    assert ping(guests["red-a"], "10.77.0.11", attempts=2).returncode != 0
    assert ping(guests["red-b"], "10.77.0.11", attempts=2).returncode != 0  # across hosts

    # L2 population: each host sends the other's guests' MACs straight to the tunnel to
    # that host (and the unicast pings went that way), and floods each network only
    # to the hosts with something on it.
    tunnel_to = {h: openvswitch.vxlan_port(address) for h, address in UNDERLAY.items()}
    for name, (_, host, _) in placed.items():
        [other] = [h for h in hosts if h != host]
        pinned = hosts[other].pinned(ports[name].mac_address)
        assert list(pinned) == [tunnel_to[host]], (name, hosts[other].flows("br-tun"))
        assert pinned[tunnel_to[host]] > 0, name
    for host, other in (("host-a", "host-b"), ("host-b", "host-a")):
        for net in nets:
            vlan = hosts[host].local_vlan(net.id)
            assert vlan is not None
            assert hosts[host].flooded_to(vlan) == [tunnel_to[other]]
    # The ARP responder: host-a answered blue-a's and red-a's requests for 10.77.0.12
    # itself, each with its own network's machine (the MACs the guests saw above).
    for name in ("blue", "red"):
        vlan = hosts["host-a"].local_vlan(nets[0 if name == "blue" else 1].id)
        assert hosts["host-a"].arp_answers(vlan, "10.77.0.12"), name

    # blue-b's server gone: its port unbound, host-a forgets where its MAC was.
    conn.compute.delete_server(servers["blue-b"])
    conn.compute.wait_for_delete(servers["blue-b"], wait=60)
    wait_for("host-a unpins blue-b's MAC",
             lambda: not hosts["host-a"].pinned(ports["blue-b"].mac_address), 30)  # fmt: skip
    assert hosts["host-a"].pinned(ports["red-b"].mac_address)
    procs.check_running()


def forwarded(namespace: str) -> int:
    """Datagrams the namespace's kernel has routed (`Ip: ForwDatagrams`)."""
    lines = [line.split() for line in sh("ip", "netns", "exec", namespace, "cat",
                                         "/proc/net/snmp").stdout.splitlines()]  # fmt: skip
    names, values = [fields for fields in lines if fields[0] == "Ip:"][:2]
    return int(values[names.index("ForwDatagrams")])


def flow_packets(flows: str, *parts: str) -> int:
    """Packets counted by the flows that have every one of `parts`."""
    return sum(int(f.split("n_packets=")[1].split(",")[0])
               for f in flows.splitlines() if all(p in f for p in parts))  # fmt: skip


def pings(guest: str, address: str, count: int = 20) -> bool:
    proc = sh("ip", "netns", "exec", guest, "ping", "-c", str(count), "-i", "0.05", "-W", "1",
              address, check=False)  # fmt: skip
    return proc.returncode == 0


def test_a_distributed_router_routes_east_west_on_the_sending_host_and_north_south_centrally(
    cloud,
):
    """A distributed router with a gateway, two subnets, its own host (the L3 agent's:
    `central`) and the other (`far`): guests on far's two subnets reach each other
    through far's own copy of the router (the central router's kernel routes none of
    it); a central guest and a far guest on different subnets each go through their
    own host's router, the frames carrying the sending host's DVR MAC through the
    tunnel and the gateway's MAC again on arrival; a far guest reaches the outside
    through the central router's SNAT, and the outside reaches it by a floating IP."""
    runner, procs, hosts, prefix = cloud
    conn = runner.sdk()
    image = server_image(conn, hosts["host-a"])
    public = conn.network.find_network("public")
    router = conn.network.create_router(
        name="dvr", distributed=True, external_gateway_info={"network_id": public.id}
    )
    nets, subnets = [], []
    for i in (1, 2):
        nets.append(conn.network.create_network(name=f"dvr-{i}"))
        cidr = f"10.8{i}.0.0/24"
        subnets.append(
            conn.network.create_subnet(
                network_id=nets[-1].id, ip_version=4, cidr=cidr, enable_dhcp=False
            )
        )
        conn.network.add_interface_to_router(router, subnet_id=subnets[-1].id)
    (central,) = [a.host for a in conn.network.routers_hosting_l3_agents(router)]
    (far,) = set(hosts) - {central}
    modes = {
        a.host: a.configuration["agent_mode"] for a in conn.network.agents(agent_type="L3 agent")
    }
    assert modes == {"host-a": "dvr_snat", "host-b": "dvr_snat"}
    group = conn.network.create_security_group(name="dvr-icmp")
    conn.network.create_security_group_rule(
        security_group_id=group.id, direction="ingress", ethertype="IPv4", protocol="icmp"
    )
    placed = {  # (network, host, address)
        "c1": (0, central, "10.81.0.11"),
        "f1": (0, far, "10.81.0.12"),
        "f2": (1, far, "10.82.0.12"),
    }
    ports, servers = {}, {}
    for name, (n, host, address) in placed.items():
        ports[name] = conn.network.create_port(
            network_id=nets[n].id, name=f"dvr-{name}", security_group_ids=[group.id],
            fixed_ips=[{"subnet_id": subnets[n].id, "ip_address": address}],
        )  # fmt: skip
        servers[name] = boot(runner, image.id, f"dvr-{name}", ports[name].id, host)
    guests = {}
    for name, (n, _, _) in placed.items():
        conn.compute.wait_for_server(servers[name], status="ACTIVE", wait=90)
        ports[name] = conn.network.get_port(ports[name].id)
        guests[name] = plug_guest(runner, f"{prefix}dvr-{name}", ports[name])
        sh("ip", "-n", guests[name], "route", "add", "default", "via", f"10.8{n + 1}.0.1")
    drivers = {h: openvswitch.OpenvSwitchDriver(hosts[h].state_dir) for h in hosts}
    routers = {h: drivers[h].router_ns(router.id) for h in hosts}
    wait_for(
        "each host's agent wires its guests and the far host runs the router's interfaces",
        lambda: all(hosts[h].wired(ports[name].id) for name, (_, h, _) in placed.items())
        and routers[far] in netns_list()
        and len([d for d in sh("ip", "-n", routers[far], "-o", "link").stdout.splitlines()
                 if ": qr-" in d]) == 2,
        90,
    )  # fmt: skip

    # East-west on the far host: routed there, never by the central router.
    before = {h: forwarded(routers[h]) for h in hosts}
    assert pings(guests["f1"], "10.82.0.12", count=20)
    after = {h: forwarded(routers[h]) for h in hosts}
    assert after[central] == before[central]
    assert after[far] - before[far] >= 40  # 20 requests and 20 replies
    # Across hosts: each direction routed by its sender's host; what far's router sent
    # arrives at the central host with far's DVR MAC, turned back into the gateway's.
    before = after
    assert pings(guests["c1"], "10.82.0.12", count=10)
    after = {h: forwarded(routers[h]) for h in hosts}
    assert after[central] - before[central] >= 10 and after[far] - before[far] >= 10
    far_mac = runner.run_async(_host_mac(runner, far))
    assert flow_packets(hosts[central].flows("br-int"), "priority=95", f"dl_src={far_mac}") > 0
    assert flow_packets(hosts[far].flows("br-tun"), "priority=2", f"set_field:{far_mac}") > 0
    gateway2 = next(p for p in conn.network.ports(device_id=router.id, network_id=nets[1].id))
    assert neighbour_mac(guests["f2"], "10.82.0.1") == gateway2.mac_address
    assert neighbour_mac(guests["c1"], "10.81.0.1") == next(
        p.mac_address for p in conn.network.ports(device_id=router.id, network_id=nets[0].id)
    )

    # North-south: the outside (a namespace on the central host's br-ex holding the
    # external gateway's address, with no route to the tenant subnets) is reached from
    # the far host by SNAT and reaches the far guest by its floating IP, both through the
    # central router; the far host's router forwards none of it.
    outside = f"{prefix}dvr-outside"
    switch_ns = ports["c1"].binding_vif_details["netns"]
    sh("ip", "netns", "add", outside)
    sh("ip", "-n", outside, "link", "add", "eth0", "type", "veth", "peer", "name",
       f"cmlo-o{prefix[-5:-1]}", "netns", switch_ns)  # fmt: skip
    sh("ip", "-n", outside, "addr", "add", "172.24.4.1/24", "dev", "eth0")
    sh("ip", "-n", outside, "link", "set", "eth0", "up")
    sh("ip", "-n", switch_ns, "link", "set", f"cmlo-o{prefix[-5:-1]}", "up")
    sh("ovs-vsctl", f"--db=unix:{hosts[central].run_dir}/db.sock", "add-port", "br-ex",
       f"cmlo-o{prefix[-5:-1]}")  # fmt: skip
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=ports["f2"].id)
    before = {h: forwarded(routers[h]) for h in hosts}
    assert pings(guests["f1"], "172.24.4.1", count=5) or pings(guests["f1"], "172.24.4.1", count=5)
    assert pings(outside, fip.floating_ip_address, count=5) or pings(
        outside, fip.floating_ip_address, count=5
    )
    after = {h: forwarded(routers[h]) for h in hosts}
    assert after[central] - before[central] >= 10
    assert after[far] == before[far]
    procs.check_running()


async def _host_mac(runner: CloudRunner, host: str) -> str:
    from sqlalchemy import select

    from cumulo.network.models import DvrHostMac

    async with runner.cloud.network.db.read() as session:
        return await session.scalar(select(DvrHostMac.mac_address).where(DvrHostMac.host == host))
