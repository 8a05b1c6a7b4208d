"""Many clients creating ports at once (the batched hot path): every address handed out
once, the pool's end and the quota answered as the api-ref says, default groups kept."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cumulo.network import ipam_plan
from tests.cloudrunner import CloudRunner


@pytest.fixture
def project(cloud: CloudRunner, admin_token: str) -> str:
    """A fresh project (its own quota and default group), for admin to create ports in."""
    with cloud.http(admin_token) as identity:
        r = identity.post("/v3/projects", json={"project": {"name": f"ports-{uuid.uuid4().hex}"}})
        assert r.status_code == 201, r.text
        return r.json()["project"]["id"]


def _client(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.network}",
        headers={"X-Auth-Token": token},
        timeout=60,
    )


def _network(http: httpx.Client, project: str, cidr: str) -> str:
    body = {"network": {"name": uuid.uuid4().hex, "project_id": project}}
    net_id = http.post("/v2.0/networks", json=body).json()["network"]["id"]
    body = {"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4, "project_id": project}}
    assert http.post("/v2.0/subnets", json=body).status_code == 201
    return net_id


def _create_many(cloud: CloudRunner, token: str, body: dict, count: int) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with _client(cloud, token) as c:
            return c.post("/v2.0/ports", json=body)

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_ports_exhaust_a_small_subnet_without_sharing_an_address(
    cloud: CloudRunner, admin_token: str, project: str
):
    with _client(cloud, admin_token) as http:
        # 10.9.0.0/27: 29 addresses in the pool, one taken by the DHCP port.
        net_id = _network(http, project, "10.9.0.0/27")
        body = {"port": {"network_id": net_id, "project_id": project}}
        results = _create_many(cloud, admin_token, body, 40)

        created = [r.json()["port"] for r in results if r.status_code == 201]
        refused = [r for r in results if r.status_code != 201]
        assert len(created) == 28
        for r in refused:
            assert r.status_code == 409, r.text
            assert r.json()["NeutronError"]["type"] == "IpAddressGenerationFailure"
        addresses = [ip["ip_address"] for p in created for ip in p["fixed_ips"]]
        assert len(addresses) == len(set(addresses)) == 28
        assert "10.9.0.1" not in addresses  # the gateway

        listed = http.get(f"/v2.0/ports?network_id={net_id}").json()["ports"]
        everything = [ip["ip_address"] for p in listed for ip in p["fixed_ips"]]
        assert len(everything) == len(set(everything)) == 29
        # Every port went into its project's default group, the first one included.
        groups = {tuple(p["security_groups"]) for p in created}
        assert len(groups) == 1 and len(next(iter(groups))) == 1
        for p in created:
            assert http.delete(f"/v2.0/ports/{p['id']}").status_code == 204
        assert http.delete(f"/v2.0/networks/{net_id}").status_code == 204


def test_concurrent_ports_stop_exactly_at_the_quota(
    cloud: CloudRunner, admin_token: str, project: str
):
    with _client(cloud, admin_token) as http:
        net_id = _network(http, project, "10.9.1.0/24")
        # The DHCP port counts too: 1 + 11 = 12.
        r = http.put(f"/v2.0/quotas/{project}", json={"quota": {"port": 12}})
        assert r.status_code == 200, r.text
        body = {"port": {"network_id": net_id, "project_id": project}}
        results = _create_many(cloud, admin_token, body, 20)

        assert sum(r.status_code == 201 for r in results) == 11
        for r in results:
            if r.status_code != 201:
                assert r.status_code == 409, r.text
                assert r.json()["NeutronError"]["type"] == "OverQuota"
        listed = http.get(f"/v2.0/ports?network_id={net_id}").json()["ports"]
        assert len(listed) == 12
        for p in listed:
            if p["device_owner"] != "network:dhcp":
                assert http.delete(f"/v2.0/ports/{p['id']}").status_code == 204
        assert http.delete(f"/v2.0/networks/{net_id}").status_code == 204


def test_concurrent_ports_naming_groups_get_exactly_those(
    cloud: CloudRunner, admin_token: str, project: str, monkeypatch: pytest.MonkeyPatch
):
    """A server's port names its groups (Compute resolves `default` to its id): the batch
    writes them; a group the project cannot use is refused as the long way refuses it."""
    batched: list[int] = []
    write_batch = ipam_plan._write_batch

    def counting(session, batch):
        written = write_batch(session, batch)
        batched.append(len(written))
        return written

    monkeypatch.setattr(ipam_plan, "_write_batch", counting)  # the cloud runs in this process
    with _client(cloud, admin_token) as http:
        net_id = _network(http, project, "10.9.2.0/24")
        web, db = (
            http.post(
                "/v2.0/security-groups",
                json={"security_group": {"name": name, "project_id": project}},
            ).json()["security_group"]["id"]
            for name in ("web", "db")
        )
        body = {"port": {"network_id": net_id, "project_id": project, "security_groups": [web, db]}}
        results = _create_many(cloud, admin_token, body, 12)
        assert [r.status_code for r in results] == [201] * 12, results[0].text
        assert sum(batched) == 12  # every one of them on the batched path
        for r in results:
            assert sorted(r.json()["port"]["security_groups"]) == sorted([web, db])
            shown = http.get(f"/v2.0/ports/{r.json()['port']['id']}").json()["port"]
            assert sorted(shown["security_groups"]) == sorted([web, db])

        # A group that does not exist, alone or beside one that does.
        member_port = {"network_id": net_id, "project_id": project}
        for groups in ([str(uuid.uuid4())], [web, str(uuid.uuid4())]):
            r = http.post("/v2.0/ports", json={"port": {**member_port, "security_groups": groups}})
            assert r.status_code == 404, r.text
            assert r.json()["NeutronError"]["type"] == "SecurityGroupNotFound"
        # Port security off and a group named: Neutron's 400, whichever path it took.
        r = http.post(
            "/v2.0/ports",
            json={
                "port": {**member_port, "port_security_enabled": False, "security_groups": [web]}
            },
        )
        assert r.status_code == 400, r.text
        listed = http.get(f"/v2.0/ports?network_id={net_id}").json()["ports"]
        assert len(listed) == 13  # the 12 and the DHCP port: nothing half-made
        for p in listed:
            if p["device_owner"] != "network:dhcp":
                assert http.delete(f"/v2.0/ports/{p['id']}").status_code == 204
        assert http.delete(f"/v2.0/networks/{net_id}").status_code == 204
        for group in (web, db):
            assert http.delete(f"/v2.0/security-groups/{group}").status_code == 204
