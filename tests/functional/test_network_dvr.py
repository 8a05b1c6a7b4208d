"""Distributed routers (Neutron's `dvr` and `router-admin-state-down-before-update`
extensions) through openstacksdk, the `openstack` CLI and plain HTTP: who may make and
see them, the default from `[network] router_distributed`, migration only while the
router is down, and scheduling (never on `legacy` L3 agents)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from openstack import exceptions
from sqlalchemy import select

from cumulo.network.agents import report_state as heartbeat
from cumulo.network.dataplane.agent import agent_topic
from cumulo.network.dataplane.state import desired_state
from cumulo.network.models import DvrHostMac
from tests.cloudrunner import CloudRunner

ACTIVE_MIGRATION = (
    "Bad router request: Cannot change the 'distributed' attribute of active routers. "
    "Please set router admin_state_up to False prior to upgrade."
)


def _name() -> str:
    return f"dvr-{uuid.uuid4().hex[:8]}"


def _http(cloud: CloudRunner, method: str, path: str, body: dict | None = None, token=None):
    url = f"http://127.0.0.1:{cloud.config.ports.network}/v2.0{path}"
    return httpx.request(method, url, json=body, headers={"X-Auth-Token": token or cloud.token()})


@pytest.fixture()
def network_config(cloud: CloudRunner) -> Iterator:
    """The in-process cloud's [network] settings, put back after the test."""
    config = cloud.cloud.network.config.network
    saved = (config.enable_dvr, config.router_distributed)
    yield config
    config.enable_dvr, config.router_distributed = saved


def test_an_admin_makes_a_distributed_router_whose_interfaces_are_dvr_interfaces(
    cloud: CloudRunner, conn
):
    made = cloud.openstack("router", "create", "--distributed", _name(), "-f", "json")
    assert made["distributed"] is True
    router = conn.network.get_router(made["id"])
    assert router.is_distributed is True
    central = conn.network.create_router(name=_name(), distributed=False)
    assert central.is_distributed is False
    assert conn.network.create_router(name=_name()).is_distributed is False  # the default
    net = conn.network.create_network(name=_name())
    subnet = conn.network.create_subnet(network_id=net.id, cidr="10.91.0.0/24", ip_version=4)
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    (leg,) = conn.network.ports(device_id=router.id)
    assert leg.device_owner == "network:router_interface_distributed"
    assert leg.fixed_ips[0]["ip_address"] == "10.91.0.1"
    # Still a router interface for every rule that looks for one.
    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_router(router)
    ids = {r.id for r in conn.network.routers(is_distributed=True)}
    assert router.id in ids and central.id not in ids
    conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
    conn.network.delete_network(net)
    for r in (router, central):
        conn.network.delete_router(r)


def test_a_member_may_neither_choose_nor_see_distributed(cloud: CloudRunner, demo):
    # Neutron's create_router:distributed: any value given is the admin's to give.
    for value in (True, False):
        with pytest.raises(exceptions.ForbiddenException, match="create_router:distributed"):
            demo.network.create_router(name=_name(), distributed=value)
    router = demo.network.create_router(name=_name())
    token = cloud.token("demo", project="demo")
    shown = _http(cloud, "GET", f"/routers/{router.id}", token=token).json()["router"]
    assert "distributed" not in shown
    listed = _http(cloud, "GET", "/routers", token=token).json()["routers"]
    assert all("distributed" not in r for r in listed)
    refused = _http(
        cloud, "PUT", f"/routers/{router.id}", {"router": {"distributed": True}}, token=token
    )
    assert refused.status_code == 403
    assert refused.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
    assert "update_router:distributed" in refused.json()["NeutronError"]["message"]
    assert _http(cloud, "GET", f"/routers/{router.id}").json()["router"]["distributed"] is False
    demo.network.delete_router(router)


