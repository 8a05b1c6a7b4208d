"""HA routers (Neutron's `l3-ha` extension) through openstacksdk, the `openstack` CLI
and plain HTTP: who may make and see them, the project's HA network and the HA ports,
scheduling on several L3 agents, the agents' reported `ha_state`, and migration only
while the router is down."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from openstack import exceptions

from cumulo.network.agents import report_ha_states
from cumulo.network.agents import report_state as heartbeat
from cumulo.network.dataplane.agent import agent_topic
from cumulo.network.dataplane.state import desired_state
from tests.cloudrunner import CloudRunner

ACTIVE_HA_MIGRATION = (
    "Bad router request: Cannot change HA attribute of active routers. Please set router "
    "admin_state_up to False prior to upgrade"
)
HA_PORT = "network:router_ha_interface"


def _name() -> str:
    return f"ha-{uuid.uuid4().hex[:8]}"


def _http(cloud: CloudRunner, method: str, path: str, body: dict | None = None, token=None):
    with cloud.api("network", token, "/v2.0") as api:
        return api.request(method, path, json=body)


@pytest.fixture()
def network_config(cloud: CloudRunner) -> Iterator:
    """The in-process cloud's [network] settings, put back after the test."""
    config = cloud.cloud.network.config.network
    saved = (config.l3_ha, config.max_l3_agents_per_router)
    yield config
    config.l3_ha, config.max_l3_agents_per_router = saved


@pytest.fixture()
def hosts(cloud: CloudRunner, conn) -> Iterator[list[str]]:
    """Three network hosts joined by VXLAN (their agents' heartbeats), gone after."""
    service = cloud.cloud.network
    tag = uuid.uuid4().hex[:6]
    names = [f"ha-{i}-{tag}" for i in range(3)]
    for i, host in enumerate(names):
        conf = {"driver": "linuxbridge", "agent_mode": "legacy", "tunneling_ip": f"192.0.2.7{i}"}
        cloud.run_async(heartbeat(service, host, agent_topic(host), conf, True))
    yield names
    for host in names:
        for agent in conn.network.agents(host=host):
            conn.network.delete_agent(agent)


def _l3_agents(cloud: CloudRunner, router_id: str) -> dict[str, dict]:
    agents = _http(cloud, "GET", f"/routers/{router_id}/l3-agents").json()["agents"]
    return {a["host"]: a for a in agents}


def _ha_network(conn, project_id: str):
    return conn.network.find_network(f"HA network tenant {project_id}")


def test_the_l3_ha_extension_is_listed(cloud: CloudRunner):
    aliases = {e["alias"] for e in _http(cloud, "GET", "/extensions").json()["extensions"]}
    assert "l3-ha" in aliases
    shown = _http(cloud, "GET", "/extensions/l3-ha").json()["extension"]
    assert (shown["name"], shown["description"]) == (
        "HA Router extension",
        "Adds HA capability to routers.",
    )


