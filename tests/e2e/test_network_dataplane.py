"""The data plane, end to end, on each driver (linuxbridge, openvswitch): guests in
namespaces get their addresses over DHCP, reach each other, cross the router, obey
security groups and are reached on a floating IP from the external network; the
agent's resync rebuilds and removes; a restarted agent keeps an established TCP
connection flowing; a guest on a network without a router reads its metadata from the
DHCP namespace.

Driven through the real Network API of a private cloud whose data plane is the
driver under test. The guests and the external network are namespaces this test
makes; the host's own interfaces, addresses and routes are never touched. Needs root,
iproute2, nftables, dnsmasq, busybox (udhcpc) and ping (and Open vSwitch for
openvswitch): skipped without them, failed under CI.
"""

from __future__ import annotations

import asyncio
import json
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
from cumulo.network.dataplane import dhcp, openvswitch, ovsdb
from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver, bridge_name
from cumulo.network.dataplane.state import desired_state
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail

HOST = "e2e-dataplane"
TOOLS = ("ip", "nft", "dnsmasq", "busybox", "ping", "sysctl")

# udhcpc's hook: configure what the DHCP server handed out, as a guest would: the
# classless static routes (option 121) when given, which replace the router option.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        ip route replace "$1" via "$2" dev "$interface"
        shift 2
      done
    elif [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    ;;
esac
exit 0
"""

# Run inside a guest's namespace: what 169.254.169.254 answers it.
METADATA_REQUEST = """
import urllib.request, urllib.error
try:
    with urllib.request.urlopen(
        "http://169.254.169.254/openstack/latest/meta_data.json", timeout=10
    ) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


# Run inside guests' namespaces: one TCP connection, a numbered, timestamped line every
# <interval> seconds (the sender's third argument) until the sender's stdin closes; the
# receiver records when each line arrived (CLOCK_MONOTONIC: the same clock as the
# test's, in any network namespace).
RECEIVER = r"""
import json, socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
print("listening", flush=True)
conn, peer = srv.accept()
srv.close()
conn.settimeout(20)
arrivals, buf, error = [], b"", None
try:
    while data := conn.recv(4096):
        now = time.monotonic()
        *lines, buf = (buf + data).split(b"\n")
        arrivals += [(int(line.split()[0]), now) for line in lines]
except OSError as e:
    error = repr(e)
print(json.dumps({"peer": list(peer), "arrivals": arrivals, "error": error}), flush=True)
"""
SENDER = r"""
import json, select, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(json.dumps({"local": list(s.getsockname())}), flush=True)
seq, error = 0, None
try:
    while not select.select([sys.stdin], [], [], float(sys.argv[3]))[0]:
        s.sendall(b"%d %f\n" % (seq, time.monotonic()))
        seq += 1
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # until the receiver has read everything and closed
except OSError as e:
    error = repr(e)
print(json.dumps({"sent": seq, "error": error}), flush=True)
"""


def sh(
    *argv: str, check: bool = True, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env_extra)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc


def netns_list() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line]


def metadata(ns: str) -> tuple[int, str]:
    """GET /openstack/latest/meta_data.json at 169.254.169.254 from ns: (status, body)."""
    out = sh("ip", "netns", "exec", ns, sys.executable, "-c", METADATA_REQUEST).stdout
    status, _, body = out.partition(" ")
    return int(status), body


def allowed_icmp_packets(lab: Lab) -> int:
    """Packets br-int's ingress rule flows for ICMP have let through (openvswitch)."""
    out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "table=82,icmp",
             env_extra=lab.driver.daemons.env).stdout  # fmt: skip
    return sum(int(f.split("n_packets=")[1].split(",")[0]) for f in out.splitlines()
               if "n_packets=" in f and "ct(commit" in f)  # fmt: skip