def test_a_router_changes_between_centralized_and_distributed_only_while_down(cloud, conn):
    router = conn.network.create_router(name=_name())
    net = conn.network.create_network(name=_name())
    subnet = conn.network.create_subnet(network_id=net.id, cidr="10.92.0.0/24", ip_version=4)
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    path = f"/routers/{router.id}"
    # Up, or taken down in the same request (the router must be down before it).
    for body in ({"distributed": True}, {"distributed": True, "admin_state_up": False}):
        refused = _http(cloud, "PUT", path, {"router": body})
        assert refused.status_code == 400
        assert refused.json()["NeutronError"] == {
            "type": "BadRequest",
            "message": ACTIVE_MIGRATION,
            "detail": "",
        }
    shown = _http(cloud, "GET", path).json()["router"]
    assert (shown["distributed"], shown["admin_state_up"]) == (False, True)  # nothing changed
    conn.network.update_router(router, is_admin_state_up=False)
    assert conn.network.update_router(router, distributed=True).is_distributed is True
    (leg,) = conn.network.ports(device_id=router.id)
    assert leg.device_owner == "network:router_interface_distributed"
    # The same value again is no migration: allowed while up.
    conn.network.update_router(router, is_admin_state_up=True)
    assert _http(cloud, "PUT", path, {"router": {"distributed": True}}).status_code == 200
    refused = _http(cloud, "PUT", path, {"router": {"distributed": False}})
    assert refused.status_code == 400
    conn.network.update_router(router, is_admin_state_up=False)
    cloud.openstack("router", "set", "--centralized", router.id)
    assert conn.network.get_router(router.id).is_distributed is False
    (leg,) = conn.network.ports(device_id=router.id)
    assert leg.device_owner == "network:router_interface"
    bad = _http(cloud, "PUT", path, {"router": {"distributed": "maybe"}})
    assert bad.status_code == 400 and bad.json()["NeutronError"]["type"] == "InvalidInput"
    conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
    conn.network.delete_network(net)
    conn.network.delete_router(router)


def test_routers_are_distributed_by_default_when_the_cloud_says_so(conn, network_config):
    network_config.router_distributed = True
    router = conn.network.create_router(name=_name())
    assert router.is_distributed is True
    assert conn.network.create_router(name=_name(), distributed=False).is_distributed is False
    for r in conn.network.routers(name=router.name):
        conn.network.delete_router(r)
    for r in conn.network.routers(is_distributed=False):
        if r.name.startswith("dvr-"):
            conn.network.delete_router(r)
    # ...the auto-allocated topology's router too, as Neutron's.
    topology = conn.network.get_auto_allocated_topology()
    (auto,) = conn.network.routers(name="auto_allocated_router", project_id=topology.project_id)
    assert auto.is_distributed is True
    owners = {p.device_owner for p in conn.network.ports(device_id=auto.id)}
    assert "network:router_interface_distributed" in owners
    conn.network.delete_auto_allocated_topology(topology.project_id)


def test_without_enable_dvr_the_extensions_and_the_attribute_are_gone(cloud, network_config):
    aliases = {e["alias"] for e in _http(cloud, "GET", "/extensions").json()["extensions"]}
    assert {"dvr", "router-admin-state-down-before-update"} <= aliases
    assert _http(cloud, "GET", "/extensions/dvr").json()["extension"]["name"] == (
        "Distributed Virtual Router"
    )
    network_config.enable_dvr = False
    aliases = {e["alias"] for e in _http(cloud, "GET", "/extensions").json()["extensions"]}
    assert "dvr" not in aliases and "router-admin-state-down-before-update" not in aliases
    assert _http(cloud, "GET", "/extensions/dvr").status_code == 404
    refused = _http(cloud, "POST", "/routers", {"router": {"name": _name(), "distributed": True}})
    assert refused.status_code == 400
    assert refused.json()["NeutronError"]["message"] == "Unrecognized attribute(s) 'distributed'"
    made = _http(cloud, "POST", "/routers", {"router": {"name": _name()}}).json()["router"]
    assert "distributed" not in made
    assert _http(cloud, "DELETE", f"/routers/{made['id']}").status_code == 204


