"""Provider networks on a host interface (linuxbridge): a flat network's guests reach a
machine on the physical network through untagged frames, a VLAN network's through
802.1Q-tagged ones, as Neutron's linuxbridge agent wires them.

The "physical network" is a veth pair this test makes: one end is given to cumulo as
physnet1's interface (`physical_interface_mappings`), the other is the wire's far side
in a namespace standing for a machine on that network (an untagged address, and a VLAN
150 subinterface where the kernel has 802.1Q). The guests are namespaces plugged as the
compute side plugs a tap (see test_network_dataplane). A kernel without 802.1Q VLAN
devices (module 8021q, absent on the CI machine) cannot carry the VLAN: there the test
checks that the VLAN network stays usable on its bridge and the flat one unaffected.
Needs root, iproute2, nftables, dnsmasq, busybox and ping: skipped without them,
failed under CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver, bridge_name, vlan_name
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail
from tests.e2e.test_network_dataplane import HOST, TOOLS, UDHCPC_SCRIPT, Lab, netns_list, ping, sh

pytestmark = pytest.mark.e2e

VLAN = 150


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        skip_or_fail("provider networks need root (network namespaces)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the provider network test needs: {', '.join(missing)}")
    tag = f"cmlo-t{uuid.uuid4().hex[:6]}-"
    wire, far = f"{tag[:-1]}p", f"{tag}far"  # the host's "NIC" (15 chars at most)
    sh("ip", "netns", "add", far)
    sh("ip", "link", "add", wire, "type", "veth", "peer", "name", "eth0", "netns", far)
    sh("ip", "-n", far, "link", "set", "eth0", "up")
    sh("ip", "-n", far, "addr", "add", "10.94.0.250/24", "dev", "eth0")
    vlans = sh("ip", "-n", far, "link", "add", "link", "eth0", "name", f"eth0.{VLAN}",
               "type", "vlan", "id", str(VLAN), check=False).returncode == 0  # fmt: skip
    if vlans:
        sh("ip", "-n", far, "link", "set", f"eth0.{VLAN}", "up")
        sh("ip", "-n", far, "addr", "add", "10.93.0.250/24", "dev", f"eth0.{VLAN}")

    state_dir: Path = tmp_path_factory.mktemp("cumulo-provider-dp")
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.network.driver = "linuxbridge"
    config.network.agent_host = HOST
    config.compute.host = HOST
    config.network.physical_interface_mappings = {"physnet1": wire}
    config.network.network_vlan_ranges = ["physnet1:100:199"]
    write_config(state_dir, config)
    script = state_dir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    runner = CloudRunner(state_dir)
    try:
        yield Lab(runner.start(), tag, script), far, vlans
    finally:
        runner.stop()
        for ns in netns_list():
            if ns.startswith(tag):
                sh("ip", "netns", "delete", ns, check=False)
        sh("ip", "link", "del", wire, check=False)  # if it never moved into the data plane
        leftover = LinuxBridgeDriver(state_dir)
        asyncio.run(leftover.teardown())
        left = [ns for ns in netns_list() if ns.startswith((leftover.prefix, tag))]
        assert not left, f"namespaces left behind: {left}"


def test_flat_and_vlan_guests_reach_the_physical_network(lab: tuple[Lab, str, bool]):
    lab_, far, vlans = lab
    conn = lab_.conn
    agent = conn.network.agents(host=HOST, agent_type="Linux bridge agent")
    assert any(a.configuration.get("interface_mappings") for a in agent)

    vlan_net = conn.network.create_network(
        name="dp-vlan",
        provider_network_type="vlan",
        provider_physical_network="physnet1",
        provider_segmentation_id=VLAN,
    )
    pools = [{"start": "10.93.0.2", "end": "10.93.0.200"}]  # .250: the far machine
    conn.network.create_subnet(
        network_id=vlan_net.id, ip_version=4, cidr="10.93.0.0/24", allocation_pools=pools
    )
    flat_net = conn.network.create_network(
        name="dp-flat", provider_network_type="flat", provider_physical_network="physnet1"
    )
    pools = [{"start": "10.94.0.2", "end": "10.94.0.200"}]
    conn.network.create_subnet(
        network_id=flat_net.id, ip_version=4, cidr="10.94.0.0/24", allocation_pools=pools
    )
    p_vlan, p_flat = lab_.port(vlan_net.id), lab_.port(flat_net.id)
    lab_.settle()

    host_ns = lab_.driver.host_ns
    g_vlan, g_flat = lab_.guest("gv", p_vlan), lab_.guest("gf", p_flat)
    assert lab_.dhcp(g_vlan) == p_vlan.fixed_ips[0]["ip_address"]
    assert lab_.dhcp(g_flat) == p_flat.fixed_ips[0]["ip_address"]
    # The flat network's guest reaches the far machine untagged: the host interface is
    # on the network's bridge, in the data plane's namespace.
    assert ping(g_flat, "10.94.0.250", attempts=5).returncode == 0
    assert wire_of(lab_) in sh("ip", "-n", host_ns, "link", "show", "master",
                               bridge_name(flat_net.id)).stdout  # fmt: skip
    neigh = sh("ip", "-n", far, "neigh", "show", "dev", "eth0").stdout
    assert p_flat.mac_address in neigh and p_vlan.mac_address not in neigh
    if vlans:
        # ...and the VLAN network's guest on VLAN 150 only (tagged frames).
        assert f"vlan protocol 802.1Q id {VLAN}" in sh("ip", "-n", host_ns, "-d", "link").stdout
        assert ping(g_vlan, "10.93.0.250", attempts=5).returncode == 0
        neigh_vlan = sh("ip", "-n", far, "neigh", "show", "dev", f"eth0.{VLAN}").stdout
        assert p_vlan.mac_address in neigh_vlan
    else:
        # No 802.1Q in this kernel: the VLAN network is not on the wire, its guests
        # still have their network (DHCP above) and the flat network is unaffected.
        assert vlan_name(vlan_net.id) not in sh("ip", "-n", host_ns, "link", "show").stdout

    # The VLAN network deleted: its subinterface (if any) goes; the flat one keeps working.
    conn.network.delete_port(p_vlan.id)
    conn.network.delete_network(vlan_net.id)
    lab_.settle()
    assert vlan_name(vlan_net.id) not in sh("ip", "-n", host_ns, "link", "show").stdout
    assert ping(g_flat, "10.94.0.250", attempts=3).returncode == 0


def wire_of(lab: Lab) -> str:
    return lab.driver.physical["physnet1"]
