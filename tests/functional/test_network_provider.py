"""Provider networks as an admin makes them with the `openstack` CLI, checked and
allocated as Neutron's ML2 type drivers do: flat networks on the configured physical
networks (one each), VLANs from `network_vlan_ranges` (each id once per physical
network, tenant networks allocated from the ranges), the NeutronError answers for
everything else, and no segment changed after creation."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    state_dir: Path = tmp_path_factory.mktemp("cumulo-provider")
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.network.flat_networks = ["public", "physnet1"]
    # physnet1: 2 ids for tenants; physnet2: admins' VLANs only.
    config.network.network_vlan_ranges = ["physnet1:100:101", "physnet2"]
    config.network.tenant_network_types = ["vlan"]
    write_config(state_dir, config)
    runner = CloudRunner(state_dir)
    try:
        yield runner.start()
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def admin(cloud: CloudRunner):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.network}",
        headers={"X-Auth-Token": cloud.token("admin")},
        timeout=30,
    ) as client:
        yield client


def name() -> str:
    return f"prov-{uuid.uuid4().hex[:8]}"


def create(cloud: CloudRunner, *args: str) -> dict:
    return cloud.openstack("network", "create", *args, name(), "-f", "json")


def refused(cloud: CloudRunner, *args: str) -> str:
    proc = cloud.openstack("network", "create", *args, name(), check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["NeutronError"]
    assert err["type"] == kind, err
    return err["message"]


def test_flat_and_vlan_provider_networks_from_the_cli(cloud: CloudRunner):
    flat = create(cloud, "--provider-network-type", "flat", "--provider-physical-network",
                  "physnet1")  # fmt: skip
    assert (flat["provider:network_type"], flat["provider:physical_network"]) == (
        "flat",
        "physnet1",
    )
    assert flat["provider:segmentation_id"] is None
    vlan = create(cloud, "--provider-network-type", "vlan", "--provider-physical-network",
                  "physnet2", "--provider-segment", "3000")  # fmt: skip
    assert vlan["provider:segmentation_id"] == 3000
    # One flat network per physical network; a VLAN id once per physical network.
    assert "is in use" in refused(cloud, "--provider-network-type", "flat",
                                  "--provider-physical-network", "physnet1")  # fmt: skip
    assert "is in use" in refused(cloud, "--provider-network-type", "vlan",
                                  "--provider-physical-network", "physnet2",
                                  "--provider-segment", "3000")  # fmt: skip
    # Deleted, they are free again.
    cloud.openstack("network", "delete", flat["id"], vlan["id"])
    again = create(cloud, "--provider-network-type", "vlan", "--provider-physical-network",
                   "physnet2", "--provider-segment", "3000")  # fmt: skip
    cloud.openstack("network", "delete", again["id"])


def test_the_ml2_rules_answer_400_409_503(cloud: CloudRunner, admin: httpx.Client):
    def post(**provider) -> httpx.Response:
        attrs = {f"provider:{k}": v for k, v in provider.items()}
        return admin.post("/v2.0/networks", json={"network": {"name": name(), **attrs}})

    before = len(admin.get("/v2.0/networks").json()["networks"])
    cases = [
        ({"network_type": "gre"}, "network_type value 'gre' not supported"),
        ({"network_type": "flat"}, "physical_network required for flat provider network"),
        ({"network_type": "flat", "physical_network": "physnet9"},
         "physical_network 'physnet9' unknown for flat provider network"),
        ({"network_type": "flat", "physical_network": "physnet1", "segmentation_id": 5},
         "segmentation_id prohibited for flat provider network"),
        ({"network_type": "vlan", "segmentation_id": 5},
         "segmentation_id requires physical_network for VLAN provider network"),
        ({"network_type": "vlan", "physical_network": "physnet9", "segmentation_id": 5},
         "physical_network 'physnet9' unknown for VLAN provider network"),
        ({"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 4095},
         "segmentation_id out of range (1 through 4094)"),
        ({"network_type": "vxlan", "physical_network": "physnet1"},
         "provider:physical_network specified for VXLAN network"),
        ({"physical_network": "physnet1"}, "provider:network_type required"),
    ]  # fmt: skip
    for provider, message in cases:
        assert error(post(**provider), 400, "InvalidInput") == message
    # Nothing asked for (nulls): a tenant network, allocated from the ranges.
    nulls = post(network_type=None, physical_network=None, segmentation_id=None)
    assert nulls.status_code == 201, nulls.text
    assert nulls.json()["network"]["provider:network_type"] == "vlan"
    admin.delete(f"/v2.0/networks/{nulls.json()['network']['id']}")
    # physnet2 has no tenant range: nothing to allocate there.
    error(post(network_type="vlan", physical_network="physnet2"), 503, "NoNetworkAvailable")
    assert len(admin.get("/v2.0/networks").json()["networks"]) == before

    # A member may not set provider attributes, nor see them.
    with httpx.Client(
        base_url=str(admin.base_url), headers={"X-Auth-Token": cloud.token("demo", project="demo")}
    ) as demo:
        r = demo.post("/v2.0/networks", json={"network": {"provider:network_type": "local"}})
        assert r.status_code == 403, r.text
        mine = demo.post("/v2.0/networks", json={"network": {"name": name()}}).json()["network"]
        assert "provider:network_type" not in mine
        demo.delete(f"/v2.0/networks/{mine['id']}")


def test_tenant_networks_take_vlans_from_the_ranges_until_none_is_left(
    cloud: CloudRunner, admin: httpx.Client
):
    # The demo project's `private` network (made at first start) holds one of the two.
    private = admin.get("/v2.0/networks", params={"name": "private"}).json()["networks"][0]
    assert (private["provider:network_type"], private["provider:physical_network"]) == (
        "vlan",
        "physnet1",
    )
    assert private["provider:segmentation_id"] in (100, 101)
    demo = cloud.openstack("network", "create", name(), "-f", "json", cloud="cumulo-demo")
    shown = admin.get(f"/v2.0/networks/{demo['id']}").json()["network"]
    assert {shown["provider:segmentation_id"], private["provider:segmentation_id"]} == {100, 101}
    proc = cloud.openstack("network", "create", name(), cloud="cumulo-demo", check=False)
    assert proc.returncode != 0 and "No tenant network is available" in proc.stderr
    # Freed by a delete, the id is allocated again.
    cloud.openstack("network", "delete", demo["id"], cloud="cumulo-demo")
    again = cloud.openstack("network", "create", name(), "-f", "json", cloud="cumulo-demo")
    again_shown = admin.get(f"/v2.0/networks/{again['id']}").json()["network"]
    assert again_shown["provider:segmentation_id"] == shown["provider:segmentation_id"]
    cloud.openstack("network", "delete", again["id"], cloud="cumulo-demo")


def test_a_segment_is_not_changed_after_creation(cloud: CloudRunner, admin: httpx.Client):
    net = create(cloud, "--provider-network-type", "vlan", "--provider-physical-network",
                 "physnet2", "--provider-segment", "42")  # fmt: skip
    r = admin.put(f"/v2.0/networks/{net['id']}", json={"network": {"provider:segmentation_id": 43}})
    assert error(r, 400, "InvalidInput") == "Plugin does not support updating provider attributes"
    same = admin.put(
        f"/v2.0/networks/{net['id']}",
        json={"network": {"provider:segmentation_id": 42, "name": "renamed"}},
    )
    assert same.status_code == 200 and same.json()["network"]["name"] == "renamed"
    as_text = admin.put(
        f"/v2.0/networks/{net['id']}", json={"network": {"provider:segmentation_id": "42"}}
    )
    assert as_text.status_code == 200, as_text.text
    assert (
        admin.get(f"/v2.0/networks/{net['id']}").json()["network"]["provider:segmentation_id"] == 42
    )
    cloud.openstack("network", "delete", net["id"])
