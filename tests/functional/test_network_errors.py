"""Bad input to the Network API: the api-ref status, a NeutronError body, nothing half-written."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner


@pytest.fixture
def http(cloud: CloudRunner, admin_token: str):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.network}",
        headers={"X-Auth-Token": admin_token},
        timeout=30,
    ) as client:
        yield client


def _error(r: httpx.Response, status: int, kind: str | None = None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["NeutronError"]
    assert set(err) == {"type", "message", "detail"}
    if kind:
        assert err["type"] == kind, err
    return err["message"]


def _network(http: httpx.Client, cidr: str | None = None) -> tuple[str, str | None]:
    net = http.post("/v2.0/networks", json={"network": {"name": uuid.uuid4().hex}}).json()
    subnet_id = None
    if cidr:
        body = {"subnet": {"network_id": net["network"]["id"], "cidr": cidr, "ip_version": 4}}
        r = http.post("/v2.0/subnets", json=body)
        assert r.status_code == 201, r.text
        subnet_id = r.json()["subnet"]["id"]
    return net["network"]["id"], subnet_id


def test_invalid_cidr_is_400_and_creates_nothing(http: httpx.Client):
    net_id, _ = _network(http)
    for cidr in ("10.0.0.0/33", "not-a-cidr", "10.0.0.5/24"):
        body = {"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4}}
        _error(http.post("/v2.0/subnets", json=body), 400, "InvalidInput")
    assert http.get(f"/v2.0/subnets?network_id={net_id}").json()["subnets"] == []
    assert http.delete(f"/v2.0/networks/{net_id}").status_code == 204


def test_fixed_ip_outside_subnet_or_in_use_is_refused(http: httpx.Client):
    net_id, subnet_id = _network(http, "10.9.0.0/24")
    ok = http.post(
        "/v2.0/ports",
        json={"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.9.0.50"}]}},
    )
    assert ok.status_code == 201
    before = len(http.get(f"/v2.0/ports?network_id={net_id}").json()["ports"])
    outside = {"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.99.0.5"}]}}
    _error(http.post("/v2.0/ports", json=outside), 400, "InvalidIpForNetwork")
    wrong = {
        "port": {
            "network_id": net_id,
            "fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.9.0.255"}],
        }
    }
    _error(http.post("/v2.0/ports", json=wrong), 400, "InvalidIpForSubnet")
    used = {"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.9.0.50"}]}}
    _error(http.post("/v2.0/ports", json=used), 409, "IpAddressAlreadyAllocated")
    assert len(http.get(f"/v2.0/ports?network_id={net_id}").json()["ports"]) == before
    # A network with a port in use cannot be deleted.
    _error(http.delete(f"/v2.0/networks/{net_id}"), 409, "NetworkInUse")
    assert http.delete(f"/v2.0/ports/{ok.json()['port']['id']}").status_code == 204
    assert http.delete(f"/v2.0/networks/{net_id}").status_code == 204


def test_exhausted_pool_is_409_not_500(http: httpx.Client):
    net_id, _ = _network(http, "10.8.0.0/29")  # .2-.6: DHCP takes one, four are left
    ports = [http.post("/v2.0/ports", json={"port": {"network_id": net_id}}) for _ in range(4)]
    assert [p.status_code for p in ports] == [201] * 4
    ips = {p.json()["port"]["fixed_ips"][0]["ip_address"] for p in ports}
    assert len(ips) == 4
    _error(
        http.post("/v2.0/ports", json={"port": {"network_id": net_id}}),
        409,
        "IpAddressGenerationFailure",
    )
    for p in ports:
        http.delete(f"/v2.0/ports/{p.json()['port']['id']}")
    assert http.delete(f"/v2.0/networks/{net_id}").status_code == 204


def test_overlapping_cidrs_on_one_router_are_refused(http: httpx.Client):
    _, sub_a = _network(http, "10.7.0.0/24")
    _, sub_b = _network(http, "10.7.0.0/25")
    router = http.post("/v2.0/routers", json={"router": {"name": "overlap"}}).json()["router"]
    url = f"/v2.0/routers/{router['id']}"
    assert http.put(f"{url}/add_router_interface", json={"subnet_id": sub_a}).status_code == 200
    msg = _error(
        http.put(f"{url}/add_router_interface", json={"subnet_id": sub_b}), 400, "BadRequest"
    )
    assert "overlaps" in msg
    ports = http.get(f"/v2.0/ports?device_id={router['id']}").json()["ports"]
    assert len(ports) == 1
    _error(http.delete(url), 409, "RouterInUse")
    assert http.put(f"{url}/remove_router_interface", json={"subnet_id": sub_a}).status_code == 200
    _error(
        http.put(f"{url}/remove_router_interface", json={"subnet_id": sub_a}),
        404,
        "RouterInterfaceNotFoundForSubnet",
    )
    assert http.delete(url).status_code == 204


def test_security_group_rule_port_range_must_be_ordered(http: httpx.Client):
    sg = http.post("/v2.0/security-groups", json={"security_group": {"name": "ranges"}}).json()
    sg_id = sg["security_group"]["id"]
    rule = {
        "security_group_rule": {
            "security_group_id": sg_id,
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 100,
            "port_range_max": 10,
        }
    }
    _error(http.post("/v2.0/security-group-rules", json=rule), 400, "SecurityGroupInvalidPortRange")
    rule["security_group_rule"]["port_range_max"] = 200
    assert http.post("/v2.0/security-group-rules", json=rule).status_code == 201
    _error(http.post("/v2.0/security-group-rules", json=rule), 409, "SecurityGroupRuleExists")
    shown = http.get(f"/v2.0/security-groups/{sg_id}").json()["security_group"]
    assert len(shown["security_group_rules"]) == 3  # two egress defaults + ours
    assert http.delete(f"/v2.0/security-groups/{sg_id}").status_code == 204


def test_unknown_attribute_and_missing_token(cloud: CloudRunner, http: httpx.Client):
    r = http.post("/v2.0/networks", json={"network": {"name": "x", "colour": "red"}})
    assert "colour" in _error(r, 400)
    r = httpx.get(f"http://127.0.0.1:{cloud.config.ports.network}/v2.0/networks")
    _error(r, 401)