def established_flow(lab: Lab, port_id: str) -> tuple[int, float]:
    """openvswitch: (n_packets, duration in s) of the flow passing a guest's established
    ingress connections (table 82)."""
    ofport = lab.runner.run_async(lab.driver._call("ports", openvswitch.INTEGRATION))[
        f"tap{port_id[:11]}"]["ofport"]  # fmt: skip
    out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int",
             f"table=82,reg5={ofport},ct_state=-new+est-inv+trk",
             env_extra=lab.driver.daemons.env).stdout  # fmt: skip
    [flow] = [f for f in out.splitlines() if "n_packets=" in f]
    packets = int(flow.split("n_packets=")[1].split(",")[0])
    return packets, float(flow.split("duration=")[1].split("s,")[0])


def legs_without_flows(lab: Lab) -> list[str]:
    """openvswitch: the DHCP and router legs on br-int that no flow matches yet."""
    if not isinstance(lab.driver, openvswitch.OpenvSwitchDriver):
        return []
    ports = lab.runner.run_async(lab.driver._call("ports", openvswitch.INTEGRATION))
    flows = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", openvswitch.INTEGRATION,
               env_extra=lab.driver.daemons.env).stdout  # fmt: skip
    return [name for name, p in ports.items() if name.startswith("cmlo-") and p["ofport"] > 0
            and not re.search(rf"in_port={p['ofport']}\b", flows)]  # fmt: skip


def switch_state(lab: Lab) -> str:
    """openvswitch: what the switch has wired, for a failure's message (ports and their
    OpenFlow numbers, br-int's flows, the datapath's ports, the host namespace's links:
    a port ovs-vswitchd opened is PROMISC there)."""
    if not isinstance(lab.driver, openvswitch.OpenvSwitchDriver):
        return ""
    env, remote = lab.driver.daemons.env, lab.driver.daemons.remote
    ctl = str(lab.driver.run_dir / "ovs-vswitchd.ctl")
    commands = [
        ("ovs-vsctl", f"--db={remote}", "--columns=name,ofport,ifindex,external_ids,error",
         "list", "Interface"),
        ("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", openvswitch.INTEGRATION),
        ("ovs-appctl", "-t", ctl, "dpif/show"),
        ("ip", "-n", lab.driver.host_ns, "-br", "link"),
    ]  # fmt: skip
    return "\n".join(sh(*argv, check=False, env_extra=env).stdout for argv in commands)


def route_to(ns: str, address: str) -> str:
    return sh("ip", "-n", ns, "-4", "route", "get", address).stdout


def ping(ns: str, address: str, attempts: int = 1) -> subprocess.CompletedProcess:
    """One echo from ns, up to `attempts` tries; the last try's result."""
    for _ in range(attempts):
        proc = sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address, check=False)
        if proc.returncode == 0:
            break
    return proc


def plug_guest(runner: CloudRunner, ns: str, port) -> None:
    """A namespace `ns` with eth0 (the port's MAC) plugged as the compute side plugs a
    tap into the port's binding:vif_details (the port shown to an admin)."""
    details = port.binding_vif_details
    tap = f"tap{port.id[:11]}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", tap,
       "netns", details["netns"])  # fmt: skip
    sh("ip", "-n", ns, "link", "set", "eth0", "address", port.mac_address, "up")
    sh("ip", "-n", details["netns"], "link", "set", tap, "up")
    if port.binding_vif_type == "ovs":  # as the compute side plugs it (os-vif's way)
        runner.run_async(openvswitch.plug(details["ovsdb"], details["bridge_name"],
                                          tap, port.id, port.mac_address))  # fmt: skip
    else:
        sh("ip", "-n", details["netns"], "link", "set", tap, "master", details["bridge_name"])


