"""Port binding and VNI allocation as Neutron's ML2 does them, driven with the `openstack`
CLI on a cloud with three fake compute hosts whose network agents' reports are sent as
their agents would send them:

- a port bound to a host whose agent does not map the network's physical network, or
  whose agent is dead, has `binding:vif_type` `binding_failed` and stays DOWN; tenant
  (vxlan) networks bind on any host with a living agent;
- a server whose port cannot be bound on its host fails there with Nova's
  PortBindingFailed fault, is rescheduled to the zone's other host, and ends ACTIVE once
  a host of the zone maps the physical network;
- a network agent does not wire a port whose binding to its host failed (it stays DOWN);
- a live migration, cold migration or evacuation to a host that cannot bind the
  server's port fails cleanly: the port is bound back, the server stays ACTIVE where it
  was, the migration ends in error, the action records why;
- tenant vxlan networks take their VNI from `[network] vni_ranges`: each its own, even
  when created at once, 503 NoNetworkAvailable once the ranges are used up.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cumulo.common.db import utcnow
from cumulo.network.agents import report_state
from cumulo.network.dataplane.agent import NetworkAgent, agent_topic
from cumulo.network.dataplane.noop import NoopDriver
from cumulo.network.models import Agent
from tests.cloudrunner import CloudRunner, running_cloud

MAIN = "bind-main"
LB_HOST = f"{MAIN}-fake1"  # a linuxbridge agent mapping physnet2 only
OVS_HOST = f"{MAIN}-fake2"  # an openvswitch agent mapping public (br-ex) only, at first
BARE_HOST = f"{MAIN}-fake3"  # no network agent: a host without a data plane
GHOST = "bind-ghost"  # an agent that stopped reporting
VNIS = range(1001, 1011)
BINDING_FAILED = "Binding failed for port {}, please check neutron logs for more information."

LB_REPORT = {"driver": "linuxbridge", "interface_mappings": {"physnet2": "eth2"}}
OVS_REPORT = {"driver": "openvswitch", "bridge_mappings": {"public": "br-ex"}}
OVS_MAPPING_PHYSNET1 = {
    "driver": "openvswitch",
    "bridge_mappings": {"public": "br-ex", "physnet1": "br-physnet1"},
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    def configure(config) -> None:
        config.compute.host = MAIN
        config.compute.fake_hosts = 3
        config.network.vni_ranges = [f"{VNIS[0]}:{VNIS[-1]}"]

    with running_cloud(tmp_path_factory.mktemp("binding"), configure) as runner:
        yield runner


@pytest.fixture(scope="module")
def admin(cloud: CloudRunner):
    with cloud.api("network") as client:
        yield client


@pytest.fixture(scope="module")
def physnet1(cloud: CloudRunner) -> dict:
    """An admin's flat network on physnet1, with a subnet."""
    net = cloud.openstack(
        "network", "create", "--provider-network-type", "flat",
        "--provider-physical-network", "physnet1", _name("flat1"), "-f", "json",
    )  # fmt: skip
    cloud.openstack(
        "subnet", "create", "--network", net["id"], "--subnet-range", "10.81.0.0/24",
        _name("flat1"),
    )  # fmt: skip
    return net


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("img") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)
    created = cloud.openstack(
        "image", "create", "bind-img", "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    return created["id"]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def report(cloud: CloudRunner, host: str, configurations: dict[str, Any]) -> None:
    """A heartbeat of `host`'s network agent, as the agent sends it over the bus."""
    service = cloud.cloud.network
    cloud.run_async(report_state(service, host, agent_topic(host), configurations, True))


def silence(cloud: CloudRunner, host: str) -> None:
    """The host's agent last reported long ago: it is dead."""
    service = cloud.cloud.network

    async def backdate() -> None:
        async with service.db.write() as session:
            await session.execute(
                update(Agent)
                .where(Agent.host == host)
                .values(heartbeat_timestamp=utcnow() - timedelta(minutes=5))
            )

    cloud.run_async(backdate())


def bound_port(cloud: CloudRunner, network_id: str, host: str) -> dict:
    return cloud.openstack(
        "port", "create", "--network", network_id, "--host", host, _name("p"), "-f", "json"
    )


def server_show(cloud: CloudRunner, server_id: str) -> dict:
    return cloud.openstack("server", "show", server_id, "-f", "json")


def wait_built(cloud: CloudRunner, server_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (shown := server_show(cloud, server_id))["status"] not in ("ACTIVE", "ERROR"):
        assert time.monotonic() < deadline, f"{server_id} is still {shown['status']}"
        time.sleep(0.3)
    return shown


def test_a_port_binds_only_where_the_hosts_agent_reaches_its_network(
    cloud: CloudRunner, physnet1: dict
):
    report(cloud, LB_HOST, LB_REPORT)
    report(cloud, OVS_HOST, OVS_REPORT)
    tenant = cloud.openstack("network", "create", _name("tenant"), "-f", "json")

    # physnet1 is mapped neither by the linuxbridge agent nor by the openvswitch one.
    for host in (LB_HOST, OVS_HOST):
        port = bound_port(cloud, physnet1["id"], host)
        assert port["binding_host_id"] == host
        assert port["binding_vif_type"] == "binding_failed", port
        assert port["binding_vif_details"] == {}
        assert port["status"] == "DOWN"
        # The tenant (vxlan) network binds on any host with a living agent.
        vxlan = bound_port(cloud, tenant["id"], host)
        assert vxlan["binding_vif_type"] == "bridge"
        cloud.openstack("port", "delete", port["id"], vxlan["id"])

    # The main host's agent (the noop data plane) reports no mappings: it keeps every
    # network on its own bridges, as before; a host with no agent binds as it does.
    for host in (MAIN, BARE_HOST):
        port = bound_port(cloud, physnet1["id"], host)
        assert port["binding_vif_type"] == "bridge", (host, port)
        cloud.openstack("port", "delete", port["id"])

    # A dead agent binds nothing, not even a tenant network's port.
    report(cloud, GHOST, LB_REPORT)
    silence(cloud, GHOST)
    ghost_port = bound_port(cloud, tenant["id"], GHOST)
    assert ghost_port["binding_vif_type"] == "binding_failed"

    # Moved to a host that reaches the network, the port binds (ML2 binds again).
    port = bound_port(cloud, physnet1["id"], LB_HOST)
    cloud.openstack("port", "set", "--host", MAIN, port["id"])
    shown = cloud.openstack("port", "show", port["id"], "-f", "json")
    assert (shown["binding_host_id"], shown["binding_vif_type"]) == (MAIN, "bridge")
    # The port's status stays DOWN while its binding fails, even if the host's agent
    # reports it wired.
    failed = bound_port(cloud, physnet1["id"], OVS_HOST)
    cloud.run_async(cloud.cloud.network.mark_ports_active(OVS_HOST, [failed["id"]]))
    assert cloud.openstack("port", "show", failed["id"], "-f", "json")["status"] == "DOWN"
    cloud.openstack("port", "delete", port["id"], failed["id"], ghost_port["id"])
    cloud.openstack("network", "delete", tenant["id"])


def test_a_boot_on_a_host_that_cannot_bind_its_port_fails_with_port_binding_failed(
    cloud: CloudRunner, physnet1: dict, image: str
):
    report(cloud, LB_HOST, LB_REPORT)
    port = cloud.openstack("port", "create", "--network", physnet1["id"], _name("p"), "-f", "json")
    # Forced onto one host, the build is not rescheduled (Nova's populate_retry): the
    # binding failure is the server's fault.
    server = cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.nano", "--port", port["id"],
        "--availability-zone", f"nova:{LB_HOST}", _name("vm"), "-f", "json",
    )  # fmt: skip
    shown = wait_built(cloud, server["id"])
    assert shown["status"] == "ERROR"
    assert shown["fault"]["message"] == BINDING_FAILED.format(port["id"])
    # The user's port is given back unbound, as Nova leaves it.
    after = cloud.openstack("port", "show", port["id"], "-f", "json")
    assert (after["device_id"], after["binding_host_id"]) == ("", "")
    assert after["binding_vif_type"] == "unbound"
    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("port", "delete", port["id"])


def test_a_boot_is_rescheduled_until_a_host_of_its_zone_maps_the_network(
    cloud: CloudRunner, physnet1: dict, image: str
):
    report(cloud, LB_HOST, LB_REPORT)
    report(cloud, OVS_HOST, OVS_REPORT)
    cloud.openstack("aggregate", "create", "--zone", "edge", "edge")
    for host in (LB_HOST, OVS_HOST):
        cloud.openstack("aggregate", "add", "host", "edge", host)

    def boot() -> dict:
        server = cloud.openstack(
            "server", "create", "--image", image, "--flavor", "m1.nano", "--nic",
            f"net-id={physnet1['id']}", "--availability-zone", "edge", _name("vm"),
            "-f", "json",
        )  # fmt: skip
        return wait_built(cloud, server["id"])

    # Neither host of the zone maps physnet1: both are tried, then no host is left.
    failed = boot()
    assert failed["status"] == "ERROR"
    fault = failed["fault"]
    assert fault["message"].startswith("Exhausted all hosts available for retrying build")
    assert "Binding failed for port" in fault["details"]
    events = cloud.openstack("server", "event", "list", failed["id"], "-f", "json")
    assert events, "the build's action is recorded"
    # Its ports are gone with the failed builds.
    left = cloud.openstack("port", "list", "--device-id", failed["id"], "-f", "json")
    assert left == []
    cloud.openstack("server", "delete", "--wait", failed["id"])

    # The openvswitch host now maps physnet1: the same boot lands there.
    report(cloud, OVS_HOST, OVS_MAPPING_PHYSNET1)
    report(cloud, LB_HOST, LB_REPORT)
    built = boot()
    assert built["status"] == "ACTIVE", built.get("fault")
    assert built["OS-EXT-SRV-ATTR:host"] == OVS_HOST
    [port] = cloud.openstack("port", "list", "--device-id", built["id"], "--long", "-f", "json")
    shown = cloud.openstack("port", "show", port["ID"], "-f", "json")
    assert (shown["binding_host_id"], shown["binding_vif_type"]) == (OVS_HOST, "bridge")
    cloud.openstack("server", "delete", "--wait", built["id"])
    for host in (LB_HOST, OVS_HOST):
        cloud.openstack("aggregate", "remove", "host", "edge", host)
    cloud.openstack("aggregate", "delete", "edge")


def test_tenant_networks_take_distinct_vnis_from_the_ranges_until_none_is_left(
    cloud: CloudRunner, admin: httpx.Client
):
    # The demo project's `private` network (made at first start) holds one of them.
    private = cloud.openstack("network", "show", "private", "-f", "json")
    assert private["provider:network_type"] == "vxlan"
    assert private["provider:segmentation_id"] in VNIS
    assert private["provider:physical_network"] is None
    # Members see no provider attributes.
    mine = cloud.openstack("network", "show", "private", "-f", "json", cloud="cumulo-demo")
    assert "provider:segmentation_id" not in mine or mine["provider:segmentation_id"] is None

    # An admin picks a VNI outside the ranges; one already held is refused.
    outside = cloud.openstack(
        "network", "create", "--provider-network-type", "vxlan", "--provider-segment", "5000",
        _name("vx"), "-f", "json",
    )  # fmt: skip
    assert outside["provider:segmentation_id"] == 5000
    taken = admin.post(
        "/v2.0/networks",
        json={
            "network": {
                "provider:network_type": "vxlan",
                "provider:segmentation_id": private["provider:segmentation_id"],
            }
        },
    )
    assert taken.status_code == 409, taken.text
    assert taken.json()["NeutronError"]["type"] == "TunnelIdInUse"

    # The nine left, asked for at once by the demo project: each gets its own.
    with httpx.Client(
        base_url=str(admin.base_url),
        headers={"X-Auth-Token": cloud.token("demo", project="demo")},
        timeout=60,
    ) as demo:

        def create(_: int) -> httpx.Response:
            return demo.post("/v2.0/networks", json={"network": {"name": _name("vni")}})

        with ThreadPoolExecutor(9) as pool:
            answers = list(pool.map(create, range(len(VNIS) - 1)))
        assert [r.status_code for r in answers] == [201] * (len(VNIS) - 1), [
            r.text for r in answers if r.status_code != 201
        ]
        ids = [r.json()["network"]["id"] for r in answers]
        vnis = [
            admin.get(f"/v2.0/networks/{i}").json()["network"]["provider:segmentation_id"]
            for i in ids
        ]
        assert sorted([*vnis, private["provider:segmentation_id"]]) == list(VNIS)

        # Used up: 503, for tenants and for an admin's vxlan network without an id.
        proc = cloud.openstack("network", "create", _name("vni"), cloud="cumulo-demo", check=False)
        assert proc.returncode != 0 and "No tenant network is available" in proc.stderr
        r = admin.post("/v2.0/networks", json={"network": {"provider:network_type": "vxlan"}})
        assert r.status_code == 503, r.text
        assert r.json()["NeutronError"]["type"] == "NoNetworkAvailable"

        # A deleted network's VNI is allocated again.
        freed = vnis[0]
        assert demo.delete(f"/v2.0/networks/{ids[0]}").status_code == 204
        again = cloud.openstack(
            "network", "create", _name("vni"), "-f", "json", cloud="cumulo-demo"
        )
        shown = cloud.openstack("network", "show", again["id"], "-f", "json")
        assert (shown["provider:network_type"], shown["provider:segmentation_id"]) == (
            "vxlan",
            freed,
        )
        for network_id in [*ids[1:], again["id"]]:
            assert demo.delete(f"/v2.0/networks/{network_id}").status_code == 204
    cloud.openstack("network", "delete", outside["id"])


class MappedNoop(NoopDriver):
    """The noop data plane of a host whose interfaces map these physical networks."""

    def __init__(self, *physnets: str) -> None:
        super().__init__()
        self.mappings = {physnet: f"eth{i}" for i, physnet in enumerate(physnets, 1)}

    def configurations(self) -> dict[str, Any]:
        return {**super().configurations(), "interface_mappings": self.mappings}


def wait_port_status(cloud: CloudRunner, port_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while (port := cloud.openstack("port", "show", port_id, "-f", "json"))["status"] != status:
        assert time.monotonic() < deadline, f"port {port_id} is {port['status']}, not {status}"
        time.sleep(0.3)
    return port


def test_an_agent_does_not_wire_a_port_whose_binding_to_its_host_failed(
    cloud: CloudRunner, physnet1: dict
):
    host = f"{MAIN}-agent"
    transport = cloud.cloud.network.agent.transport
    agent = NetworkAgent(transport, host, MappedNoop("physnet2"), min_interval=0.2)
    cloud.run_async(agent.start())
    try:
        tenant = cloud.openstack("network", "create", _name("tenant"), "-f", "json")
        cloud.openstack(
            "subnet", "create", "--network", tenant["id"], "--subnet-range", "10.82.0.0/24",
            _name("tenant"),
        )  # fmt: skip
        failed = bound_port(cloud, physnet1["id"], host)
        wired = bound_port(cloud, tenant["id"], host)
        assert failed["binding_vif_type"] == "binding_failed"
        assert wired["binding_vif_type"] == "bridge"
        # The tenant port is wired and reported up; the other one is not wired at all.
        wait_port_status(cloud, wired["id"], "ACTIVE")
        ports = {p["id"]: p for p in agent.driver.state["ports"]}
        assert wired["id"] in ports and failed["id"] not in ports
        assert cloud.openstack("port", "show", failed["id"], "-f", "json")["status"] == "DOWN"
        # The agent restarted with physnet1 mapped too: the port binds, and is wired.
        cloud.run_async(agent.stop())
        agent = NetworkAgent(transport, host, MappedNoop("physnet1", "physnet2"), 0.2)
        cloud.run_async(agent.start())
        wait_port_status(cloud, failed["id"], "ACTIVE")
        assert failed["id"] in {p["id"] for p in agent.driver.state["ports"]}
        cloud.openstack("port", "delete", failed["id"], wired["id"])
        cloud.openstack("network", "delete", tenant["id"])
    finally:
        cloud.run_async(agent.stop())


def _boot_on(cloud: CloudRunner, image: str, host: str, network_id: str) -> dict:
    server = cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.nano", "--nic",
        f"net-id={network_id}", "--availability-zone", f"nova:{host}", _name("vm"),
        "-f", "json",
    )  # fmt: skip
    built = wait_built(cloud, server["id"])
    assert built["status"] == "ACTIVE", built.get("fault")
    return built


def _settled(cloud: CloudRunner, server_id: str, timeout: float = 60) -> dict:
    """The server once its move has ended (no task state)."""
    deadline = time.monotonic() + timeout
    while (shown := server_show(cloud, server_id))["OS-EXT-STS:task_state"] is not None:
        assert time.monotonic() < deadline, f"{server_id} is still {shown['OS-EXT-STS:task_state']}"
        time.sleep(0.3)
    return shown


def _assert_stayed(cloud: CloudRunner, server_id: str, host: str, action: str, event: str) -> None:
    """The move failed on the binding: the server is ACTIVE on `host`, its port bound
    there, its migration in error, and the action says why."""
    shown = _settled(cloud, server_id)
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", host)
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server_id, "-f", "json"
    )
    assert migration["Status"] in ("error", "failed"), migration
    [port] = cloud.openstack("port", "list", "--device-id", server_id, "-f", "json")
    port = cloud.openstack("port", "show", port["ID"], "-f", "json")
    assert port["binding_host_id"] == host
    assert port["binding_vif_type"] != "binding_failed"
    [moved] = [
        a
        for a in cloud.openstack("server", "event", "list", server_id, "-f", "json")
        if a["Action"] == action
    ]
    detail = cloud.openstack(
        "server", "event", "show", server_id, moved["Request ID"], "-f", "json"
    )
    [failed] = [e for e in detail["events"] if e["event"] == event]
    assert failed["result"] == "Error", detail
    assert BINDING_FAILED.format(port["id"]) in str(failed.get("traceback")), failed
    faults = cloud.run_async(_faults(cloud, server_id))
    assert any(BINDING_FAILED.format(port["id"]) in f for f in faults), faults


