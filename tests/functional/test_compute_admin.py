"""What an operator looks at: compute services, hypervisors and availability zones, with
the openstack CLI and openstacksdk; members are refused."""

from __future__ import annotations

import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute

BINARY = "nova-compute"


@pytest.fixture(scope="module")
def compute_host(cloud: CloudRunner) -> str:
    [service] = cloud.openstack("compute", "service", "list", "--service", BINARY, "-f", "json")
    return service["Host"]


def test_compute_service_list_shows_the_host_up_and_enabled(cloud: CloudRunner, compute_host):
    services = cloud.openstack("compute", "service", "list", "--long", "-f", "json")
    [service] = [s for s in services if s["Binary"] == BINARY]
    assert service["Host"] == compute_host and service["Zone"] == "nova"
    assert service["Status"] == "enabled" and service["State"] == "up"
    assert service["Forced Down"] is False


def test_disabling_a_compute_service_with_a_reason(cloud: CloudRunner, compute_host):
    cloud.openstack(
        "compute", "service", "set", "--disable", "--disable-reason", "maintenance",
        compute_host, BINARY,
    )  # fmt: skip
    try:
        [service] = cloud.openstack(
            "compute", "service", "list", "--service", BINARY, "--long", "-f", "json"
        )
        assert service["Status"] == "disabled"
        assert service["Disabled Reason"] == "maintenance"
        zones = cloud.openstack("availability", "zone", "list", "--compute", "-f", "json")
        assert {"Zone Name": "nova", "Zone Status": "not available"} in [
            {k: z[k] for k in ("Zone Name", "Zone Status")} for z in zones
        ]
    finally:
        cloud.openstack("compute", "service", "set", "--enable", compute_host, BINARY)
    [service] = cloud.openstack("compute", "service", "list", "--service", BINARY, "-f", "json")
    assert service["Status"] == "enabled"


def test_service_update_api_by_microversion(cloud: CloudRunner, admin_token, compute_host):
    with compute(cloud, admin_token, "2.53") as api, compute(cloud, admin_token) as old:
        [service] = api.get("/os-services", params={"binary": BINARY}).json()["services"]
        sid = service["id"]
        assert len(sid) == 36 and service["forced_down"] is False
        reason_only = api.put(f"/os-services/{sid}", json={"disabled_reason": "why"})
        assert reason_only.status_code == 400
        nothing = api.put(f"/os-services/{sid}", json={})
        assert nothing.status_code == 400
        assert api.put("/os-services/not-a-uuid", json={"status": "enabled"}).status_code == 400
        missing = api.put(
            "/os-services/00000000-0000-0000-0000-000000000000", json={"status": "enabled"}
        )
        assert missing.status_code == 404 and "itemNotFound" in missing.json()

        [legacy] = old.get("/os-services", params={"binary": BINARY}).json()["services"]
        assert isinstance(legacy["id"], int) and "forced_down" not in legacy
        body = {"host": compute_host, "binary": BINARY}
        disabled = old.put("/os-services/disable", json=body).json()
        assert disabled == {
            "service": {"host": compute_host, "binary": BINARY, "status": "disabled"}
        }
        enabled = old.put("/os-services/enable", json=body).json()
        assert enabled["service"]["status"] == "enabled"


def test_hypervisor_list_show_and_stats(cloud: CloudRunner, compute_host):
    [hypervisor] = cloud.openstack("hypervisor", "list", "-f", "json")
    assert hypervisor["State"] == "up" and hypervisor["Hypervisor Type"] == "fake"
    # The usage fields and /statistics are gone from 2.88 (tested in
    # test_compute_microversions_2_8x); the CLI asks for 2.87 to see them.
    pre_288 = ("--os-compute-api-version", "2.87")
    shown = cloud.openstack("hypervisor", "show", *pre_288, hypervisor["ID"], "-f", "json")
    assert shown["service_host"] == compute_host and shown["status"] == "enabled"
    assert shown["vcpus"] > 0 and shown["memory_mb"] > 0
    by_name = cloud.openstack("hypervisor", "show", hypervisor["Hypervisor Hostname"], "-f", "json")
    assert by_name["id"] == hypervisor["ID"]
    stats = cloud.openstack("hypervisor", "stats", "show", *pre_288, "-f", "json")
    assert stats["count"] == 1 and stats["vcpus"] == shown["vcpus"]
    assert stats["free_ram_mb"] == stats["memory_mb"] - stats["memory_mb_used"]


