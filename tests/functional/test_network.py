"""The Network service as a new user drives it: the real `openstack` CLI and openstacksdk."""

from __future__ import annotations

import uuid

import httpx
import pytest

from cumulo.network.dataplane.state import desired_state
from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def net_http(cloud: CloudRunner):
    def make(token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{cloud.config.ports.network}",
            headers={"X-Auth-Token": token},
            timeout=30,
        )

    return make


def test_cli_builds_a_routed_network_with_a_floating_ip(cloud: CloudRunner):
    o = cloud.openstack
    net, sub, rtr, port, sg = (_name(p) for p in ("net", "sub", "rtr", "port", "sg"))
    network = o("network", "create", net, "-f", "json")
    assert network["status"] == "ACTIVE" and network["mtu"] == 1500
    subnet = o(
        "subnet", "create", "--network", net, "--subnet-range", "10.0.0.0/24", sub, "-f", "json"
    )
    assert subnet["gateway_ip"] == "10.0.0.1"
    assert subnet["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    o("router", "create", rtr)
    o("router", "add", "subnet", rtr, sub)
    o("router", "set", "--external-gateway", "public", rtr)
    router = o("router", "show", rtr, "-f", "json")
    assert router["external_gateway_info"]["enable_snat"] is True
    assert router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"].startswith(
        "172.24.4."
    )
    p = o("port", "create", "--network", net, port, "-f", "json")
    assert p["mac_address"].startswith("fa:16:3e:")
    assert p["fixed_ips"][0]["ip_address"].startswith("10.0.0.")
    o("security", "group", "create", sg)
    rule = o(
        "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", sg,
        "-f", "json",
    )  # fmt: skip
    assert (rule["port_range_min"], rule["port_range_max"], rule["protocol"]) == (22, 22, "tcp")
    fip = o("floating", "ip", "create", "public", "-f", "json")
    assert fip["floating_ip_address"].startswith("172.24.4.") and fip["port_id"] is None
    o("floating", "ip", "set", "--port", port, fip["id"])
    shown = o("floating", "ip", "show", fip["id"], "-f", "json")
    assert shown["port_id"] == p["id"] and shown["router_id"] == router["id"]
    assert shown["fixed_ip_address"] == p["fixed_ips"][0]["ip_address"]
    assert net in [n["Name"] for n in o("network", "list", "-f", "json")]
    assert sub in [s["Name"] for s in o("subnet", "list", "-f", "json")]
    assert port in [x["Name"] for x in o("port", "list", "-f", "json")]
    assert rtr in [r["Name"] for r in o("router", "list", "-f", "json")]
    assert sg in [g["Name"] for g in o("security", "group", "list", "-f", "json")]
    assert fip["id"] in [f["ID"] for f in o("floating", "ip", "list", "-f", "json")]
    # Tear down in the order a user would.
    o("floating", "ip", "delete", fip["id"])
    o("port", "delete", port)
    o("router", "unset", "--external-gateway", rtr)
    o("router", "remove", "subnet", rtr, sub)
    o("router", "delete", rtr)
    o("security", "group", "delete", sg)
    o("subnet", "delete", sub)
    o("network", "delete", net)
    assert net not in [n["Name"] for n in o("network", "list", "-f", "json")]


def test_cli_network_quota_and_tags(cloud: CloudRunner):
    o = cloud.openstack
    net = _name("tagged")
    o("network", "create", "--tag", "blue", "--tag", "green", net)
    assert sorted(o("network", "show", net, "-f", "json")["tags"]) == ["blue", "green"]
    found = o("network", "list", "--tags", "blue", "-f", "json")
    assert net in [n["Name"] for n in found]
    o("network", "unset", "--tag", "blue", net)
    assert o("network", "show", net, "-f", "json")["tags"] == ["green"]
    quota = o("quota", "show", "--network", "demo", "-f", "json")
    limits = {q["Resource"]: q["Limit"] for q in quota}
    assert (limits["networks"], limits["ports"], limits["routers"]) == (100, 500, 10)
    o("network", "delete", net)


def test_sdk_creates_lists_and_deletes_network_resources(cloud: CloudRunner):
    conn = cloud.sdk("cumulo-demo")
    net = conn.network.create_network(name=_name("sdk"))
    subnet = conn.network.create_subnet(
        network_id=net.id, ip_version=6, cidr="fd00:1::/64", name=_name("v6")
    )
    assert subnet.gateway_ip == "fd00:1::1"
    port = conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": "fd00:1::10"}])
    assert port.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "fd00:1::10"}]
    default = [g for g in conn.network.security_groups() if g.name == "default"]
    assert len(default) == 1 and port.security_group_ids == [default[0].id]
    directions = sorted((r["direction"], r["ethertype"]) for r in default[0].security_group_rules)
    assert directions == [("egress", "IPv4"), ("egress", "IPv6"), ("ingress", "IPv4"),
                          ("ingress", "IPv6")]  # fmt: skip
    assert conn.network.find_network("public").is_router_external
    assert [p.id for p in conn.network.ports(network_id=net.id)] == [port.id]
    conn.network.delete_port(port)
    conn.network.delete_subnet(subnet)
    conn.network.delete_network(net)
    assert conn.network.find_network(net.id) is None