def attach_external(driver: LinuxBridgeDriver, device: str, network_id: str) -> None:
    """A device in the data plane's namespace onto the external network (br-ex on
    openvswitch, as an operator adds the host's outside interface to it)."""
    if isinstance(driver, openvswitch.OpenvSwitchDriver):
        db = ovsdb.Ovsdb(driver.daemons.remote)
        try:
            db.ensure_port(openvswitch.EXTERNAL, device)
        finally:
            db.close()
        sh("ip", "-n", driver.host_ns, "link", "set", device, "up")
    else:
        sh("ip", "-n", driver.host_ns, "link", "set", device, "master",
           bridge_name(network_id), "up")  # fmt: skip


class Lab:
    """The cloud, its data plane, and the namespaces standing in for guests."""

    def __init__(self, runner: CloudRunner, tag: str, script: Path) -> None:
        self.runner = runner
        self.conn = runner.sdk()
        self.agent = runner.cloud.network.agent
        self.driver: LinuxBridgeDriver = self.agent.driver
        self.tag = tag
        self.script = script

    def settle(self) -> None:
        """Until the agent has applied every change made so far."""

        async def sync() -> None:
            await self.agent.sync({})
            await self.agent.wait_idle(60)

        self.runner.run_async(sync())

    def port(self, network_id: str, **attrs) -> dict:
        port = self.conn.network.create_port(
            network_id=network_id, binding_host_id=HOST, device_owner="compute:nova", **attrs
        )
        return self.conn.network.get_port(port.id)  # as admin: with binding:vif_details

    def guest(self, name: str, port) -> str:
        """A namespace plugged as the compute side plugs a tap, with the port's MAC."""
        ns = f"{self.tag}{name}"
        plug_guest(self.runner, ns, port)
        return ns

    def server(self, name: str, port) -> dict:
        """A server (the fake hypervisor's) behind `port`: the metadata service knows it."""
        image = self.runner.state_dir / "tiny.qcow2"
        if not image.exists():
            sh("qemu-img", "create", "-f", "qcow2", str(image), "64M")
            self.runner.openstack("image", "create", "dp-tiny", "--file", str(image),
                                  "--disk-format", "qcow2", "--container-format", "bare",
                                  "--public", "-f", "json")  # fmt: skip
        return self.runner.openstack(
            "server", "create", "--image", "dp-tiny", "--flavor", "m1.tiny",
            "--port", port.id, "--wait", name, "-f", "json",
        )  # fmt: skip

    def dhcp(self, ns: str) -> str:
        """Run udhcpc in the guest: the address the DHCP server gave it."""
        sh("ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q",
           "-t", "10", "-T", "1", "-O", "staticroutes", "-s", str(self.script))  # fmt: skip
        out = sh("ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0").stdout
        return out.split()[3].split("/")[0]


DRIVERS = {"linuxbridge": LinuxBridgeDriver, "openvswitch": openvswitch.OpenvSwitchDriver}