async def _faults(cloud: CloudRunner, server_id: str) -> list[str]:
    from sqlalchemy import select

    from cumulo.compute.models import InstanceFault

    async with cloud.cloud.compute.service.db.read() as session:
        return list(
            await session.scalars(
                select(InstanceFault.message).where(InstanceFault.instance_uuid == server_id)
            )
        )


async def _claims(cloud: CloudRunner, server_id: str) -> dict[str, str]:
    """The server's allocations (its own, and a move's second one): on which host."""
    from sqlalchemy import select

    from cumulo.compute.models import Allocation, ComputeNode
    from cumulo.compute.scheduler.claims import resize_allocation

    async with cloud.cloud.compute.service.db.read() as session:
        rows = await session.execute(
            select(Allocation.instance_uuid, ComputeNode.host)
            .join(ComputeNode, ComputeNode.id == Allocation.node_id)
            .where(Allocation.instance_uuid.in_([server_id, resize_allocation(server_id)]))
        )
        return dict(rows.all())


def test_a_live_migration_to_a_host_that_cannot_bind_the_port_leaves_the_server_running(
    cloud: CloudRunner, physnet1: dict, image: str
):
    report(cloud, LB_HOST, LB_REPORT)  # maps physnet2 only
    server = _boot_on(cloud, image, BARE_HOST, physnet1["id"])
    cloud.openstack(
        "server", "migrate", "--live-migration", "--host", LB_HOST, "--block-migration",
        server["id"],
    )  # fmt: skip
    _assert_stayed(
        cloud, server["id"], BARE_HOST, "live-migration", "conductor_live_migrate_instance"
    )
    assert server_show(cloud, server["id"])["OS-EXT-STS:power_state"] in (1, "Running")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_a_cold_migration_to_a_host_that_cannot_bind_the_port_leaves_the_server_running(
    cloud: CloudRunner, physnet1: dict, image: str
):
    report(cloud, LB_HOST, LB_REPORT)
    server = _boot_on(cloud, image, BARE_HOST, physnet1["id"])
    cloud.openstack(
        "--os-compute-api-version", "2.56", "server", "migrate", "--host", LB_HOST,
        server["id"],
    )  # fmt: skip
    _assert_stayed(cloud, server["id"], BARE_HOST, "migrate", "compute_resize_instance")
    # The guest was never stopped: the move failed before it left.
    assert server_show(cloud, server["id"])["OS-EXT-STS:power_state"] in (1, "Running")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_an_evacuation_to_a_host_that_cannot_bind_the_port_leaves_the_server_where_it_was(
    cloud: CloudRunner, physnet1: dict, image: str
):
    report(cloud, LB_HOST, LB_REPORT)
    server = _boot_on(cloud, image, BARE_HOST, physnet1["id"])
    down = ("--os-compute-api-version", "2.53", "compute", "service", "set")
    cloud.openstack(*down, "--down", BARE_HOST, "cumulo-compute")
    try:
        cloud.openstack(
            "--os-compute-api-version", "2.29", "server", "evacuate", "--host", LB_HOST,
            server["id"],
        )  # fmt: skip
        _assert_stayed(cloud, server["id"], BARE_HOST, "evacuate", "compute_rebuild_instance")
        # The claim made on the destination was given back; the one on its host is kept.
        assert cloud.run_async(_claims(cloud, server["id"])) == {server["id"]: BARE_HOST}
    finally:
        cloud.openstack(*down, "--up", BARE_HOST, "cumulo-compute")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_a_resize_onto_a_host_that_cannot_bind_the_port_keeps_the_old_flavor_and_host(
    cloud: CloudRunner, physnet1: dict, image: str
):
    report(cloud, LB_HOST, LB_REPORT)
    flavor = cloud.openstack(
        "flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1", _name("fl"),
        "-f", "json",
    )  # fmt: skip
    server = _boot_on(cloud, image, BARE_HOST, physnet1["id"])
    # The scheduler has only the host that cannot bind the port left to choose.
    others = (MAIN, OVS_HOST)
    service_set = ("compute", "service", "set")
    for host in others:
        cloud.openstack(*service_set, "--disable", host, "cumulo-compute")
    try:
        cloud.openstack("server", "resize", "--flavor", flavor["id"], server["id"])
        _assert_stayed(cloud, server["id"], BARE_HOST, "resize", "compute_resize_instance")
        assert server_show(cloud, server["id"])["flavor"] == server["flavor"]
    finally:
        for host in others:
            cloud.openstack(*service_set, "--enable", host, "cumulo-compute")
    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("flavor", "delete", flavor["id"])