def test_an_ha_router_runs_on_several_agents_over_its_projects_ha_network(
    cloud: CloudRunner, conn, demo, hosts
):
    project_id = demo.current_project_id
    made = cloud.openstack(
        "router", "create", "--ha", "--project", project_id, _name(), "-f", "json"
    )
    assert made["ha"] is True
    router = conn.network.get_router(made["id"])
    # The project's HA network: owned by no project, seen by admins only.
    net = _ha_network(conn, project_id)
    assert (net.project_id, net.is_shared) == ("", False)
    (subnet,) = conn.network.subnets(network_id=net.id)
    assert (subnet.name, subnet.cidr) == (f"HA subnet tenant {project_id}", "169.254.192.0/18")
    assert (subnet.gateway_ip, subnet.is_dhcp_enabled) == (None, False)
    assert demo.network.find_network(net.name) is None
    # Every agent hosts it (three VXLAN hosts: Neutron's max_l3_agents_per_router; and
    # the cloud's own agent, whose bridges are its own), each with an HA port on its host.
    agents = _l3_agents(cloud, router.id)
    own = cloud.cloud.network.agent.host
    assert set(agents) == {*hosts, own}
    assert {agents[h]["ha_state"] for h in hosts} == {"standby"}
    ports = list(conn.network.ports(device_id=router.id, device_owner=HA_PORT))
    assert sorted(p.binding_host_id for p in ports) == sorted(agents)
    assert {p.network_id for p in ports} == {net.id}
    assert {p.name for p in ports} == {f"HA port tenant {project_id}"}
    assert {p.project_id for p in ports} == {""}
    # An agent reports its keepalived's role; the API shows it per agent (the noop data
    # plane of the cloud's own host, which elects nothing, says it is active there).
    for _ in range(100):
        if _l3_agents(cloud, router.id)[own]["ha_state"] == "active":
            break
        time.sleep(0.1)
    assert _l3_agents(cloud, router.id)[own]["ha_state"] == "active"
    cloud.run_async(report_ha_states(cloud.cloud.network, hosts[1], {router.id: "active"}))
    agents = _l3_agents(cloud, router.id)
    assert agents[hosts[1]]["ha_state"] == "active"
    assert agents[hosts[0]]["ha_state"] == "standby"
    listed = cloud.openstack("network", "agent", "list", "--router", router.id, "--long",
                             "-f", "json")  # fmt: skip
    assert {a["Host"]: a["HA State"] for a in listed}[hosts[1]] == "active"
    # Its interfaces are HA ones; the host it runs on is told the VRRP settings.
    tenant = demo.network.create_network(name=_name())
    tenant_subnet = demo.network.create_subnet(
        network_id=tenant.id, cidr="10.81.0.0/24", ip_version=4
    )
    demo.network.add_interface_to_router(router, subnet_id=tenant_subnet.id)
    (leg,) = conn.network.ports(device_id=router.id, network_id=tenant.id)
    assert leg.device_owner == "network:ha_router_replicated_interface"
    # The host that last became active holds the router's ports (L2 population sends
    # there), as Neutron binds them.
    cloud.run_async(report_ha_states(cloud.cloud.network, hosts[1], {router.id: "standby"}))
    cloud.run_async(report_ha_states(cloud.cloud.network, hosts[1], {router.id: "active"}))
    assert conn.network.get_port(leg.id).binding_host_id == hosts[1]
    state = cloud.run_async(desired_state(cloud.cloud.network, hosts[1]))
    (run,) = [r for r in state["routers"] if r["id"] == router.id]
    mine = next(p for p in ports if p.binding_host_id == hosts[1])
    assert run["ha"]["vr_id"] in range(1, 255)
    assert run["ha"]["port"]["port_id"] == mine.id
    assert run["ha"]["port"]["network_id"] == net.id
    # Not a port anyone deletes by hand.
    refused = _http(cloud, "DELETE", f"/ports/{mine.id}")
    assert refused.status_code == 409
    # A second HA router shares the network; with the last one gone, so is the network.
    second = conn.network.create_router(name=_name(), ha=True, project_id=project_id)
    assert _ha_network(conn, project_id).id == net.id
    assert second.is_ha is True
    conn.network.delete_router(second)
    assert _ha_network(conn, project_id) is not None
    demo.network.remove_interface_from_router(router, subnet_id=tenant_subnet.id)
    demo.network.delete_network(tenant)
    conn.network.delete_router(router)
    assert _ha_network(conn, project_id) is None
    assert not list(conn.network.ports(device_owner=HA_PORT, device_id=router.id))


def test_max_l3_agents_per_router_bounds_the_vxlan_hosts_of_an_ha_router(
    cloud: CloudRunner, conn, hosts, network_config
):
    network_config.max_l3_agents_per_router = 2
    router = conn.network.create_router(name=_name(), ha=True)
    hosting = set(_l3_agents(cloud, router.id)) & set(hosts)
    assert len(hosting) == 2
    # A heartbeat gives no third one; the limit raised, the next heartbeat does.
    (left,) = set(hosts) - hosting
    conf = {"driver": "linuxbridge", "agent_mode": "legacy", "tunneling_ip": "192.0.2.79"}
    service = cloud.cloud.network
    cloud.run_async(heartbeat(service, left, agent_topic(left), conf, False))
    assert left not in _l3_agents(cloud, router.id)
    network_config.max_l3_agents_per_router = 0  # every agent
    cloud.run_async(heartbeat(service, left, agent_topic(left), conf, False))
    assert left in _l3_agents(cloud, router.id)
    assert len(list(conn.network.ports(device_id=router.id, device_owner=HA_PORT))) == 4
    conn.network.delete_router(router)


def test_only_admins_choose_and_see_ha_and_routers_follow_l3_ha_by_default(
    cloud: CloudRunner, conn, demo, network_config
):
    for value in (True, False):
        with pytest.raises(exceptions.ForbiddenException, match="create_router:ha"):
            demo.network.create_router(name=_name(), ha=value)
    network_config.l3_ha = True
    router = demo.network.create_router(name=_name())
    token = cloud.token("demo", project="demo")
    shown = _http(cloud, "GET", f"/routers/{router.id}", token=token).json()["router"]
    assert "ha" not in shown
    assert _http(cloud, "GET", f"/routers/{router.id}").json()["router"]["ha"] is True
    refused = _http(cloud, "PUT", f"/routers/{router.id}", {"router": {"ha": False}}, token=token)
    assert refused.status_code == 403
    assert "update_router:ha" in refused.json()["NeutronError"]["message"]
    network_config.l3_ha = False
    assert conn.network.create_router(name=_name(), project_id=router.project_id).is_ha is False
    for r in conn.network.routers(project_id=router.project_id):
        if r.name.startswith("ha-"):
            conn.network.delete_router(r)
    assert _ha_network(conn, router.project_id) is None