@pytest.fixture(scope="module", params=list(DRIVERS))
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    driver = request.param
    if os.geteuid() != 0:
        skip_or_fail(f"the {driver} data plane needs root (network namespaces)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if driver == "openvswitch":
        missing += [t for t in openvswitch.TOOLS if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the {driver} data plane test needs: {', '.join(missing)}")
    state_dir: Path = tmp_path_factory.mktemp("cumulo-dataplane")
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.network.driver = driver
    config.network.agent_host = HOST
    config.compute.host = HOST  # the fake hypervisor's servers are bound to this agent
    write_config(state_dir, config)
    script = state_dir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    tag = f"cmlo-t{uuid.uuid4().hex[:6]}-"
    runner = CloudRunner(state_dir)
    try:
        yield Lab(runner.start(), tag, script)
    finally:
        runner.stop()
        for ns in netns_list():
            if ns.startswith(tag):
                sh("ip", "netns", "delete", ns, check=False)
        leftover = DRIVERS[driver](state_dir)
        asyncio.run(leftover.teardown())
        left = [ns for ns in netns_list() if ns.startswith((leftover.prefix, tag))]
        assert not left, f"namespaces left behind: {left}"
        assert str(state_dir) not in sh("ps", "-eo", "args").stdout, "dnsmasq left running"


def test_guests_get_dhcp_cross_the_router_obey_groups_and_answer_on_floating_ips(lab: Lab):
    conn = lab.conn
    net1 = conn.network.create_network(name="dp-one")
    sub1 = conn.network.create_subnet(network_id=net1.id, ip_version=4, cidr="10.91.0.0/24")
    p1, p2 = lab.port(net1.id), lab.port(net1.id)
    if isinstance(lab.driver, openvswitch.OpenvSwitchDriver):
        assert p1.binding_vif_type == "ovs"
        assert p1.binding_vif_details["bridge_name"] == "br-int"
    else:
        assert p1.binding_vif_details["bridge_name"].startswith("cmlo-")
    lab.settle()

    # Two guests on one network get their ports' addresses from dnsmasq and ping.
    g1, g2 = lab.guest("g1", p1), lab.guest("g2", p2)
    assert lab.dhcp(g1) == p1.fixed_ips[0]["ip_address"]
    assert lab.dhcp(g2) == p2.fixed_ips[0]["ip_address"]
    ip1, ip2 = p1.fixed_ips[0]["ip_address"], p2.fixed_ips[0]["ip_address"]
    assert ping(g1, ip2, attempts=5).returncode == 0
    assert ping(g2, ip1).returncode == 0

    # A guest on a second network reaches the first only through the router.
    net2 = conn.network.create_network(name="dp-two")
    sub2 = conn.network.create_subnet(network_id=net2.id, ip_version=4, cidr="10.92.0.0/24")
    p3 = lab.port(net2.id)
    lab.settle()
    g3 = lab.guest("g3", p3)
    assert lab.dhcp(g3) == p3.fixed_ips[0]["ip_address"]
    assert ping(g3, ip1).returncode != 0
    router = conn.network.create_router(name="dp-router")
    conn.network.add_interface_to_router(router, subnet_id=sub1.id)
    conn.network.add_interface_to_router(router, subnet_id=sub2.id)
    lab.settle()
    # The legs an apply makes get their flows in that apply (not at a later one).
    assert legs_without_flows(lab) == []
    crossed = ping(g3, ip1, attempts=5)
    assert crossed.returncode == 0, crossed.stdout
    assert "ttl=63" in crossed.stdout  # one routed hop

    # A group without an ICMP rule blocks the ping; adding the rule lets it through.
    sg = conn.network.create_security_group(name="dp-no-icmp")
    conn.network.update_port(p2.id, security_groups=[sg.id])
    lab.settle()
    assert ping(g1, ip2, attempts=2).returncode != 0
    conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol="icmp"
    )
    lab.settle()
    assert ping(g1, ip2, attempts=5).returncode == 0

    # A floating IP is reachable from the external network (172.24.4.1 is its gateway).
    public = conn.network.find_network("public")
    conn.network.update_router(router, external_gateway_info={"network_id": public.id})
    fip = conn.network.create_ip(floating_network_id=public.id)
    conn.network.update_ip(fip, port_id=p2.id)
    lab.settle()
    ext = f"{lab.tag}ext"
    sh("ip", "netns", "add", ext)
    sh("ip", "-n", ext, "link", "add", "eth0", "type", "veth", "peer", "name", "ext0",
       "netns", lab.driver.host_ns)  # fmt: skip
    sh("ip", "-n", ext, "addr", "add", "172.24.4.1/24", "dev", "eth0")
    sh("ip", "-n", ext, "link", "set", "eth0", "up")
    attach_external(lab.driver, "ext0", public.id)
    assert ping(ext, fip.floating_ip_address, attempts=5).returncode == 0
    # ...and the guests behind the router reach the outside by SNAT.
    assert ping(g1, "172.24.4.1", attempts=3).returncode == 0

    # Resync: a fresh driver (an agent restart) rebuilds what was lost and removes
    # what is no longer wanted: here a router namespace nobody knows any more.
    stale = lab.driver.router_ns(str(uuid.uuid4()))
    sh("ip", "netns", "add", stale)
    sh("ip", "netns", "delete", lab.driver.router_ns(router.id))
    ovs = isinstance(lab.driver, openvswitch.OpenvSwitchDriver)
    allowed_before = allowed_icmp_packets(lab) if ovs else 0
    restarted = type(lab.driver)(lab.runner.state_dir)
    state = lab.runner.run_async(desired_state(lab.runner.cloud.network, HOST))

    async def restart() -> tuple[int, int]:
        # The running agent stands still meanwhile (its driver's locks held), as the
        # agent a restart replaces would: only the new driver touches the data plane.
        async with lab.driver._applying, lab.driver._lock:
            await restarted.apply(state)
            # A rebuilt router's first packets go up to the userspace datapath (slow
            # under load): a few more tries than elsewhere.
            routed = await asyncio.to_thread(ping, g3, ip1, 10)
            floating = await asyncio.to_thread(ping, ext, fip.floating_ip_address, 10)
        return routed.returncode, floating.returncode

    done = asyncio.run_coroutine_threadsafe(restart(), lab.runner._loop)
    pings = done.result(120)
    assert pings == (0, 0), switch_state(lab)  # (routed ping, floating IP ping)
    assert stale not in netns_list()
    lab.settle()
    if ovs:
        # Reconciled, not flushed: the security group's flow kept its counters.
        assert allowed_before > 0 and allowed_icmp_packets(lab) > allowed_before
        # The agents API says which datapath carries the packets.
        [agent] = lab.runner.openstack("network", "agent", "list", "--host", HOST,
                                       "--agent-type", "open-vswitch", "-f", "json")  # fmt: skip
        shown = lab.runner.openstack("network", "agent", "show", agent["ID"], "-f", "json")
        config = shown["configuration"]
        assert config["driver"] == "openvswitch"
        assert config["datapath_type"] == ("system" if ovsdb.kernel_datapath() else "netdev")
        # A port deleted while its guest runs passes nothing from then on.
        assert ping(g1, ip2, attempts=3).returncode == 0
        conn.network.delete_port(p1.id)
        lab.settle()
        assert ping(g1, ip2).returncode != 0

    # Deleting the router and a network removes their namespaces and dnsmasq.
    conn.network.update_ip(fip, port_id=None)
    conn.network.delete_ip(fip)
    conn.network.update_router(router, external_gateway_info={})
    conn.network.remove_interface_from_router(router, subnet_id=sub1.id)
    conn.network.remove_interface_from_router(router, subnet_id=sub2.id)
    conn.network.delete_router(router)
    conn.network.delete_port(p3.id)
    conn.network.delete_network(net2)
    lab.settle()
    remaining = netns_list()
    assert lab.driver.router_ns(router.id) not in remaining
    assert lab.driver.dhcp_ns(net2.id) not in remaining
    assert lab.driver.dhcp_ns(net1.id) in remaining


def test_an_agent_restart_keeps_established_connections_flowing(lab: Lab):
    """Issue #19: a restarted agent (a fresh driver applying the desired state, the
    guests' namespaces and taps in place) reconciles the data plane under a live TCP
    connection: the same connection carries on, with no gap of a second or more."""
    conn = lab.conn
    net = conn.network.create_network(name="dp-restart")
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.95.0.0/24")
    sg = conn.network.create_security_group(name="dp-restart-tcp")
    for rule in ({"protocol": "icmp"}, {"protocol": "tcp", "port_range_min": 5001,
                                          "port_range_max": 5001}):  # fmt: skip
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", ethertype="IPv4", **rule
        )
    sender_port = lab.port(net.id, security_groups=[sg.id])
    receiver_port = lab.port(net.id, security_groups=[sg.id])
    lab.settle()
    guests = []
    for name, port in (("rs-tx", sender_port), ("rs-rx", receiver_port)):
        ns = lab.guest(name, port)
        sh("ip", "-n", ns, "addr", "add", f"{port.fixed_ips[0]['ip_address']}/24", "dev", "eth0")
        guests.append(ns)
    tx, rx = guests
    rx_ip = receiver_port.fixed_ips[0]["ip_address"]
    # The watch writes the taps' flows once the switch has numbered them.
    assert ping(tx, rx_ip, attempts=20).returncode == 0, switch_state(lab)

    def python(ns: str, script: str, *args: str) -> subprocess.Popen:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    receiver = python(rx, RECEIVER, "5001")
    sender = restarted = None
    try:
        assert receiver.stdout.readline().strip() == "listening"
        sender = python(tx, SENDER, rx_ip, "5001", "0.03")
        local = json.loads(sender.stdout.readline())["local"]
        time.sleep(1)  # established, and its flows counting
        ovs = isinstance(lab.driver, openvswitch.OpenvSwitchDriver)
        before = established_flow(lab, receiver_port.id) if ovs else (0, 0.0)
        restarted = type(lab.driver)(lab.runner.state_dir)
        state = lab.runner.run_async(desired_state(lab.runner.cloud.network, HOST))

        async def restart() -> tuple[float, float]:
            # The agent being replaced stands still.
            async with lab.driver._applying, lab.driver._lock:
                began = time.monotonic()
                await restarted.apply(state)
                return began, time.monotonic()

        began, ended = asyncio.run_coroutine_threadsafe(restart(), lab.runner._loop).result(120)
        time.sleep(1)  # and it goes on after
        after = established_flow(lab, receiver_port.id) if ovs else (0, 0.0)
        sender.stdin.close()
        sent = json.loads(sender.stdout.readline())
        received = json.loads(receiver.stdout.readline())
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
        if getattr(restarted, "db", None) is not None:
            restarted.db.close()
    # The one connection the sender made, never reset, every line in order.
    assert sent["error"] is None and received["error"] is None, (sent, received)
    assert received["peer"] == local
    arrivals = received["arrivals"]
    assert [seq for seq, _ in arrivals] == list(range(sent["sent"]))
    # The largest silence around the restart: from the last line before it to the
    # first after it.
    times = [t for _, t in arrivals]
    first = max(i for i, t in enumerate(times) if t <= began)
    last = min(i for i, t in enumerate(times) if t >= ended)
    gap = max(times[i + 1] - times[i] for i in range(first, last))
    print(f"{lab.driver.name}: restart took {ended - began:.2f} s, {last - first} lines "
          f"meanwhile, largest gap {gap * 1000:.0f} ms")  # fmt: skip
    assert gap < 1.0, f"{gap:.2f} s without a line during the {ended - began:.2f} s restart"
    if ovs:
        # Reconciled, not flushed: the new driver compared br-int's flows with its own
        # (replace-flows), and the flow is the one installed before (its age and
        # counters carried on).
        assert openvswitch.INTEGRATION in restarted._flows
        assert after[0] > before[0]
        assert after[1] >= before[1] + (ended - began), (before, after)