def test_a_legacy_l3_agent_is_never_given_a_distributed_router(cloud: CloudRunner, conn):
    service = cloud.cloud.network
    legacy = f"legacy-{uuid.uuid4().hex[:6]}"  # a linuxbridge host: agent_mode legacy
    conf = {"driver": "linuxbridge", "agent_mode": "legacy"}
    cloud.run_async(heartbeat(service, legacy, agent_topic(legacy), conf, True))
    try:
        agents = {a.agent_type: a for a in conn.network.agents(host=legacy)}
        l3 = agents["L3 agent"]
        assert l3.configuration["agent_mode"] == "legacy"
        own = {a.agent_type: a for a in conn.network.agents(host=service.agent.host)}
        assert own["L3 agent"].configuration["agent_mode"] == "dvr_snat"  # the noop driver
        central = conn.network.create_router(name=_name())
        dvr = conn.network.create_router(name=_name(), distributed=True)
        hosting = {
            r.id: {a.host for a in conn.network.routers_hosting_l3_agents(r)}
            for r in (central, dvr)
        }
        assert legacy in hosting[central.id] and legacy not in hosting[dvr.id]
        assert service.agent.host in hosting[dvr.id]
        refused = _http(cloud, "POST", f"/agents/{l3.id}/l3-routers", {"router_id": dvr.id})
        assert refused.status_code == 409
        assert refused.json()["NeutronError"] == {
            "type": "RouterL3AgentMismatch",
            "message": f"Cannot host distributed router {dvr.id} on legacy L3 agent {l3.id}.",
            "detail": "",
        }
        # A heartbeat (auto-scheduling) does not take it either.
        cloud.run_async(heartbeat(service, legacy, agent_topic(legacy), conf, False))
        assert legacy not in {a.host for a in conn.network.routers_hosting_l3_agents(dvr)}
        # Made distributed, a router leaves the legacy agent.
        conn.network.update_router(central, is_admin_state_up=False)
        conn.network.update_router(central, distributed=True)
        hosts = {a.host for a in conn.network.routers_hosting_l3_agents(central)}
        assert hosts == {service.agent.host}
        for r in (central, dvr):
            conn.network.delete_router(r)
    finally:
        for agent in conn.network.agents(host=legacy):
            conn.network.delete_agent(agent)


def test_a_distributed_router_runs_its_interfaces_on_every_host_with_its_guests(
    cloud: CloudRunner, conn
):
    """The desired state of two tunnelling dvr_snat hosts: the router's own host runs it
    whole; the other, with a guest on one of its networks, its interfaces only (no
    gateway, floating IPs or extra routes: north-south stays central), and each knows its
    DVR MAC and the other's."""
    service = cloud.cloud.network
    tag = uuid.uuid4().hex[:6]
    hosts = {f"dvr-a-{tag}": "192.0.2.61", f"dvr-b-{tag}": "192.0.2.62"}
    for host, address in hosts.items():
        conf = {"driver": "openvswitch", "agent_mode": "dvr_snat", "tunneling_ip": address}
        cloud.run_async(heartbeat(service, host, agent_topic(host), conf, True))
    try:
        public = conn.network.find_network("public")
        router = conn.network.create_router(
            name=_name(), distributed=True, external_gateway_info={"network_id": public.id}
        )
        (central,) = [
            a.host for a in conn.network.routers_hosting_l3_agents(router) if a.host in hosts
        ]
        (other,) = set(hosts) - {central}
        nets, subnets = [], []
        for i in (1, 2):
            nets.append(conn.network.create_network(name=_name()))
            subnets.append(conn.network.create_subnet(
                network_id=nets[-1].id, cidr=f"10.9{i}.7.0/24", ip_version=4))  # fmt: skip
            conn.network.add_interface_to_router(router, subnet_id=subnets[-1].id)
        guest = conn.network.create_port(
            network_id=nets[0].id, device_owner="compute:nova", binding_host_id=other
        )
        fip = conn.network.create_ip(floating_network_id=public.id, port_id=guest.id)
        conn.network.update_router(router, routes=[{"destination": "10.99.0.0/16",
                                                     "nexthop": "10.91.7.50"}])  # fmt: skip

        def routers_of(host: str) -> dict:
            state = cloud.run_async(desired_state(service, host))
            return state, {r["id"]: r for r in state["routers"]}

        state, routers = routers_of(central)
        whole = routers[router.id]
        assert (whole["distributed"], whole["central"]) == (True, True)
        assert whole["gateway"] is not None and whole["routes"]
        assert [f["floating_ip"] for f in whole["floating_ips"]] == [fip.floating_ip_address]
        macs = state["dvr"]
        state, routers = routers_of(other)
        local = routers[router.id]
        assert (local["distributed"], local["central"]) == (True, False)
        assert (local["gateway"], local["floating_ips"], local["routes"]) == (None, [], [])
        # Both interfaces, the same addresses and MACs as the router's own host's.
        assert sorted(i["mac"] for i in local["interfaces"]) == sorted(
            i["mac"] for i in whole["interfaces"]
        )
        assert {a["ip"] for i in local["interfaces"] for a in i["addresses"]} == {
            "10.91.7.1", "10.92.7.1"
        }  # fmt: skip
        assert state["dvr"]["peers"] == [macs["mac"]] and macs["peers"] == [state["dvr"]["mac"]]
        assert state["dvr"]["mac"].startswith("fa:16:3f:") and macs["mac"] != state["dvr"]["mac"]
        # The gateway's MAC is pinned to the router's own host (where north-south goes).
        pinned = dict(map(tuple, state["tunnel"]["macs"][nets[0].id]))
        gateway_mac = next(i["mac"] for i in whole["interfaces"] if i["network_id"] == nets[0].id)
        assert pinned[gateway_mac] == hosts[central]
        # A centralized router on the guest's network runs only where it is hosted.
        plain = conn.network.create_router(name=_name())
        leg = conn.network.create_port(network_id=nets[0].id)
        conn.network.add_interface_to_router(plain, port_id=leg.id)
        hosted = {a.host for a in conn.network.routers_hosting_l3_agents(plain)}
        for host in hosts:
            assert (plain.id in routers_of(host)[1]) == (host in hosted)
        conn.network.remove_interface_from_router(plain, port_id=leg.id)
        # The guest gone, the other host no longer runs the router.
        conn.network.delete_ip(fip)
        conn.network.delete_port(guest)
        assert router.id not in routers_of(other)[1]
        conn.network.update_router(router, routes=[])
        for subnet in subnets:
            conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
        for net in nets:
            conn.network.delete_network(net)
        for r in (router, plain):
            conn.network.delete_router(r)
    finally:
        for host in hosts:
            for agent in conn.network.agents(host=host):
                conn.network.delete_agent(agent)
    # The hosts' last agents gone, so are their DVR MACs (Neutron's dvr_mac_db).
    assert not cloud.run_async(_host_macs(service, list(hosts)))


