"""The APIs older microversions still have (Nova's proxies to the Network, Image and
Block Storage services, os-hosts, addFloatingIp), and a floating IP shown in the
server's addresses once the Network service reports it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_api_shape import compute
from tests.functional.test_compute_servers import boot, demo, image  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def demo_token(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


@pytest.fixture(scope="module")
def server(cloud: CloudRunner, image: str) -> dict:  # noqa: F811 - the image fixture
    return boot(cloud, image, f"proxy-{uuid.uuid4().hex[:8]}", "-f", "json")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    "path",
    ["/v2.1/os-security-groups", "/v2.1/os-floating-ips", "/v2.1/images", "/v2.1/os-volumes"],
)
def test_proxy_apis_are_gone_from_2_36(cloud: CloudRunner, demo_token: str, path: str):
    with compute(cloud, demo_token, "2.35") as c:
        assert c.get(path).status_code == 200
    with compute(cloud, demo_token, "2.36") as c:
        r = c.get(path)
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404


def test_security_groups_through_compute(cloud: CloudRunner, demo_token: str):
    with compute(cloud, demo_token) as c:
        name = _name("sg")
        r = c.post(
            "/v2.1/os-security-groups", json={"security_group": {"name": name, "description": ""}}
        )
        assert r.status_code == 200, r.text
        group = r.json()["security_group"]
        assert set(group) == {"id", "name", "description", "tenant_id", "rules"}
        # the new group's rules are egress only: none in the nova-network shape
        assert group["rules"] == []
        rule = {
            "parent_group_id": group["id"],
            "ip_protocol": "tcp",
            "from_port": 22,
            "to_port": 22,
        }
        r = c.post("/v2.1/os-security-group-rules", json={"security_group_rule": rule})
        assert r.status_code == 200, r.text
        created = r.json()["security_group_rule"]
        assert created["ip_range"] == {"cidr": "0.0.0.0/0"} and created["group"] == {}
        # a duplicate and a bad port range are bad requests, as Nova answers them
        r = c.post("/v2.1/os-security-group-rules", json={"security_group_rule": rule})
        assert r.status_code == 400
        bad = {**rule, "from_port": 23, "to_port": 22}
        assert (
            c.post("/v2.1/os-security-group-rules", json={"security_group_rule": bad}).status_code
            == 400
        )
        # the Network service sees the same rule
        rules = cloud.openstack(
            "security", "group", "rule", "list", group["id"], "-f", "json", cloud="cumulo-demo"
        )
        assert created["id"] in [r["ID"] for r in rules]
        shown = c.get(f"/v2.1/os-security-groups/{group['id']}").json()["security_group"]
        assert [r["id"] for r in shown["rules"]] == [created["id"]]
        assert c.get("/v2.1/os-security-groups/not-a-uuid").status_code == 400
        assert c.delete(f"/v2.1/os-security-group-rules/{created['id']}").status_code == 202
        assert c.delete(f"/v2.1/os-security-groups/{group['id']}").status_code == 202
        assert c.get(f"/v2.1/os-security-groups/{group['id']}").status_code == 404
        # the default group cannot be deleted; an empty id is not a route
        groups = c.get("/v2.1/os-security-groups").json()["security_groups"]
        default = next(g for g in groups if g["name"] == "default")
        assert c.delete(f"/v2.1/os-security-groups/{default['id']}").status_code == 400
        assert c.delete("/v2.1/os-security-groups/").status_code == 404


def _wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_floating_ip_appears_in_the_server_addresses(cloud: CloudRunner, server: dict):
    """Associated through the Network API (as `openstack server add floating ip` does),
    the address shows in `server list` with type floating, and goes when removed."""
    address = demo(cloud, "floating", "ip", "create", "public", "-f", "json")["floating_ip_address"]
    demo(cloud, "server", "add", "floating", "ip", server["id"], address)

    def listed() -> str:
        rows = demo(cloud, "server", "list", "--name", server["name"], "-f", "json")
        return str(rows[0]["Networks"])

    _wait_for(lambda: address in listed())
    with compute(cloud, cloud.token("demo", project="demo"), "2.79") as c:
        body = c.get(f"/v2.1/servers/{server['id']}").json()["server"]
        [floating] = [a for net in body["addresses"].values() for a in net if a["addr"] == address]
        assert floating["OS-EXT-IPS:type"] == "floating" and floating["version"] == 4
    demo(cloud, "server", "remove", "floating", "ip", server["id"], address)
    _wait_for(lambda: address not in listed())
    demo(cloud, "floating", "ip", "delete", address)


def test_floating_ips_through_compute_and_add_floating_ip(
    cloud: CloudRunner, demo_token: str, server: dict
):
    with compute(cloud, demo_token) as c:
        pools = c.get("/v2.1/os-floating-ip-pools").json()["floating_ip_pools"]
        assert {"name": "public"} in pools
        assert c.post("/v2.1/os-floating-ips", json={"pool": "nope"}).status_code == 404
        r = c.post("/v2.1/os-floating-ips", json={"pool": "public"})
        assert r.status_code == 200, r.text
        fip = r.json()["floating_ip"]
        assert fip["pool"] == "public" and fip["instance_id"] is None and fip["fixed_ip"] is None
        action = f"/v2.1/servers/{server['id']}/action"
        assert c.post(action, json={"addFloatingIp": {"address": fip["ip"]}}).status_code == 202
        shown = c.get(f"/v2.1/os-floating-ips/{fip['id']}").json()["floating_ip"]
        assert shown["instance_id"] == server["id"] and shown["fixed_ip"]
        addresses = c.get(f"/v2.1/servers/{server['id']}").json()["server"]["addresses"]
        assert fip["ip"] in [a["addr"] for net in addresses.values() for a in net]
        # removed from the API at 2.44
        r = c.post(
            action,
            json={"removeFloatingIp": {"address": fip["ip"]}},
            headers={"OpenStack-API-Version": "compute 2.44"},
        )
        assert r.status_code == 404
        assert c.post(action, json={"removeFloatingIp": {"address": fip["ip"]}}).status_code == 202
        r = c.post(action, json={"removeFloatingIp": {"address": fip["ip"]}})
        assert r.status_code == 409
        assert c.post(action, json={"addFloatingIp": {"address": "0.0.0.0"}}).status_code == 404
        assert c.delete(f"/v2.1/os-floating-ips/{fip['id']}").status_code == 202
        assert c.get(f"/v2.1/os-floating-ips/{fip['id']}").status_code == 404


def test_add_and_remove_fixed_ip_until_2_44(cloud: CloudRunner, demo_token: str, server: dict):
    """Nova's multinic actions: one more fixed IP on the server's port on a network, shown
    in its addresses at once, then removed; bad input and unknown addresses are 400."""
    action = f"/v2.1/servers/{server['id']}/action"

    def addresses(c) -> list[str]:
        found = c.get(f"/v2.1/servers/{server['id']}/ips").json()["addresses"]
        return sorted(a["addr"] for net in found.values() for a in net)

    with compute(cloud, demo_token) as c:
        [interface] = c.get(f"/v2.1/servers/{server['id']}/os-interface").json()[
            "interfaceAttachments"
        ]
        before = addresses(c)
        r = c.post(action, json={"addFixedIp": {"networkId": interface["net_id"]}})
        assert r.status_code == 202, r.text
        after = addresses(c)
        [added] = sorted(set(after) - set(before))
        port = c.get(f"/v2.1/servers/{server['id']}/os-interface/{interface['port_id']}").json()
        assert added in [ip["ip_address"] for ip in port["interfaceAttachment"]["fixed_ips"]]

        assert c.post(action, json={"removeFixedIp": {"address": added}}).status_code == 202
        assert addresses(c) == before
        r = c.post(action, json={"removeFixedIp": {"address": added}})
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == (
            f"Instance {server['id']} doesn't have fixed IP '{added}'."
        )
        r = c.post(action, json={"addFixedIp": {"networkId": str(uuid.uuid4())}})
        assert r.status_code == 400 and "Network could not be found" in r.text
        assert c.post(action, json={"addFixedIp": {}}).status_code == 400
        assert c.post(action, json={"removeFixedIp": {"address": "x"}}).status_code == 400
        r = c.post(
            action,
            json={"addFixedIp": {"networkId": interface["net_id"]}},
            headers={"OpenStack-API-Version": "compute 2.44"},
        )
        assert r.status_code == 404
        assert addresses(c) == before


def test_add_fixed_ip_takes_the_next_subnet_when_one_is_full(
    cloud: CloudRunner,
    demo_token: str,
    image: str,  # noqa: F811 - the image fixture
):
    net = demo(cloud, "network", "create", _name("multinic"), "-f", "json")["id"]
    # One address, no DHCP port to take it: full once the server has it.
    pool = "start=10.77.0.10,end=10.77.0.10"
    demo(cloud, "subnet", "create", "--network", net, "--subnet-range", "10.77.0.0/24",
         "--allocation-pool", pool, "--no-dhcp", _name("full"))  # fmt: skip
    demo(cloud, "subnet", "create", "--network", net, "--subnet-range", "10.78.0.0/24",
         _name("roomy"))  # fmt: skip
    server = demo(cloud, "server", "create", "--image", image, "--flavor", "m1.tiny",
                  "--nic", f"net-id={net},v4-fixed-ip=10.77.0.10", "--wait", _name("multinic"),
                  "-f", "json")  # fmt: skip
    with compute(cloud, demo_token) as c:
        action = f"/v2.1/servers/{server['id']}/action"
        assert c.post(action, json={"addFixedIp": {"networkId": net}}).status_code == 202
        found = c.get(f"/v2.1/servers/{server['id']}/ips").json()["addresses"]
        addrs = sorted(a["addr"] for nets in found.values() for a in nets)
        # the first subnet has no address left: the second gives one
        assert addrs[0] == "10.77.0.10" and addrs[1].startswith("10.78.0."), addrs
        assert len(addrs) == 2
    demo(cloud, "server", "delete", "--wait", server["id"])


def test_network_service_reports_to_external_events(
    cloud: CloudRunner, admin_token: str, server: dict
):
    with compute(cloud, admin_token) as c:
        events = [
            {"name": "network-changed", "server_uuid": server["id"]},
            {"name": "network-changed", "server_uuid": str(uuid.uuid4())},
        ]
        r = c.post("/v2.1/os-server-external-events", json={"events": events})
        assert r.status_code == 207
        assert [e["code"] for e in r.json()["events"]] == [200, 404]
    with compute(cloud, cloud.token("demo", project="demo")) as c:
        r = c.post("/v2.1/os-server-external-events", json={"events": events[:1]})
        assert r.status_code == 403


def test_os_hosts_for_admins_until_2_43(cloud: CloudRunner, admin_token: str, demo_token: str):
    with compute(cloud, admin_token) as c:
        hosts = c.get("/v2.1/os-hosts").json()["hosts"]
        compute_host = next(h for h in hosts if h["service"] == "compute")
        assert c.get("/v2.1/os-hosts", params={"zone": "nowhere"}).json() == {"hosts": []}
        detail = c.get(f"/v2.1/os-hosts/{compute_host['host_name']}").json()["host"]
        assert [d["resource"]["project"] for d in detail[:3]] == [
            "(total)",
            "(used_now)",
            "(used_max)",
        ]
        assert c.get("/v2.1/os-hosts/nowhere").status_code == 404
        assert (
            c.put(
                f"/v2.1/os-hosts/{compute_host['host_name']}", json={"status": "bogus"}
            ).status_code
            == 400
        )
        assert c.get(f"/v2.1/os-hosts/{compute_host['host_name']}/reboot").status_code == 501
        assert (
            c.get("/v2.1/os-hosts", headers={"OpenStack-API-Version": "compute 2.43"}).status_code
            == 404
        )
    with compute(cloud, demo_token) as c:
        assert c.get("/v2.1/os-hosts").status_code == 403


def test_images_and_their_metadata_through_compute(
    cloud: CloudRunner,
    demo_token: str,
    image: str,  # noqa: F811
):
    with compute(cloud, demo_token) as c:
        listed = c.get("/v2.1/images", params={"status": "ACTIVE"}).json()["images"]
        assert image in [i["id"] for i in listed]
        one = c.get("/v2.1/images/detail", params={"limit": 1}).json()
        assert len(one["images"]) == 1 and one["images_links"][0]["rel"] == "next"
        shown = c.get(f"/v2.1/images/{image}").json()["image"]
        assert shown["status"] == "ACTIVE" and shown["progress"] == 100
        assert c.get(f"/v2.1/images/{uuid.uuid4()}").status_code == 404
    with compute(cloud, cloud.token("admin")) as c:
        meta = f"/v2.1/images/{image}/metadata"
        assert (
            c.post(meta, json={"metadata": {"color": "blue"}}).json()["metadata"]["color"] == "blue"
        )
        assert c.put(f"{meta}/color", json={"meta": {"color": "red"}}).json() == {
            "meta": {"color": "red"}
        }
        assert c.put(f"{meta}/color", json={"meta": {"other": "x"}}).status_code == 400
        assert c.get(f"{meta}/color").json() == {"meta": {"color": "red"}}
        assert c.delete(f"{meta}/color").status_code == 204
        assert c.get(f"{meta}/color").status_code == 404
        assert c.get(meta, headers={"OpenStack-API-Version": "compute 2.39"}).status_code == 404


def test_volumes_and_networks_through_compute(cloud: CloudRunner, demo_token: str):
    with compute(cloud, demo_token) as c:
        for size in ("#$%", "", "0"):
            assert c.post("/v2.1/os-volumes", json={"volume": {"size": size}}).status_code == 400
        r = c.post("/v2.1/os-volumes", json={"volume": {"size": 1, "display_name": "v"}})
        assert r.status_code == 200, r.text
        volume = r.json()["volume"]
        assert volume["attachments"] == [{}] and volume["displayName"] == "v"
        listed = c.get("/v2.1/os-volumes/detail").json()["volumes"]
        assert volume["id"] in [v["id"] for v in listed]
        for _ in range(100):
            if c.get(f"/v2.1/os-volumes/{volume['id']}").json()["volume"]["status"] == "available":
                break
            time.sleep(0.1)
        assert c.delete(f"/v2.1/os-volumes/{volume['id']}").status_code == 202
        assert c.delete(f"/v2.1/os-volumes/{uuid.uuid4()}").status_code == 404
        networks = c.get("/v2.1/os-tenant-networks").json()["networks"]
        private = next(n for n in networks if n["label"] == "private")
        assert private["cidr"]
        shown = c.get(f"/v2.1/os-networks/{private['id']}").json()["network"]
        assert shown["label"] == "private" and shown["cidr"] == private["cidr"]
        assert c.post("/v2.1/os-tenant-networks", json={}).status_code == 410


def test_usage_report_counts_the_servers_of_a_project(
    cloud: CloudRunner, admin_token: str, demo_token: str, server: dict
):
    day = 24 * 3600
    now = time.time()

    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))

    period = {"start": stamp(now - day), "end": stamp(now + day)}
    with compute(cloud, demo_token) as c:
        project = c.get(f"/v2.1/servers/{server['id']}").json()["server"]["tenant_id"]
        usage = c.get(f"/v2.1/os-simple-tenant-usage/{project}", params=period).json()
        usage = usage["tenant_usage"]
        assert server["id"] in [u["instance_id"] for u in usage["server_usages"]]
        assert usage["total_hours"] > 0 and usage["total_vcpus_usage"] > 0
        # only admins list every project's usage
        assert c.get("/v2.1/os-simple-tenant-usage", params=period).status_code == 403
        reversed_period = {"start": period["end"], "end": period["start"]}
        r = c.get(f"/v2.1/os-simple-tenant-usage/{project}", params=reversed_period)
        assert r.status_code == 400
    with compute(cloud, admin_token) as c:
        listed = c.get("/v2.1/os-simple-tenant-usage", params={**period, "detailed": "1"})
        assert project in [u["tenant_id"] for u in listed.json()["tenant_usages"]]


def test_instance_usage_audit_log_reports_hosts_not_run(
    cloud: CloudRunner, admin_token: str, demo_token: str
):
    with compute(cloud, admin_token) as c:
        log = c.get("/v2.1/os-instance_usage_audit_log").json()["instance_usage_audit_logs"]
        assert log["num_hosts"] == log["num_hosts_not_run"] >= 1 and log["log"] == {}
        shown = c.get("/v2.1/os-instance_usage_audit_log/2026-01-15 10:00:00").json()
        period = shown["instance_usage_audit_log"]
        assert (period["period_beginning"], period["period_ending"]) == (
            "2025-12-01 00:00:00",
            "2026-01-01 00:00:00",
        )
        assert c.get("/v2.1/os-instance_usage_audit_log/invalid_time").status_code == 400
    with compute(cloud, demo_token) as c:
        assert c.get("/v2.1/os-instance_usage_audit_log").status_code == 403


def test_a_port_going_active_tells_its_servers_host_at_once(cloud: CloudRunner, server: dict):
    """Neutron's network-vif-plugged: once the agent has wired a server's port, the
    server's host is told through os-server-external-events, where a build or an
    interface attach waits for it."""
    host = cloud.openstack("server", "show", server["id"], "-f", "json")["OS-EXT-SRV-ATTR:host"]
    manager = next(m for m in cloud.cloud.compute.managers if m.host == host)
    network = cloud.openstack("network", "create", _name("plugged"), "-f", "json")
    port = cloud.openstack(
        "port", "create", "--network", network["id"], "--device-owner", "compute:nova",
        "--device", server["id"], _name("p"), "-f", "json",
    )  # fmt: skip
    assert port["status"] == "DOWN"
    waiting = contextlib.ExitStack()

    async def expect() -> asyncio.Future:
        return waiting.enter_context(manager.network.plugged.expect([port["id"]]))[port["id"]]

    async def done() -> None:
        waiting.close()

    plugged = cloud.run_async(expect())
    try:
        # Bound to the host of the cloud's network agent, which wires it and reports it up.
        cloud.openstack("port", "set", "--host", cloud.cloud.network.agent.host, port["id"])
        cloud.run_async(asyncio.wait_for(asyncio.shield(plugged), 20))
    finally:
        cloud.run_async(done())
    assert cloud.openstack("port", "show", port["id"], "-f", "json")["status"] == "ACTIVE"
    cloud.openstack("port", "delete", port["id"])
    cloud.openstack("network", "delete", network["id"])