@pytest.mark.parametrize("release", ["dhcp_release", "restart"])
def test_an_address_freed_by_a_deleted_port_is_leased_to_the_next_port(
    lab: Lab, release: str, monkeypatch: pytest.MonkeyPatch
):
    """dnsmasq keeps a deleted port's lease for its old MAC: the agent releases it (with
    dhcp_release, or by restarting dnsmasq without it) so the next port IPAM gives that
    address to gets it (without that: "no address available")."""
    if release == "dhcp_release" and dhcp.dhcp_release_tool() is None:
        skip_or_fail("dhcp_release (dnsmasq-utils) is not installed")
    if release == "restart":
        monkeypatch.setattr(dhcp, "dhcp_release_tool", lambda: None)
    conn = lab.conn
    net = conn.network.create_network(name=f"dp-reuse-{release}")
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.93.0.0/24")
    lab.settle()
    first = lab.port(net.id, fixed_ips=[{"ip_address": "10.93.0.50"}])
    lab.settle()
    old = lab.guest(f"old-{release[:4]}", first)
    assert lab.dhcp(old) == "10.93.0.50"
    leases = lab.runner.state_dir / "network" / "dhcp" / net.id / "leases"
    assert first.mac_address in leases.read_text()

    sh("ip", "netns", "delete", old)
    conn.network.delete_port(first.id)
    second = lab.port(net.id, fixed_ips=[{"ip_address": "10.93.0.50"}])
    assert second.mac_address != first.mac_address
    lab.settle()
    new = lab.guest(f"new-{release[:4]}", second)
    assert lab.dhcp(new) == "10.93.0.50"
    assert first.mac_address not in leases.read_text()