async def _host_macs(service, hosts: list[str]) -> list[str]:
    async with service.db.read() as session:
        return list(
            await session.scalars(select(DvrHostMac.mac_address).where(DvrHostMac.host.in_(hosts)))
        )


def test_on_a_single_host_a_distributed_router_is_run_as_a_centralized_one(
    cloud: CloudRunner, conn
):
    """The all-in-one (its agent does not tunnel): the host runs the router whole, as
    it runs a centralized one, and no DVR flows are asked for."""
    service, host = cloud.cloud.network, cloud.cloud.network.agent.host
    public = conn.network.find_network("public")
    net = conn.network.create_network(name=_name())
    subnet = conn.network.create_subnet(network_id=net.id, cidr="10.93.0.0/24", ip_version=4)
    bodies = {}
    for distributed in (True, False):
        router = conn.network.create_router(
            name=_name(), distributed=distributed, external_gateway_info={"network_id": public.id}
        )
        if distributed:
            conn.network.add_interface_to_router(router, subnet_id=subnet.id)
            guest = conn.network.create_port(network_id=net.id, device_owner="compute:nova")
            fip = conn.network.create_ip(floating_network_id=public.id, port_id=guest.id)
        bodies[distributed] = router
    state = cloud.run_async(desired_state(service, host))
    assert state["tunnel"] is None and state["dvr"] is None
    (run,) = [r for r in state["routers"] if r["id"] == bodies[True].id]
    assert (run["distributed"], run["central"]) == (True, True)
    assert run["gateway"]["network_id"] == public.id
    assert [a["ip"] for i in run["interfaces"] for a in i["addresses"]] == ["10.93.0.1"]
    assert run["floating_ips"] == [
        {"floating_ip": fip.floating_ip_address, "fixed_ip": guest.fixed_ips[0]["ip_address"]}
    ]
    (plain,) = [r for r in state["routers"] if r["id"] == bodies[False].id]
    assert {k: v for k, v in plain.items() if k not in ("id", "distributed", "interfaces",
                                                        "floating_ips", "gateway")} == {
        k: v for k, v in run.items() if k not in ("id", "distributed", "interfaces",
                                                  "floating_ips", "gateway")
    }  # fmt: skip
    conn.network.delete_ip(fip)
    conn.network.delete_port(guest)
    conn.network.remove_interface_from_router(bodies[True], subnet_id=subnet.id)
    conn.network.delete_network(net)
    for router in bodies.values():
        conn.network.delete_router(router)
