"""The Compute API's shape as Tempest and the api-ref give it: version discovery, the
keys of each server response per microversion, list filters answered as Nova does."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_servers import boot, demo, image, wait_status  # noqa: F401

# The keys update and rebuild answered before 2.75 (then they became show's body).
CORE_KEYS = {
    "id",
    "name",
    "status",
    "tenant_id",
    "user_id",
    "metadata",
    "hostId",
    "image",
    "flavor",
    "created",
    "updated",
    "addresses",
    "accessIPv4",
    "accessIPv6",
    "links",
    "OS-DCF:diskConfig",
    "progress",
}


def compute(cloud: CloudRunner, token: str, microversion: str = "2.1") -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.compute}",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": f"compute {microversion}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def server(cloud: CloudRunner, image: str) -> str:  # noqa: F811 - the image fixture
    return boot(cloud, image, f"shape-{uuid.uuid4().hex[:8]}", "-f", "json")["id"]


@pytest.fixture(scope="module")
def demo_token(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


def test_version_list_names_v2_0_first_and_each_document_is_reachable(cloud: CloudRunner):
    base = f"http://127.0.0.1:{cloud.config.ports.compute}"
    versions = httpx.get(f"{base}/").json()["versions"]
    assert [v["id"] for v in versions] == ["v2.0", "v2.1"]
    for listed in versions:
        [self_link] = [link for link in listed["links"] if link["rel"] == "self"]
        doc = httpx.get(self_link["href"]).json()["version"]
        assert doc["id"] == listed["id"]
        assert [link for link in doc["links"] if link["rel"] == "self"] == [self_link]
        assert doc["media-types"][0]["base"] == "application/json"


def test_legacy_v2_endpoint_answers_as_2_1(cloud: CloudRunner, demo_token: str, server: str):
    with compute(cloud, demo_token) as c:
        r = c.get("/v2/servers", headers={"OpenStack-API-Version": "compute 2.79"})
    assert r.status_code == 200
    assert server in [s["id"] for s in r.json()["servers"]]
    assert "openstack-api-version" not in r.headers


@pytest.mark.parametrize(
    "microversion, extra",
    [
        ("2.1", set()),
        ("2.9", {"locked"}),
        ("2.26", {"locked", "description", "tags"}),
        ("2.57", {"locked", "description", "tags", "key_name", "user_data"}),
        (
            "2.73",
            {
                "locked",
                "description",
                "tags",
                "key_name",
                "user_data",
                "trusted_image_certificates",
                "server_groups",
                "locked_reason",
            },
        ),
    ],
)
def test_rebuild_answers_only_the_keys_of_its_microversion(
    cloud: CloudRunner,
    demo_token: str,
    image: str,  # noqa: F811
    server: str,
    microversion: str,
    extra: set,  # noqa: F811
):
    with compute(cloud, demo_token, microversion) as c:
        r = c.post(f"/v2.1/servers/{server}/action", json={"rebuild": {"imageRef": image}})
        assert r.status_code == 202, r.text
        body = r.json()["server"]
        assert set(body) == CORE_KEYS | extra | {"adminPass"}
        # fixed addresses without the OS-EXT-IPS extension keys
        assert all(set(a) == {"version", "addr"} for n in body["addresses"].values() for a in n)
        r = c.put(f"/v2.1/servers/{server}", json={"server": {"name": body["name"]}})
        assert set(r.json()["server"]) == CORE_KEYS | (extra - {"key_name", "user_data"})
        _wait_active(c, server)


def test_from_2_75_update_and_rebuild_answer_the_show_body(
    cloud: CloudRunner,
    demo_token: str,
    image: str,  # noqa: F811
    server: str,
):
    with compute(cloud, demo_token, "2.75") as c:
        shown = c.get(f"/v2.1/servers/{server}").json()["server"]
        updated = c.put(f"/v2.1/servers/{server}", json={"server": {"name": shown["name"]}})
        assert set(updated.json()["server"]) == set(shown)
        rebuilt = c.post(f"/v2.1/servers/{server}/action", json={"rebuild": {"imageRef": image}})
        assert set(rebuilt.json()["server"]) == set(shown) | {"adminPass", "user_data"}
        assert "server_groups" in shown and "server_groups" not in _detail(c, server)
        _wait_active(c, server)


def _detail(c: httpx.Client, server: str) -> dict:
    return next(s for s in c.get("/v2.1/servers/detail").json()["servers"] if s["id"] == server)


def _wait_active(c: httpx.Client, server: str) -> None:
    for _ in range(200):
        body = c.get(f"/v2.1/servers/{server}").json()["server"]
        if body["status"] == "ACTIVE" and body.get("OS-EXT-STS:task_state") is None:
            return
    raise AssertionError(f"{server} is {body['status']}")


def test_status_filter_as_nova(cloud: CloudRunner, demo_token: str, server: str):
    with compute(cloud, demo_token) as c:
        # an unknown status lists nothing before 2.38...
        assert c.get("/v2.1/servers", params={"status": "bogus"}).json() == {"servers": []}
        # ...and is refused from 2.38
        r = c.get(
            "/v2.1/servers",
            params={"status": "bogus"},
            headers={"OpenStack-API-Version": "compute 2.38"},
        )
        assert r.status_code == 400 and r.json()["badRequest"]["message"] == "Invalid status value"
        # several statuses at once, matched case-insensitively
        listed = c.get("/v2.1/servers?status=shutoff&status=active").json()["servers"]
        assert server in [s["id"] for s in listed]
        shutoff = c.get("/v2.1/servers?status=SHUTOFF").json()["servers"]
        assert server not in [s["id"] for s in shutoff]
        # only admins list deleted servers
        assert c.get("/v2.1/servers?status=deleted").status_code == 403


def test_rebuild_of_a_stopped_server_leaves_it_stopped(cloud: CloudRunner, image: str):  # noqa: F811
    name = f"stopped-{uuid.uuid4().hex[:8]}"
    server = boot(cloud, image, name, "-f", "json")
    demo(cloud, "server", "stop", name)
    wait_status(cloud, name, "SHUTOFF")
    demo(cloud, "server", "rebuild", "--image", image, "--wait", name)
    assert wait_status(cloud, name, "SHUTOFF")["id"] == server["id"]
    token = cloud.token("demo", project="demo")
    with compute(cloud, token) as c:
        action = f"/v2.1/servers/{server['id']}/action"
        demo(cloud, "server", "start", name)
        wait_status(cloud, name, "ACTIVE")
        # Nova's console tail: the last pieces between newlines, a trailing one counted
        output = c.post(action, json={"os-getConsoleOutput": {"length": 3}}).json()["output"]
        assert len(output.split("\n")) == 3