def test_a_router_changes_between_ha_and_not_only_while_down(cloud: CloudRunner, conn):
    router = conn.network.create_router(name=_name())
    net = conn.network.create_network(name=_name())
    subnet = conn.network.create_subnet(network_id=net.id, cidr="10.82.0.0/24", ip_version=4)
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    path = f"/routers/{router.id}"
    refused = _http(cloud, "PUT", path, {"router": {"ha": True}})
    assert refused.status_code == 400
    assert refused.json()["NeutronError"] == {
        "type": "BadRequest",
        "message": ACTIVE_HA_MIGRATION,
        "detail": "",
    }
    # Taken down in the same request, it may (Neutron checks the router after it).
    changed = _http(cloud, "PUT", path, {"router": {"ha": True, "admin_state_up": False}})
    assert changed.status_code == 200 and changed.json()["router"]["ha"] is True
    (leg,) = conn.network.ports(device_id=router.id, network_id=net.id)
    assert leg.device_owner == "network:ha_router_replicated_interface"
    assert list(conn.network.ports(device_id=router.id, device_owner=HA_PORT))
    assert _ha_network(conn, router.project_id) is not None
    # The same value again is no migration: allowed while up.
    conn.network.update_router(router, is_admin_state_up=True)
    assert _http(cloud, "PUT", path, {"router": {"ha": True}}).status_code == 200
    conn.network.update_router(router, is_admin_state_up=False)
    cloud.openstack("router", "set", "--no-ha", router.id)
    assert conn.network.get_router(router.id).is_ha is False
    (leg,) = conn.network.ports(device_id=router.id, network_id=net.id)
    assert leg.device_owner == "network:router_interface"
    assert not list(conn.network.ports(device_id=router.id, device_owner=HA_PORT))
    assert _ha_network(conn, router.project_id) is None
    # Neutron's tempest: a router made explicitly not HA and down becomes distributed.
    conn.network.update_router(router, distributed=True)
    assert conn.network.get_router(router.id).is_distributed is True
    conn.network.remove_interface_from_router(router, subnet_id=subnet.id)
    conn.network.delete_network(net)
    conn.network.delete_router(router)


def test_a_silent_active_agent_is_shown_standby_then_unknown(cloud: CloudRunner, conn, hosts):
    service = cloud.cloud.network
    router = conn.network.create_router(name=_name(), ha=True)
    cloud.run_async(report_ha_states(service, hosts[0], {router.id: "active"}))
    cloud.run_async(_silence(service, [hosts[0]]))
    agents = _l3_agents(cloud, router.id)
    assert (agents[hosts[0]]["alive"], agents[hosts[0]]["ha_state"]) == (False, "standby")
    own = service.agent.host
    cloud.run_async(_silence(service, [*hosts, own]))
    try:
        assert _l3_agents(cloud, router.id)[hosts[0]]["ha_state"] == "unknown"
    finally:
        cloud.run_async(
            heartbeat(service, own, agent_topic(own), service.agent.driver.configurations(), False)
        )
    conn.network.delete_router(router)


async def _silence(service, hosts: list[str]) -> None:
    """The hosts' agents last reported long ago (their processes are gone)."""
    from datetime import timedelta

    from sqlalchemy import update

    from cumulo.common.db import utcnow
    from cumulo.network.models import Agent

    async with service.db.write() as session:
        await session.execute(
            update(Agent)
            .where(Agent.host.in_(hosts))
            .values(heartbeat_timestamp=utcnow() - timedelta(minutes=5))
        )


def test_a_router_is_not_both_distributed_and_ha(cloud: CloudRunner, conn, network_config):
    refused = _http(cloud, "POST", "/routers", {"router": {"name": _name(), "ha": True,
                                                           "distributed": True}})  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["NeutronError"] == {
        "type": "DistributedHARouterNotSupported",
        "message": "Currently distributed HA routers are not supported.",
        "detail": "",
    }
    router = conn.network.create_router(name=_name(), ha=True, is_admin_state_up=False)
    refused = _http(cloud, "PUT", f"/routers/{router.id}", {"router": {"distributed": True}})
    assert refused.json()["NeutronError"]["type"] == "DistributedHARouterNotSupported"
    # With both defaults on, a router made without either is distributed, not HA.
    network_config.l3_ha = True
    dvr = conn.network.create_router(name=_name(), distributed=True)
    assert (dvr.is_distributed, dvr.is_ha) == (True, False)
    for r in (router, dvr):
        conn.network.delete_router(r)


def test_the_auto_allocated_router_is_ha_when_the_clouds_routers_are(conn, network_config):
    network_config.l3_ha = True
    topology = conn.network.get_auto_allocated_topology()
    (auto,) = conn.network.routers(name="auto_allocated_router", project_id=topology.project_id)
    assert auto.is_ha is True
    owners = {p.device_owner for p in conn.network.ports(device_id=auto.id)}
    assert {"network:ha_router_replicated_interface", HA_PORT} <= owners
    assert _ha_network(conn, topology.project_id) is not None
    conn.network.delete_auto_allocated_topology(topology.project_id)
    assert _ha_network(conn, topology.project_id) is None
    assert not list(conn.network.ports(device_id=auto.id))
