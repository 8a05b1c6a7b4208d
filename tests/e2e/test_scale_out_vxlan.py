"""Two hosts, one tenant network: real guests on different hosts ping each other over
VXLAN between the hosts' data planes, linuxbridge and openvswitch.

host-a is the controller (`cumulo up` in-process, on RabbitMQ) with its own compute host
and network agent; host-b runs `cumulo compute` and `cumulo network-agent` as processes
of their own with a state dir of their own. Each host's data plane lives in its own
namespace; a veth from each into a bridge of the test is the underlay (MTU 1550: the
overlay keeps 1500). The demo network's DHCP server and router are on host-a only (one
per overlay), so host-b's guest also gets its address across the tunnel. The agents
report their VTEPs; each host learns the other's ports (L2 population): on linuxbridge
its VXLAN device's forwarding database, on openvswitch br-tun's flows pinning the MAC
to the tunnel to that host (the QEMU guests' taps on each host's br-int, userspace
datapath).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane import openvswitch
from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver, vxlan_name
from tests.cloudrunner import (
    CloudRunner,
    configure_guest_state_dir,
    remove_data_plane,
    stop_guest_cloud,
)
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
from tests.conftest import require_real_guests, skip_or_fail
from tests.e2e.test_network_ovs_two_hosts import Host
from tests.e2e.test_qemu_cloud_guests import PING_USER_DATA, pings, register_tiny_images

pytestmark = pytest.mark.e2e

UNDERLAY = {"host-a": "192.168.232.1", "host-b": "192.168.232.2"}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc


@pytest.fixture(scope="module", params=["linuxbridge", "openvswitch"])
def two_hosts(request, tmp_path_factory):
    driver = request.param
    require_real_guests()
    if driver == "openvswitch":
        missing = [t for t in openvswitch.TOOLS if not shutil.which(t)]
        if missing:
            skip_or_fail(f"the openvswitch data plane needs: {', '.join(missing)}")
    if not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    tag = uuid.uuid4().hex[:4]
    namespace = f"cumulo-test-{tag}"
    root = tmp_path_factory.mktemp("vxlan")
    underlay = f"cmlo-u{tag}"
    devices = {"host-a": f"cmlo-ua{tag}", "host-b": f"cmlo-ub{tag}"}
    add_underlay(underlay, list(devices.values()))
    controller = root / "host-a"
    configure_guest_state_dir(controller, "host-a", driver)
    # The tunnel's local address and underlay device: [network] tunnel_* on linuxbridge,
    # ovs_tunnel_* on openvswitch.
    tunnel = "ovs_tunnel" if driver == "openvswitch" else "tunnel"
    config = load_config(controller)
    config.messaging.transport_url = RABBIT
    config.messaging.namespace = namespace
    setattr(config.network, f"{tunnel}_local_ip", f"{UNDERLAY['host-a']}/24")
    setattr(config.network, f"{tunnel}_device", devices["host-a"])
    write_config(controller, config)
    runner = None
    procs = Processes(root)
    host_b = host_state_dir(
        controller,
        root / "host-b",
        compute={"host": "host-b"},
        network={
            "agent_host": "host-b",
            f"{tunnel}_local_ip": f"{UNDERLAY['host-b']}/24",
            f"{tunnel}_device": devices["host-b"],
        },
    )
    try:
        runner = CloudRunner(controller).start(timeout=120)
        procs.start("compute-b", "compute", "--state-dir", str(host_b))
        procs.start("network-b", "network-agent", "--state-dir", str(host_b))

        def joined() -> bool:
            procs.check_running()
            computes = runner.openstack("compute", "service", "list", "-f", "json")
            agents = runner.openstack("network", "agent", "list", "-f", "json")
            return any(s["Host"] == "host-b" and s["State"] == "up" for s in computes) and any(
                a["Host"] == "host-b" and a["Alive"] for a in agents
            )

        wait_for("host-b joins", joined, 90)
        yield runner, procs, host_b, root
    finally:
        try:
            if runner is not None:
                stop_guest_cloud(runner)
        finally:
            procs.stop()
            remove_data_plane(host_b)
            remove_underlay(underlay, list(devices.values()))
            asyncio.run(delete_queues(namespace))


def test_guests_on_two_hosts_ping_each_other_over_vxlan(two_hosts):
    runner, procs, host_b, root = two_hosts
    agents = runner.openstack("network", "agent", "list", "--host", "host-b", "-f", "json")
    shown = runner.openstack("network", "agent", "show", agents[0]["ID"], "-f", "json")
    assert shown["configuration"]["tunneling_ip"] == UNDERLAY["host-b"]
    register_tiny_images(runner, root)
    ports, ips = {}, {}
    for host in UNDERLAY:
        port = runner.openstack("port", "create", "--network", "private", f"vx-{host}",
                                "-f", "json")  # fmt: skip
        ports[host], ips[host] = port["id"], port["fixed_ips"][0]["ip_address"]
    servers = {}
    for host, peer in (("host-a", "host-b"), ("host-b", "host-a")):
        user_data = root / f"{host}.sh"
        user_data.write_text(PING_USER_DATA.format(peer=ips[peer]))
        servers[host] = runner.openstack(
            "server", "create", "--image", "tiny", "--flavor", "m1.tiny",
            "--port", ports[host], "--user-data", str(user_data),
            "--availability-zone", f"nova:{host}", f"vm-{host}", "-f", "json",
        )["id"]  # fmt: skip
    for host, server in servers.items():
        wait_for(
            f"vm-{host} ACTIVE",
            lambda s=server: (
                runner.openstack("server", "show", s, "-f", "json")["status"] == "ACTIVE"
            ),
            120,
        )
        shown = runner.openstack("server", "show", server, "-f", "json")
        assert shown["OS-EXT-SRV-ATTR:host"] == host
    for host, peer in (("host-a", "host-b"), ("host-b", "host-a")):

        def pinged(s=servers[host], p=ips[peer]) -> bool:
            found = pings(runner.openstack("console", "log", "show", s), p)
            return bool(found) and found[-1][0] == "ok"

        wait_for(f"vm-{host} pings its peer over VXLAN", pinged, 180)
    # TCP across the tunnel from a QEMU guest: host-b's guest read the metadata service
    # through the router on host-a (on openvswitch's userspace datapath, only once the
    # guest checksums its own frames).
    log_b = runner.openstack("console", "log", "show", servers["host-b"])
    assert "cumulo-guest: metadata hostname=vm-host-b" in log_b, log_b
    # L2 population: host-b sends vm-a's MAC straight to host-a.
    network = runner.openstack("network", "show", "private", "-f", "json")["id"]
    mac_a = runner.openstack("port", "show", ports["host-a"], "-f", "json")["mac_address"]
    if load_config(host_b).network.driver == "openvswitch":
        # br-tun pins the MAC to the tunnel to host-a, and the pings went that way.
        pinned = Host("host-b", host_b).pinned(mac_a)
        tunnel = openvswitch.vxlan_port(UNDERLAY["host-a"])
        assert list(pinned) == [tunnel], Host("host-b", host_b).flows("br-tun")
        assert pinned[tunnel] > 0
        procs.check_running()
        return
    fdb = json.loads(
        sh(
            "bridge",
            "-n",
            LinuxBridgeDriver(host_b).host_ns,
            "-json",
            "fdb",
            "show",
            "dev",
            vxlan_name(network),
        ).stdout  # fmt: skip
    )
    assert {"mac": mac_a, "dst": UNDERLAY["host-a"]} in [
        {"mac": e["mac"], "dst": e.get("dst")} for e in fdb
    ]
    procs.check_running()
