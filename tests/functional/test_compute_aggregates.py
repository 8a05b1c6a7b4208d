"""Host aggregates with the real `openstack` CLI, on a cloud of its own with three
compute hosts (the main one and two fake ones): an aggregate with a zone puts its
hosts in that zone for the scheduler, `availability zone list` and `compute service
list`, and keeps them there when the hosts report; the api-ref's refusals."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir


@pytest.fixture(scope="module")
def three_hosts(tmp_path_factory):
    state = tmp_path_factory.mktemp("aggregates")
    configure_state_dir(state)
    config = load_config(state)
    config.compute.host = "agg-main"
    config.compute.fake_hosts = 2
    config.compute.report_interval = 0.5  # reports must not undo an aggregate's zone
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _zone_of(cloud: CloudRunner, host: str) -> str:
    services = cloud.openstack("compute", "service", "list", "-f", "json")
    return next(s["Zone"] for s in services if s["Host"] == host)


def test_an_aggregate_zone_moves_its_hosts_and_the_scheduler_follows(three_hosts, tmp_path):
    cloud = three_hosts
    agg = cloud.openstack("aggregate", "create", "--zone", "az-fast", "fast", "-f", "json")
    assert agg["availability_zone"] == "az-fast" and agg["name"] == "fast"
    shown = cloud.openstack(
        "aggregate", "add", "host", "fast", "agg-main-fake1", "-f", "json",
    )  # fmt: skip
    assert shown["hosts"] == ["agg-main-fake1"]
    cloud.openstack(
        "aggregate", "set", "--property", "ssd=true", "fast",
    )  # fmt: skip
    shown = cloud.openstack("aggregate", "show", "fast", "-f", "json")
    assert shown["properties"] == {"ssd": "true"}
    assert _zone_of(cloud, "agg-main-fake1") == "az-fast"
    time.sleep(1.5)  # a few reports from the host: it stays in the aggregate's zone
    assert _zone_of(cloud, "agg-main-fake1") == "az-fast"
    zones = {z["Zone Name"] for z in cloud.openstack("availability", "zone", "list", "-f", "json")}
    assert {"az-fast", "nova"} <= zones

    # A server asked into the zone lands on the aggregate's host.
    path = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)
    image = cloud.openstack(
        "image", "create", _name("img"), "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    server = cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.nano", "--nic",
        "none", "--availability-zone", "az-fast", "--wait", _name("in-zone"), "-f", "json",
    )  # fmt: skip
    assert server["OS-EXT-SRV-ATTR:host"] == "agg-main-fake1"
    assert server["OS-EXT-AZ:availability_zone"] == "az-fast"

    # The api-ref's refusals (over HTTP: each CLI run costs a second or two).
    base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/os-aggregates"
    with cloud.http(cloud.token()) as client:

        def action(agg_id, body) -> httpx.Response:
            return client.post(f"{base}/{agg_id}/action", json=body)

        # Its zone cannot change under a running server; another zone cannot take the host.
        changed = client.put(f"{base}/{agg['id']}", json={"aggregate": {"availability_zone": "b"}})
        assert changed.status_code == 400 and "contain instances" in changed.text
        other = client.post(base, json={"aggregate": {"name": "slow", "availability_zone": "s"}})
        other_id = other.json()["aggregate"]["id"]
        clash = action(other_id, {"add_host": {"host": "agg-main-fake1"}})
        assert (
            clash.status_code == 409 and "az-fast" in clash.json()["conflictingRequest"]["message"]
        )
        # The host must exist, once per aggregate; an aggregate with hosts is not deleted.
        assert action(other_id, {"add_host": {"host": "no-such-host"}}).status_code == 404
        assert action(agg["id"], {"add_host": {"host": "agg-main-fake1"}}).status_code == 409
        full = client.delete(f"{base}/{agg['id']}")
        assert full.status_code == 400 and "not empty" in full.json()["badRequest"]["message"]
        assert client.post(base, json={"aggregate": {"name": "fast"}}).status_code == 409

    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("aggregate", "remove", "host", "fast", "agg-main-fake1")
    assert _zone_of(cloud, "agg-main-fake1") == "nova"
    with cloud.http(cloud.token()) as client:
        missing = client.post(
            f"{base}/{agg['id']}/action", json={"remove_host": {"host": "agg-main-fake1"}}
        )
        assert missing.status_code == 404
        assert client.delete(f"{base}/{other_id}").status_code == 200
    cloud.openstack("aggregate", "delete", "fast")
    assert cloud.openstack("aggregate", "list", "-f", "json") == []
    cloud.openstack("image", "delete", image["id"])


def test_aggregates_are_for_admins_and_show_their_uuid_from_2_41(three_hosts):
    cloud = three_hosts
    refused = cloud.openstack("aggregate", "list", cloud="cumulo-demo", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    created = cloud.openstack("aggregate", "create", _name("plain"), "-f", "json")
    base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/os-aggregates"
    with cloud.http(cloud.token()) as client:
        old = client.get(f"{base}/{created['id']}").json()["aggregate"]
        assert "uuid" not in old and old["availability_zone"] is None
        new = client.get(
            f"{base}/{created['id']}", headers={"OpenStack-API-Version": "compute 2.41"}
        ).json()["aggregate"]
        assert len(new["uuid"]) == 36
        assert client.get(f"{base}/999999").status_code == 404
        bad = client.post(base, json={"aggregate": {"name": ""}})
        assert bad.status_code == 400, bad.text
        colon = client.post(base, json={"aggregate": {"name": "x", "availability_zone": "a:b"}})
        assert colon.status_code == 400, colon.text
        assert client.delete(f"{base}/{created['id']}").status_code == 200
