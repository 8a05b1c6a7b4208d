"""Network API extensions Tempest enables by default, driven with openstacksdk and the
`openstack` CLI: bulk create, tags everywhere, security group rule checks, SLAAC
addresses, metering labels, agents and service providers."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from openstack import exceptions
from openstack.network.v2.network import Network
from openstack.network.v2.subnet import Subnet

from cumulo.network.agents import report_state as heartbeat
from cumulo.network.dataplane.agent import agent_topic
from cumulo.network.dataplane.state import desired_state
from tests.cloudrunner import CloudRunner


def _name() -> str:
    return f"ext-{uuid.uuid4().hex[:8]}"


def test_bulk_create_makes_every_network_subnet_and_port_or_none(conn):
    names = [_name(), _name()]
    nets = list(Network.bulk_create(conn.network, [{"name": n} for n in names]))
    assert [n.name for n in nets] == names
    subnets = list(
        Subnet.bulk_create(
            conn.network,
            [
                {"network_id": nets[0].id, "cidr": "10.70.0.0/24", "ip_version": 4},
                {"network_id": nets[1].id, "cidr": "10.71.0.0/24", "ip_version": 4},
            ],
        )
    )
    assert [s.cidr for s in subnets] == ["10.70.0.0/24", "10.71.0.0/24"]
    ports = list(conn.network.create_ports([{"network_id": n.id} for n in nets]))
    assert [p.network_id for p in ports] == [n.id for n in nets]
    # One bad port (an address outside the network) and the good one is not made either.
    before = len(list(conn.network.ports(network_id=nets[0].id)))
    with pytest.raises(exceptions.BadRequestException):
        list(
            conn.network.create_ports(
                [
                    {"network_id": nets[0].id},
                    {"network_id": nets[0].id, "fixed_ips": [{"ip_address": "192.0.2.9"}]},
                ]
            )
        )
    assert len(list(conn.network.ports(network_id=nets[0].id))) == before
    for port in ports:
        conn.network.delete_port(port)
    for net in nets:
        conn.network.delete_network(net)


def test_tags_on_subnet_pools_routers_and_security_groups_filter_lists(conn):
    pool = conn.network.create_subnet_pool(name=_name(), prefixes=["10.72.0.0/16"])
    router = conn.network.create_router(name=_name())
    group = conn.network.create_security_group(name=_name())
    for resource in (pool, router, group):
        conn.network.set_tags(resource, ["blue", "green"])
    assert conn.network.get_subnet_pool(pool.id).tags == ["blue", "green"]
    assert [p.id for p in conn.network.subnet_pools(tags="blue,green")] == [pool.id]
    assert pool.id not in [p.id for p in conn.network.subnet_pools(not_tags="blue")]
    assert [r.id for r in conn.network.routers(any_tags="green,red")] == [router.id]
    conn.network.delete_subnet_pool(pool)
    conn.network.delete_router(router)
    conn.network.delete_security_group(group)


def test_security_group_rules_are_refused_with_neutrons_errors(conn, cloud: CloudRunner):
    group = conn.network.create_security_group(name=_name())
    cases = [
        ({"protocol": "tcp", "port_range_min": -16, "port_range_max": 80}, "port -16"),
        ({"protocol": "tcp", "port_range_min": 80, "port_range_max": 79}, "port_range_min must"),
        ({"protocol": "tcp", "port_range_max": 6}, "port_range_min must be <= port_range_max"),
        ({"protocol": "icmp", "port_range_min": 1, "port_range_max": 256}, "ICMP code"),
        ({"protocol": "icmp", "port_range_max": 6}, "ICMP type (port-range-min) is missing"),
        ({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}, "Invalid protocol gre"),
        ({"remote_ip_prefix": "2001:db8::/64"}, "Conflicting value ethertype IPv4"),
    ]
    for attrs, message in cases:
        with pytest.raises(exceptions.BadRequestException, match=re.escape(message)):
            conn.network.create_security_group_rule(
                security_group_id=group.id, direction="ingress", ethertype="IPv4", **attrs
            )
    rule = dict(security_group_id=group.id, direction="ingress", protocol="tcp", port_range_min=22)
    made = conn.network.create_security_group_rule(**rule, port_range_max=22)
    with pytest.raises(exceptions.ConflictException, match=f"Rule id is {made.id}"):
        conn.network.create_security_group_rule(**rule, port_range_max=22)
    # Only Neutron names a group "default" (any case): 409.
    proc = cloud.openstack("security", "group", "create", "Default", check=False)
    assert proc.returncode != 0 and "Default security group already exists" in proc.stderr
    with pytest.raises(exceptions.ConflictException):
        conn.network.update_security_group(group, name="default")
    conn.network.delete_security_group(group)


def test_slaac_ports_get_their_eui64_address_and_lose_it_with_the_subnet(conn):
    net = conn.network.create_network(name=_name())
    v4 = conn.network.create_subnet(network_id=net.id, cidr="10.73.0.0/24", ip_version=4)
    slaac = conn.network.create_subnet(
        network_id=net.id,
        cidr="2001:DB8:73::/64",
        ip_version=6,
        ipv6_ra_mode="slaac",
        ipv6_address_mode="slaac",
    )
    assert slaac.cidr == "2001:db8:73::/64"  # canonical text
    port = conn.network.create_port(network_id=net.id, mac_address="fa:16:3e:12:34:56")
    ips = {f["subnet_id"]: f["ip_address"] for f in port.fixed_ips}
    assert ips[slaac.id] == "2001:db8:73:0:f816:3eff:fe12:3456"
    assert ips[v4.id].startswith("10.73.0.")
    with pytest.raises(exceptions.BadRequestException, match="automatic addresses"):
        conn.network.create_port(
            network_id=net.id, fixed_ips=[{"subnet_id": slaac.id, "ip_address": "2001:db8:73::9"}]
        )
    with pytest.raises(exceptions.BadRequestException, match="must be the same value"):
        conn.network.create_subnet(
            network_id=net.id,
            cidr="2001:db8:74::/64",
            ip_version=6,
            ipv6_ra_mode="slaac",
            ipv6_address_mode="dhcpv6-stateful",
        )
    conn.network.delete_subnet(slaac)  # its addresses go with it
    port = conn.network.get_port(port.id)
    assert [f["subnet_id"] for f in port.fixed_ips] == [v4.id]
    conn.network.delete_port(port)
    conn.network.delete_network(net)


def test_admin_keeps_metering_labels_and_rules_members_see_none(conn, demo):
    label = conn.network.create_metering_label(name=_name(), description="web")
    rule = conn.network.create_metering_label_rule(
        metering_label_id=label.id, direction="ingress", remote_ip_prefix="10.74.0.0/24"
    )
    assert rule.is_excluded is False
    assert [r.id for r in conn.network.metering_label_rules(metering_label_id=label.id)] == [
        rule.id
    ]
    with pytest.raises(exceptions.ConflictException, match="overlaps another"):
        conn.network.create_metering_label_rule(
            metering_label_id=label.id, direction="ingress", remote_ip_prefix="10.74.0.128/25"
        )
    assert list(demo.network.metering_labels()) == []
    with pytest.raises(exceptions.NotFoundException):
        demo.network.get_metering_label(label.id)
    with pytest.raises(exceptions.ForbiddenException):
        demo.network.create_metering_label(name=_name())
    conn.network.delete_metering_label(label)
    with pytest.raises(exceptions.NotFoundException):
        conn.network.get_metering_label_rule(rule.id)


def test_admin_lists_the_hosts_agents_alive(cloud: CloudRunner, demo):
    agents = cloud.openstack("network", "agent", "list", "-f", "json")
    kinds = sorted(a["Agent Type"] for a in agents)
    assert kinds == ["DHCP agent", "L3 agent", "Linux bridge agent", "Metadata agent"]
    assert all(a["Alive"] for a in agents)
    dhcp = next(a for a in agents if a["Agent Type"] == "DHCP agent")
    cloud.openstack("network", "agent", "set", "--description", "rack 1", dhcp["ID"])
    shown = cloud.openstack("network", "agent", "show", dhcp["ID"], "-f", "json")
    assert shown["description"] == "rack 1" and shown["availability_zone"] == "nova"
    assert list(demo.network.agents()) == []
    assert list(demo.network.service_providers()) == []
    extensions = {
        e["Alias"] for e in cloud.openstack("extension", "list", "--network", "-f", "json")
    }
    assert {"agent", "metering", "service-type", "tag", "extra_dhcp_opt"} <= extensions


def test_a_ports_extra_dhcp_options_are_merged_and_reach_the_dhcp_server(cloud: CloudRunner):
    conn = cloud.sdk()
    net = conn.network.create_network(name=_name())
    conn.network.create_subnet(network_id=net.id, cidr="10.75.0.0/24", ip_version=4)
    port = cloud.openstack(
        "port", "create", "--network", net.id, _name(), "-f", "json",
        "--extra-dhcp-option", "name=bootfile-name,value=pxelinux.0",
        "--extra-dhcp-option", "name=tftp-server,value=192.0.2.8",
    )  # fmt: skip
    names = sorted(o["opt_name"] for o in port["extra_dhcp_opts"])
    assert names == ["bootfile-name", "tftp-server"]
    # Options given are set by name (null removes one); the others stay, as Neutron.
    change = [
        {"opt_name": "bootfile-name", "opt_value": "ipxe.efi"},
        {"opt_name": "tftp-server", "opt_value": None},
    ]
    port = conn.network.update_port(port["id"], extra_dhcp_opts=change)
    wanted = [{"opt_name": "bootfile-name", "opt_value": "ipxe.efi", "ip_version": 4}]
    assert port.extra_dhcp_opts == wanted
    bad = [{"opt_name": "a\nb", "opt_value": "x"}]  # would be a line of dnsmasq's own
    with pytest.raises(exceptions.BadRequestException):
        conn.network.update_port(port.id, extra_dhcp_opts=bad)
    state = cloud.run_async(desired_state(cloud.cloud.network, "host-x"))
    network = next(n for n in state["networks"] if n["id"] == net.id)
    lease = next(lease for lease in network["leases"] if lease["port_id"] == port.id)
    assert lease["dhcp_opts"] == wanted
    conn.network.delete_port(port)
    conn.network.delete_network(net)


def _admin_http(cloud: CloudRunner, method: str, path: str, body: dict | None = None):
    url = f"http://127.0.0.1:{cloud.config.ports.network}/v2.0{path}"
    return httpx.request(method, url, json=body, headers={"X-Auth-Token": cloud.token()})


def test_an_admin_moves_a_network_off_a_dhcp_agent_and_a_router_off_an_l3_agent(
    cloud: CloudRunner, conn
):
    service, host = cloud.cloud.network, cloud.cloud.network.agent.host
    net = conn.network.create_network(name=_name())
    conn.network.create_subnet(network_id=net.id, cidr="10.76.0.0/24", ip_version=4)
    router = conn.network.create_router(name=_name())
    agents = {a.agent_type: a for a in conn.network.agents(host=host)}
    dhcp, l3 = agents["DHCP agent"], agents["L3 agent"]
    # New networks with DHCP and new routers go to every living agent.
    assert [a.id for a in conn.network.network_hosting_dhcp_agents(net)] == [dhcp.id]
    assert [a.id for a in conn.network.routers_hosting_l3_agents(router)] == [l3.id]

    def served() -> tuple[bool, bool]:
        state = cloud.run_async(desired_state(service, host))
        network = next(n for n in state["networks"] if n["id"] == net.id)
        return network["dhcp"] is not None, router.id in [r["id"] for r in state["routers"]]

    assert served() == (True, True)
    # Disabled, the agents are given nothing (not even what nobody serves).
    for agent in (dhcp, l3):
        conn.network.update_agent(agent, is_admin_state_up=False)
    conn.network.remove_dhcp_agent_from_network(dhcp, net)
    conn.network.remove_router_from_agent(l3, router)
    assert net.id not in [n.id for n in conn.network.dhcp_agent_hosting_networks(dhcp)]
    assert served() == (False, False)
    own = service.agent.driver.configurations()  # not {}: other files read the agent's
    assert cloud.run_async(heartbeat(service, host, agent_topic(host), own, False)) is False
    assert served() == (False, False)
    # (openstacksdk and the CLI do not look at these answers: asked over HTTP.)
    again = _admin_http(cloud, "DELETE", f"/agents/{dhcp.id}/dhcp-networks/{net.id}")
    assert again.status_code == 409
    assert again.json()["NeutronError"]["type"] == "NetworkNotHostedByDhcpAgent"
    # Enabled again, an agent's heartbeat takes what no agent serves.
    for agent in (dhcp, l3):
        conn.network.update_agent(agent, is_admin_state_up=True)
    assert cloud.run_async(heartbeat(service, host, agent_topic(host), own, False)) is True
    assert served() == (True, True)
    conn.network.remove_dhcp_agent_from_network(dhcp, net)
    conn.network.add_dhcp_agent_to_network(dhcp, net)  # by hand
    assert served() == (True, True)
    again = _admin_http(cloud, "POST", f"/agents/{l3.id}/l3-routers", {"router_id": router.id})
    assert again.status_code == 409 and "already hosted" in again.text
    # Only a DHCP agent hosts networks.
    wrong = _admin_http(cloud, "POST", f"/agents/{l3.id}/dhcp-networks", {"network_id": net.id})
    assert wrong.status_code == 404 and "not a valid DHCP Agent" in wrong.text
    conn.network.delete_router(router)
    conn.network.delete_network(net)


def test_admin_sees_how_many_addresses_each_network_and_subnet_has_left(conn, demo):
    net = conn.network.create_network(name=_name())
    v4 = conn.network.create_subnet(network_id=net.id, cidr="10.77.0.0/28", ip_version=4)
    v6 = conn.network.create_subnet(network_id=net.id, cidr="2001:db8:77::/120", ip_version=6)
    conn.network.create_port(network_id=net.id)
    usage = conn.network.get_network_ip_availability(net.id)
    by_subnet = {s["subnet_id"]: s for s in usage.subnet_ip_availability}
    # 10.77.0.2-14 (13 addresses): the port and the DHCP port hold one each.
    assert (by_subnet[v4.id]["total_ips"], by_subnet[v4.id]["used_ips"]) == (13, 2)
    assert (by_subnet[v6.id]["total_ips"], by_subnet[v6.id]["used_ips"]) == (254, 1)
    assert (usage.total_ips, usage.used_ips) == (267, 3)
    only_v4 = list(conn.network.network_ip_availabilities(network_id=net.id, ip_version=4))
    assert [s["subnet_id"] for s in only_v4[0].subnet_ip_availability] == [v4.id]
    assert list(demo.network.network_ip_availabilities()) == []
    for port in conn.network.ports(network_id=net.id, device_owner=""):
        conn.network.delete_port(port)
    conn.network.delete_network(net)