def test_discovery_and_extensions(cloud: CloudRunner, net_http, admin_token: str):
    with net_http(admin_token) as http:
        versions = http.get("/").json()["versions"]
        assert versions[0]["id"] == "v2.0" and versions[0]["links"][0]["rel"] == "self"
        aliases = {e["alias"] for e in http.get("/v2.0/extensions").json()["extensions"]}
        assert {"router", "security-group", "external-net", "quotas", "binding"} <= aliases
        assert "l3-ha" in aliases and "qos" not in aliases
        assert http.get("/v2.0/extensions/router").json()["extension"]["alias"] == "router"


def test_listing_supports_fields_sorting_and_marker_pagination(
    cloud: CloudRunner, net_http, admin_token: str
):
    prefix = _name("page")
    with net_http(admin_token) as http:
        ids = [
            http.post("/v2.0/networks", json={"network": {"name": f"{prefix}-{i}"}}).json()[
                "network"
            ]["id"]
            for i in range(5)
        ]
        seen, url = [], f"/v2.0/networks?name={prefix}-0&name={prefix}-1&name={prefix}-2"
        url += f"&name={prefix}-3&name={prefix}-4&sort_key=name&sort_dir=desc&limit=2&fields=name"
        while url:
            body = http.get(url).json()
            seen += [n["name"] for n in body["networks"]]
            assert all(set(n) == {"name"} for n in body["networks"])
            nxt = [link for link in body.get("networks_links", []) if link["rel"] == "next"]
            url = nxt[0]["href"] if nxt else None
        assert seen == [f"{prefix}-{i}" for i in (4, 3, 2, 1, 0)]
        for i in ids:
            assert http.delete(f"/v2.0/networks/{i}").status_code == 204


def test_project_sees_own_and_shared_networks_only(cloud: CloudRunner, net_http, admin_token):
    demo = cloud.token("demo", project="demo")
    with net_http(admin_token) as admin, net_http(demo) as user:
        private = admin.post("/v2.0/networks", json={"network": {"name": _name("adm")}}).json()
        shared = admin.post(
            "/v2.0/networks", json={"network": {"name": _name("shr"), "shared": True}}
        ).json()
        visible = {n["id"] for n in user.get("/v2.0/networks").json()["networks"]}
        assert shared["network"]["id"] in visible
        assert private["network"]["id"] not in visible
        r = user.get(f"/v2.0/networks/{private['network']['id']}")
        assert r.status_code == 404 and r.json()["NeutronError"]["type"] == "NetworkNotFound"
        assert (
            "provider:network_type"
            not in user.get(f"/v2.0/networks/{shared['network']['id']}").json()["network"]
        )
        r = user.post("/v2.0/networks", json={"network": {"name": "x", "shared": True}})
        assert r.status_code == 403
        port = user.post("/v2.0/ports", json={"port": {"network_id": shared["network"]["id"]}})
        assert port.status_code == 201
        assert user.delete(f"/v2.0/ports/{port.json()['port']['id']}").status_code == 204
        for net in (private, shared):
            assert admin.delete(f"/v2.0/networks/{net['network']['id']}").status_code == 204


def test_data_plane_agent_sees_bound_ports_with_their_rules(cloud: CloudRunner):
    conn = cloud.sdk()
    net = conn.network.create_network(name=_name("dp"))
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.60.0.0/24")
    agent = cloud.cloud.network.agent
    port = conn.network.create_port(network_id=net.id, binding_host_id=agent.host)
    state = cloud.run_async(desired_state(cloud.cloud.network, agent.host))
    bound = [p for p in state["ports"] if p["id"] == port.id]
    assert bound and bound[0]["addresses"][0]["ip"] == port.fixed_ips[0]["ip_address"]
    directions = sorted({r["direction"] for r in bound[0]["rules"]})
    assert directions == ["egress", "ingress"]
    network = next(n for n in state["networks"] if n["id"] == net.id)
    assert network["dhcp"] is not None
    assert {"mac": port.mac_address, "ip": port.fixed_ips[0]["ip_address"]}.items() <= next(
        lease for lease in network["leases"] if lease["port_id"] == port.id
    ).items()
    cloud.run_async(agent.wait_idle())
    assert net.id in [n["id"] for n in agent.driver.state["networks"]]
    conn.network.delete_port(port)
    conn.network.delete_network(net)


def test_a_subnet_is_routed_when_a_router_interface_holds_its_gateway(cloud: CloudRunner):
    """What decides where guests are sent for metadata (Neutron's isolated subnets)."""
    conn = cloud.sdk()
    net = conn.network.create_network(name=_name("iso"))
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.61.0.0/24")
    router = conn.network.create_router(name=_name("iso"))

    def routed() -> bool:
        state = cloud.run_async(desired_state(cloud.cloud.network, "host-x"))
        [subnet] = next(n for n in state["networks"] if n["id"] == net.id)["subnets"]
        return subnet["routed"]

    assert routed() is False
    # An interface on another address of the subnet: guests' gateway is not the router.
    leg = conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": "10.61.0.9"}])
    conn.network.add_interface_to_router(router, port_id=leg.id)
    assert routed() is False
    conn.network.remove_interface_from_router(router, port_id=leg.id)
    conn.network.add_interface_to_router(router, subnet_id=sub.id)
    assert routed() is True
    conn.network.remove_interface_from_router(router, subnet_id=sub.id)
    assert routed() is False
    conn.network.delete_router(router)
    conn.network.delete_network(net)