def test_a_guest_without_a_router_reads_its_metadata_from_the_dhcp_namespace(lab: Lab):
    """Neutron's isolated metadata: dnsmasq routes 169.254.169.254/32 to the DHCP port,
    where the metadata proxy answers for the instance that owns the source address."""
    conn = lab.conn
    net = conn.network.create_network(name="dp-isolated")
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.94.0.0/24")
    port, other = lab.port(net.id), lab.port(net.id)
    server = lab.server("dp-md", port)
    assert server["status"] == "ACTIVE"
    lab.settle()
    [dhcp_port] = conn.network.ports(network_id=net.id, device_owner="network:dhcp")
    dhcp_ip = dhcp_port.fixed_ips[0]["ip_address"]

    # The guest's lease brings the route to 169.254.169.254 via the DHCP port (and the
    # default route, which option 121 replaces option 3 with); the proxy there answers.
    guest = lab.guest("md", port)
    assert lab.dhcp(guest) == port.fixed_ips[0]["ip_address"]
    assert f"via {dhcp_ip} " in route_to(guest, "169.254.169.254")
    assert "via 10.94.0.1 " in route_to(guest, "192.0.2.1")
    status, body = metadata(guest)
    assert status == 200, body
    meta = json.loads(body)
    assert (meta["uuid"], meta["name"]) == (server["id"], "dp-md")
    # A machine on the same network whose port no instance owns gets nothing.
    stranger = lab.guest("md-x", other)
    lab.dhcp(stranger)
    status, body = metadata(stranger)
    assert status == 404 and server["id"] not in body

    # A router on the subnet: a renewed lease routes metadata to the gateway (the
    # router's proxy); the DHCP namespace's proxy stays for leases not renewed yet.
    router = conn.network.create_router(name="dp-md-router")
    conn.network.add_interface_to_router(router, subnet_id=sub.id)
    lab.settle()
    assert metadata(guest)[0] == 200  # still the route to the DHCP port
    lab.dhcp(guest)
    assert "via 10.94.0.1 " in route_to(guest, "169.254.169.254")
    status, body = metadata(guest)
    assert status == 200 and json.loads(body)["uuid"] == server["id"]
    conn.network.remove_interface_from_router(router, subnet_id=sub.id)
    conn.network.delete_router(router)
    lab.settle()
    lab.dhcp(guest)
    assert f"via {dhcp_ip} " in route_to(guest, "169.254.169.254")
    assert metadata(guest)[0] == 200

    # Deleting the network removes its DHCP namespace and closes the proxy's listener.
    dhcp_ns = lab.driver.dhcp_ns(net.id)
    proxy = lab.driver.metadata_proxy
    assert dhcp_ns in proxy._listeners
    lab.runner.openstack("server", "delete", "--wait", server["id"])
    for ns in (guest, stranger):
        sh("ip", "netns", "delete", ns)
    conn.network.delete_port(other.id)
    conn.network.delete_port(port.id)
    conn.network.delete_network(net)
    lab.settle()
    assert dhcp_ns not in netns_list()
    assert dhcp_ns not in proxy._listeners
