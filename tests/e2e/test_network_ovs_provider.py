"""Provider networks and the host leg on the openvswitch data plane, as ML2/OVS lays
them out: `physical_interface_mappings` gives physnet1 a bridge `br-physnet1` holding
the host interface, patched to br-int; a VLAN network leaves with its provider VLAN id,
a flat network untagged; the host reaches the external network through a leg on br-ex.

The "physical network" is a veth pair this test makes: one end is physnet1's host
interface, the other is in a namespace standing for the wire, where a switch of its
own (an Open vSwitch with cumulo's OvsDaemons) sorts the frames by their 802.1Q tag:
an internal port on VLAN 150 and one untagged (VLAN 0), each holding a machine's
address. OVS tags the frames itself, so this works on a kernel without 8021q, and the
far switch's MAC table shows which VLAN each guest's frames arrived on. Needs root,
Open vSwitch, iproute2, nftables, dnsmasq, busybox and ping: skipped without them,
failed under CI.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
import uuid
from pathlib import Path

import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane import commands as cmd
from cumulo.network.dataplane import openvswitch, ovsdb
from cumulo.network.dataplane.state import desired_state
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail
from tests.e2e.test_network_dataplane import HOST, TOOLS, UDHCPC_SCRIPT, Lab, netns_list, ping, sh

pytestmark = pytest.mark.e2e

VLAN = 150
FAR_SWITCH = "sw"


class Wire:
    """The far side of physnet1: a namespace with a VLAN-aware switch of its own."""

    def __init__(self, tag: str, run_dir: Path) -> None:
        self.ns = f"{tag}far"
        self.daemons = ovsdb.OvsDaemons(run_dir, self.ns)

    def fdb(self) -> list[tuple[int, str]]:
        """(VLAN, MAC) pairs the far switch learnt from the wire (its port `eth0`)."""
        ctl = str(self.daemons.run_dir / "ovs-vswitchd.ctl")
        out = sh("ovs-appctl", "-t", ctl, "fdb/show", FAR_SWITCH).stdout.splitlines()[1:]
        ofport = self.ofport("eth0")
        return [(int(f[1]), f[2]) for f in (line.split() for line in out) if f[0] == str(ofport)]

    def ofport(self, name: str) -> int:
        db = ovsdb.Ovsdb(self.daemons.remote)
        try:
            return db.ports(FAR_SWITCH)[name]["ofport"]
        finally:
            db.close()


def far_switch(wire: Wire) -> None:
    """The wire's switch: eth0 a trunk, `v150` an access port on VLAN 150 holding
    10.93.0.250, `v0` one for untagged frames holding 10.94.0.250."""
    asyncio.run(wire.daemons.ensure())
    db = ovsdb.Ovsdb(wire.daemons.remote)
    try:
        db.ensure_bridge(FAR_SWITCH, "netdev", openvswitch.PROTOCOLS)
        db.ensure_port(FAR_SWITCH, "eth0")
        db.ensure_port(FAR_SWITCH, "v150", tag=VLAN, type="internal")
        db.ensure_port(FAR_SWITCH, "v0", tag=0, type="internal")
    finally:
        db.close()
    for _ in range(100):  # until ovs-vswitchd has made the bridge and its ports
        made = sh("ip", "-n", wire.ns, "link", "show", check=False).stdout
        if (wire.daemons.run_dir / f"{FAR_SWITCH}.mgmt").exists() and "v150" in made:
            break
        time.sleep(0.05)
    asyncio.run(wire.daemons.ofctl("add-flow", FAR_SWITCH, "priority=0,actions=NORMAL"))
    for device, address in (("v150", "10.93.0.250/24"), ("v0", "10.94.0.250/24")):
        sh("ip", "-n", wire.ns, "link", "set", device, "up")
        sh("ip", "-n", wire.ns, "addr", "add", address, "dev", device)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        skip_or_fail("provider networks need root (network namespaces)")
    missing = [t for t in (*TOOLS, *openvswitch.TOOLS, "ovs-appctl") if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the openvswitch provider network test needs: {', '.join(missing)}")
    tag = f"cmlo-t{uuid.uuid4().hex[:6]}-"
    wire = Wire(tag, tmp_path_factory.mktemp("far-switch"))
    nic = f"{tag[:-1]}p"  # the host's "NIC" (15 chars at most)
    sh("ip", "netns", "add", wire.ns)
    sh("ip", "link", "add", nic, "type", "veth", "peer", "name", "eth0", "netns", wire.ns)
    sh("ip", "-n", wire.ns, "link", "set", "eth0", "up")

    state_dir: Path = tmp_path_factory.mktemp("cumulo-ovs-provider")
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.network.driver = "openvswitch"
    config.network.agent_host = HOST
    config.compute.host = HOST
    config.network.physical_interface_mappings = {"physnet1": nic}
    config.network.network_vlan_ranges = ["physnet1:100:199"]
    # The host leg: an external subnet of this test's own (clouds run side by side).
    third = random.randrange(200, 250)
    config.network.public_cidr = f"172.31.{third}.0/24"
    config.network.public_gateway = f"172.31.{third}.1"
    config.network.host_leg = True
    write_config(state_dir, config)
    script = state_dir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    runner = CloudRunner(state_dir)
    leftover = openvswitch.OpenvSwitchDriver(state_dir)
    try:
        far_switch(wire)
        yield Lab(runner.start(), tag, script), wire
    finally:
        runner.stop()
        asyncio.run(wire.daemons.stop())
        for ns in netns_list():
            if ns.startswith(tag):
                sh("ip", "netns", "delete", ns, check=False)
        sh("ip", "link", "del", nic, check=False)  # if it never moved into the data plane
        asyncio.run(leftover.teardown())
        left = [ns for ns in netns_list() if ns.startswith((leftover.prefix, tag))]
        assert not left, f"namespaces left behind: {left}"
        # The host leg went with the data plane.
        gone = sh("ip", "link", "show", leftover.host_leg_name, check=False)
        assert gone.returncode != 0, "the host leg was left behind"


def physical_flows(lab: Lab) -> str:
    env = {**os.environ, "OVS_RUNDIR": str(lab.driver.run_dir)}
    return sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-physnet1", env_extra=env).stdout


def bridge_ports(lab: Lab, bridge: str) -> dict:
    return lab.runner.run_async(lab.driver._call("ports", bridge))


def test_flat_and_vlan_guests_reach_the_wire_through_the_physical_bridge(
    lab: tuple[Lab, Wire],
):
    lab_, wire = lab
    conn = lab_.conn
    [agent] = conn.network.agents(host=HOST, agent_type="Open vSwitch agent")
    assert agent.configuration["bridge_mappings"] == {"public": "br-ex", "physnet1": "br-physnet1"}

    vlan_net = conn.network.create_network(
        name="ovs-vlan", provider_network_type="vlan",
        provider_physical_network="physnet1", provider_segmentation_id=VLAN,
    )  # fmt: skip
    pools = [{"start": "10.93.0.2", "end": "10.93.0.200"}]  # .250: the far machine
    conn.network.create_subnet(network_id=vlan_net.id, ip_version=4, cidr="10.93.0.0/24",
                               allocation_pools=pools)  # fmt: skip
    flat_net = conn.network.create_network(
        name="ovs-flat", provider_network_type="flat", provider_physical_network="physnet1"
    )
    pools = [{"start": "10.94.0.2", "end": "10.94.0.200"}]
    conn.network.create_subnet(network_id=flat_net.id, ip_version=4, cidr="10.94.0.0/24",
                               allocation_pools=pools)  # fmt: skip
    # physnet2 is not mapped on this host: a port of its network cannot bind here (ML2).
    unmapped = conn.network.create_network(
        name="ovs-unmapped", provider_network_type="flat", provider_physical_network="physnet2"
    )
    conn.network.create_subnet(network_id=unmapped.id, ip_version=4, cidr="10.95.0.0/24")
    p_vlan, p_flat, p_unmapped = (lab_.port(n.id) for n in (vlan_net, flat_net, unmapped))
    lab_.settle()
    assert p_unmapped.binding_vif_type == "binding_failed" and not p_unmapped.binding_vif_details
    assert conn.network.get_port(p_unmapped.id).status == "DOWN"

    g_vlan, g_flat = lab_.guest("gv", p_vlan), lab_.guest("gf", p_flat)
    assert lab_.dhcp(g_vlan) == p_vlan.fixed_ips[0]["ip_address"]
    assert lab_.dhcp(g_flat) == p_flat.fixed_ips[0]["ip_address"]
    lab_.settle()

    # The host interface is on physnet1's bridge, patched to br-int.
    nic = lab_.driver.physical["physnet1"]
    assert nic in bridge_ports(lab_, "br-physnet1")
    assert {"int-br-physnet1", "int-br-ex"} <= set(bridge_ports(lab_, openvswitch.INTEGRATION))
    # Each guest reaches the machine on its own VLAN of the wire, and only that one.
    assert ping(g_vlan, "10.93.0.250", attempts=5).returncode == 0
    assert ping(g_flat, "10.94.0.250", attempts=5).returncode == 0
    learnt = wire.fdb()
    assert (VLAN, p_vlan.mac_address) in learnt  # tagged 150 on the wire
    assert (0, p_flat.mac_address) in learnt  # untagged
    seen = {mac for _, mac in learnt}
    assert p_unmapped.mac_address not in seen  # the unbound port's never is
    # The DHCP servers answer the guests from br-int: not on the wire either.
    assert not any(vid not in (0, VLAN) for vid, _ in learnt), learnt

    # The VLAN network deleted: its VLAN no longer passes; the flat one keeps working.
    assert "vlan_vid" in physical_flows(lab_)  # local VLAN -> 150
    conn.network.delete_port(p_vlan.id)
    conn.network.delete_network(vlan_net.id)
    lab_.settle()
    assert "vlan_vid" not in physical_flows(lab_)
    assert ping(g_vlan, "10.93.0.250", attempts=2).returncode != 0
    assert ping(g_flat, "10.94.0.250", attempts=3).returncode == 0


def test_the_host_reaches_the_external_network_through_its_leg_on_br_ex(lab: tuple[Lab, Wire]):
    lab_, _ = lab
    conn = lab_.conn
    public = conn.network.find_network("public")
    gateway_info = {"network_id": public.id}
    router = conn.network.create_router(name="ovs-leg-router", external_gateway_info=gateway_info)
    lab_.settle()
    router = conn.network.get_router(router.id)
    gateway = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    leg = lab_.driver.host_leg_name
    config = load_config(lab_.runner.state_dir)
    prefix = config.network.public_cidr.split("/")[1]
    assert f"{config.network.public_gateway}/{prefix}" in sh("ip", "addr", "show", leg).stdout
    # The leg's data-plane end is on br-ex (not br-int), untagged.
    on_ex = bridge_ports(lab_, openvswitch.EXTERNAL)
    legs = [name for name in on_ex if name.startswith(f"{openvswitch.PREFIX}e")]
    assert legs and on_ex[legs[0]]["tag"] is None
    assert not set(legs) & set(bridge_ports(lab_, openvswitch.INTEGRATION))
    # From the host's own namespace to the router's external address.
    assert ping_from_host(gateway)
    conn.network.update_router(router, external_gateway_info={})
    conn.network.delete_router(router)


def ping_from_host(address: str, attempts: int = 5) -> bool:
    for _ in range(attempts):
        if sh("ping", "-c", "1", "-W", "1", address, check=False).returncode == 0:
            return True
    return False


def test_the_host_interface_goes_back_to_the_host_when_its_mapping_is_removed(
    lab: tuple[Lab, Wire],
):
    lab_, _ = lab
    driver = lab_.driver
    nic = driver.physical["physnet1"]
    flat = lab_.conn.network.find_network("ovs-flat")
    assert flat is not None  # with its guest, from the first test
    g_flat = f"{lab_.tag}gf"
    assert sh("ip", "link", "show", nic, check=False).returncode != 0  # in the data plane
    state = lab_.runner.run_async(desired_state(lab_.runner.cloud.network, HOST))

    async def restart_without_then_with_the_mapping() -> dict:
        seen = {}
        # The running agent stands still meanwhile (its driver's locks held: no apply,
        # no wiring): an agent restarted with physnet1's mapping removed from its
        # configuration.
        async with driver._applying, driver._lock:
            unmapped = openvswitch.OpenvSwitchDriver(lab_.runner.state_dir)
            unmapped.host_leg = driver.host_leg
            try:
                await unmapped.apply(state)
                seen["bridges"] = await unmapped._call("bridge_names")
            finally:
                if unmapped.db is not None:
                    await asyncio.to_thread(unmapped.db.close)
            seen["host links"] = set(await cmd.links(None))
            seen["flat ping"] = (await asyncio.to_thread(ping, g_flat, "10.94.0.250", 2)).returncode
            # ...and restarted with the mapping again: the interface is taken back.
            driver.applied.clear()
            await driver._switch()
            # An apply's steps (its locks are held here), as the newest state wired.
            await driver._wire(state, driver._newest_wired[0])
            await driver._finish(state, *await driver._services(state))
            seen["again"] = (await asyncio.to_thread(ping, g_flat, "10.94.0.250", 5)).returncode
        return seen

    done = asyncio.run_coroutine_threadsafe(
        restart_without_then_with_the_mapping(), lab_.runner._loop
    ).result(120)
    assert "br-physnet1" not in done["bridges"]
    assert nic in done["host links"]  # back in the host's own namespace
    assert done["flat ping"] != 0  # the flat network no longer reaches the wire
    assert done["again"] == 0
    assert sh("ip", "link", "show", nic, check=False).returncode != 0
    assert nic in bridge_ports(lab_, "br-physnet1")