def test_hypervisor_api_details(cloud: CloudRunner, admin_token):
    with compute(cloud, admin_token, "2.53") as api, compute(cloud, admin_token) as old:
        [hyp] = api.get("/os-hypervisors/detail", params={"with_servers": "true"}).json()[
            "hypervisors"
        ]
        assert isinstance(hyp["cpu_info"], dict) and len(hyp["service"]["id"]) == 36
        assert api.get("/os-hypervisors/1").status_code == 400
        unknown = api.get("/os-hypervisors/00000000-0000-0000-0000-000000000000")
        assert unknown.status_code == 404
        pattern = api.get("/os-hypervisors", params={"hypervisor_hostname_pattern": "zzz-none"})
        assert pattern.status_code == 404
        [legacy] = old.get("/os-hypervisors/detail").json()["hypervisors"]
        assert isinstance(legacy["id"], int) and isinstance(legacy["cpu_info"], str)
        name = legacy["hypervisor_hostname"]
        found = old.get(f"/os-hypervisors/{name[:3]}/search").json()["hypervisors"]
        assert [h["id"] for h in found] == [legacy["id"]]


def test_availability_zones_for_users_and_admins(cloud: CloudRunner, compute_host):
    zones = cloud.openstack("availability", "zone", "list", "--compute", "-f", "json")
    assert {"Zone Name": "nova", "Zone Status": "available"} in [
        {k: z[k] for k in ("Zone Name", "Zone Status")} for z in zones
    ]
    detailed = cloud.openstack("availability", "zone", "list", "--compute", "--long", "-f", "json")
    assert any(z["Host Name"] == compute_host and z["Service Name"] == BINARY for z in detailed)
    member = cloud.openstack(
        "availability", "zone", "list", "--compute", "-f", "json", cloud="cumulo-demo"
    )
    assert [z["Zone Name"] for z in member] == ["nova"]


def test_members_may_not_see_services_or_hypervisors(cloud: CloudRunner):
    for args in (("compute", "service", "list"), ("hypervisor", "list")):
        result = cloud.openstack(*args, cloud="cumulo-demo", check=False)
        assert result.returncode != 0 and "403" in result.stderr


# The SDK warns about the hypervisor fields Nova drops at 2.88 as it reads them.
@pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedFieldWarning")
def test_openstacksdk_lists_services_and_hypervisors(cloud: CloudRunner, compute_host):
    conn = cloud.sdk()
    assert compute_host in {s.host for s in conn.compute.services()}
    [hypervisor] = list(conn.compute.hypervisors(details=True))
    assert hypervisor.state == "up"
    assert conn.compute.get_hypervisor(hypervisor.id).name == hypervisor.name


def test_hypervisor_uptime_is_the_hosts(cloud: CloudRunner, admin_token):
    with compute(cloud, admin_token) as api:
        [hyp] = api.get("/os-hypervisors").json()["hypervisors"]
        shown = api.get(f"/os-hypervisors/{hyp['id']}/uptime")
        assert shown.status_code == 200
        body = shown.json()["hypervisor"]
        assert body["hypervisor_hostname"] == hyp["hypervisor_hostname"]
        assert " up " in body["uptime"] and "load average:" in body["uptime"]
        assert api.get("/os-hypervisors/999/uptime").status_code == 404
