"""Host aggregates with the real `openstack` CLI, on a cloud of its own with three
compute hosts (the main one and two fake ones): an aggregate with a zone puts its
hosts in that zone for the scheduler, `availability zone list` and `compute service
list`, and keeps them there when the hosts report; the api-ref's refusals."""

from __future__ import annotations

import subprocess
import time
import uuid

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

    # Its zone cannot change under a running server; another zone cannot take the host.
    changed = cloud.openstack("aggregate", "set", "--zone", "az-other", "fast", check=False)
    assert changed.returncode != 0 and "contain instances" in changed.stderr
    other = cloud.openstack("aggregate", "create", "--zone", "az-slow", "slow", "-f", "json")
    clash = cloud.openstack("aggregate", "add", "host", "slow", "agg-main-fake1", check=False)
    assert clash.returncode != 0 and "409" in clash.stderr and "az-fast" in clash.stderr
    # The host must exist, once per aggregate; an aggregate with hosts is not deleted.
    unknown = cloud.openstack("aggregate", "add", "host", "slow", "no-such-host", check=False)
    assert unknown.returncode != 0 and "404" in unknown.stderr
    again = cloud.openstack("aggregate", "add", "host", "fast", "agg-main-fake1", check=False)
    assert again.returncode != 0 and "409" in again.stderr
    full = cloud.openstack("aggregate", "delete", "fast", check=False)
    assert full.returncode != 0 and "not empty" in full.stderr
    taken = cloud.openstack("aggregate", "create", "fast", check=False)
    assert taken.returncode != 0 and "409" in taken.stderr

    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("aggregate", "remove", "host", "fast", "agg-main-fake1")
    assert _zone_of(cloud, "agg-main-fake1") == "nova"
    missing = cloud.openstack("aggregate", "remove", "host", "fast", "agg-main-fake1", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr
    cloud.openstack("aggregate", "delete", "fast")
    cloud.openstack("aggregate", "delete", str(other["id"]))
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
