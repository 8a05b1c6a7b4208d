"""Compute quotas and limits as an admin sets them and a member sees them."""

from __future__ import annotations

import uuid

import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute


@pytest.fixture(scope="module")
def project(cloud: CloudRunner):
    """A project of its own with the demo user as a member (each test leaves its quotas at
    the defaults)."""
    name = f"quota-{uuid.uuid4().hex[:8]}"
    created = cloud.openstack("project", "create", name, "-f", "json")
    cloud.openstack("role", "add", "--project", name, "--user", "demo", "member")
    yield created
    cloud.openstack("project", "delete", name)


def test_admin_sets_instances_quota_with_the_cli(cloud: CloudRunner, project):
    before = cloud.openstack("quota", "show", "--compute", project["id"], "-f", "json")
    values = {row["Resource"]: row["Limit"] for row in before}
    assert values["instances"] == 10 and values["cores"] == 20 and values["ram"] == 51200
    cloud.openstack("quota", "set", "--instances", "5", project["name"])
    after = cloud.openstack("quota", "show", "--compute", project["id"], "-f", "json")
    assert {row["Resource"]: row["Limit"] for row in after}["instances"] == 5
    cloud.openstack("quota", "delete", "--compute", project["id"])
    reverted = cloud.openstack("quota", "show", "--compute", project["id"], "-f", "json")
    assert {row["Resource"]: row["Limit"] for row in reverted}["instances"] == 10


def test_quota_show_of_all_services(cloud: CloudRunner):
    quotas = cloud.openstack("quota", "show", "-f", "json")
    resources = {row["Resource"] for row in quotas}
    assert {"instances", "cores", "ram", "key-pairs", "server-groups"} <= resources


def test_member_sees_limits_and_may_not_change_quotas(cloud: CloudRunner, project):
    limits = cloud.openstack("limits", "show", "--absolute", "-f", "json", cloud="cumulo-demo")
    absolute = {row["Name"]: row["Value"] for row in limits}
    assert absolute["max_total_instances"] == 10 and absolute["total_instances_used"] >= 0
    assert absolute["max_total_keypairs"] == 100 and absolute["max_server_groups"] == 10
    refused = cloud.openstack(
        "quota", "set", "--instances", "50", project["id"], cloud="cumulo-demo", check=False
    )
    assert refused.returncode != 0 and "403" in refused.stderr


def test_quota_api_details_and_microversions(cloud: CloudRunner, admin_token, project):
    pid = project["id"]
    with compute(cloud, admin_token) as old, compute(cloud, admin_token, "2.57") as new:
        legacy = old.get(f"/os-quota-sets/{pid}").json()["quota_set"]
        assert legacy["id"] == pid and legacy["floating_ips"] == -1
        assert legacy["injected_files"] == 5
        modern = new.get(f"/os-quota-sets/{pid}").json()["quota_set"]
        assert "floating_ips" not in modern and "injected_files" not in modern
        defaults = new.get(f"/os-quota-sets/{pid}/defaults").json()["quota_set"]
        assert defaults["instances"] == 10
        detail = new.get(f"/os-quota-sets/{pid}/detail").json()["quota_set"]
        assert detail["instances"] == {"limit": 10, "in_use": 0, "reserved": 0}

        updated = new.put(f"/os-quota-sets/{pid}", json={"quota_set": {"cores": "8"}})
        assert updated.json()["quota_set"]["cores"] == 8 and "id" not in updated.json()["quota_set"]
        unknown = new.put(f"/os-quota-sets/{pid}", json={"quota_set": {"floating_ips": 1}})
        assert unknown.status_code == 400
        negative = new.put(f"/os-quota-sets/{pid}", json={"quota_set": {"ram": -5}})
        assert negative.status_code == 400 and "badRequest" in negative.json()
        assert new.delete(f"/os-quota-sets/{pid}").status_code == 202
        assert new.get(f"/os-quota-sets/{pid}").json()["quota_set"]["cores"] == 20


def test_limits_follow_the_microversion(cloud: CloudRunner, admin_token):
    with compute(cloud, admin_token) as old, compute(cloud, admin_token, "2.57") as new:
        legacy = old.get("/limits").json()["limits"]
        modern = new.get("/limits").json()["limits"]
    assert legacy["rate"] == [] and legacy["absolute"]["maxTotalFloatingIps"] == -1
    assert legacy["absolute"]["maxImageMeta"] == 128
    assert set(modern["absolute"]) == {
        "maxServerMeta",
        "maxTotalKeypairs",
        "maxServerGroups",
        "maxServerGroupMembers",
        "maxTotalCores",
        "maxTotalInstances",
        "maxTotalRAMSize",
        "totalCoresUsed",
        "totalInstancesUsed",
        "totalRAMUsed",
        "totalServerGroupsUsed",
    }


def test_default_quota_class_sets_every_projects_defaults(cloud: CloudRunner, admin_token: str):
    with compute(cloud, admin_token) as c:
        shown = c.get("/os-quota-class-sets/default").json()["quota_class_set"]
        assert shown.pop("id") == "default" and "floating_ips" in shown
        assert "server_groups" not in shown  # before 2.50
        try:
            wanted = {k: v + 100 for k, v in shown.items()}
            updated = c.put(
                "/os-quota-class-sets/default", json={"quota_class_set": wanted}
            ).json()["quota_class_set"]
            assert updated == wanted
            defaults = c.get("/os-quota-sets/anything/defaults").json()["quota_set"]
            assert defaults["instances"] == wanted["instances"]
        finally:
            c.put("/os-quota-class-sets/default", json={"quota_class_set": shown})
        latest = c.get(
            "/os-quota-class-sets/default", headers={"OpenStack-API-Version": "compute 2.57"}
        ).json()["quota_class_set"]
        assert "server_groups" in latest and "floating_ips" not in latest
