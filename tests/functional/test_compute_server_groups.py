"""Server groups as a member creates them for (anti-)affinity: CLI, SDK and the API's
microversion differences, quota and errors."""

from __future__ import annotations

import uuid

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_flavors import compute


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def demo(cloud: CloudRunner, *args: str, check: bool = True):
    return cloud.openstack(*args, cloud="cumulo-demo", check=check)


def test_member_creates_lists_shows_and_deletes_a_group(cloud: CloudRunner):
    name = _name("spread")
    created = demo(
        cloud, "server", "group", "create", "--policy", "anti-affinity",
        "--rule", "max_server_per_host=2", name, "-f", "json",
    )  # fmt: skip
    assert created["name"] == name and created["policy"] == "anti-affinity"
    assert created["rules"] == {"max_server_per_host": 2}
    assert created["members"] == []
    listed = demo(cloud, "server", "group", "list", "-f", "json")
    assert name in {g["Name"] for g in listed}
    shown = demo(cloud, "server", "group", "show", name, "-f", "json")
    assert shown["id"] == created["id"]
    # Another project's admin sees it only when asking for all projects.
    assert name not in {g["Name"] for g in cloud.openstack("server", "group", "list", "-f", "json")}
    everyone = cloud.openstack("server", "group", "list", "--all-projects", "-f", "json")
    assert name in {g["Name"] for g in everyone}
    demo(cloud, "server", "group", "delete", name)
    assert demo(cloud, "server", "group", "show", name, check=False).returncode != 0


def test_group_body_by_microversion_and_errors(cloud: CloudRunner):
    token = cloud.token("demo", project="demo")
    with compute(cloud, token, "2.1") as old, compute(cloud, token, "2.64") as new:
        legacy = old.post(
            "/os-server-groups",
            json={"server_group": {"name": _name("g"), "policies": ["affinity"]}},
        )
        body = legacy.json()["server_group"]
        assert legacy.status_code == 200
        assert set(body) == {"id", "name", "policies", "members", "metadata"}
        assert body["policies"] == ["affinity"] and body["metadata"] == {}
        soft = old.post(
            "/os-server-groups",
            json={"server_group": {"name": _name("g"), "policies": ["soft-affinity"]}},
        )
        assert soft.status_code == 400  # soft policies from 2.15

        shown = new.get(f"/os-server-groups/{body['id']}").json()["server_group"]
        assert set(shown) == {"id", "name", "policy", "rules", "members", "project_id", "user_id"}
        rules_on_affinity = new.post(
            "/os-server-groups",
            json={
                "server_group": {
                    "name": _name("g"),
                    "policy": "affinity",
                    "rules": {"max_server_per_host": 1},
                }
            },
        )
        assert rules_on_affinity.status_code == 400
        message = rules_on_affinity.json()["badRequest"]["message"]
        assert message == "Only anti-affinity policy supports rules."
        policies_at_264 = new.post(
            "/os-server-groups", json={"server_group": {"name": "x", "policies": ["affinity"]}}
        )
        assert policies_at_264.status_code == 400
        missing = new.get(f"/os-server-groups/{uuid.uuid4()}")
        assert missing.status_code == 404 and "itemNotFound" in missing.json()
        assert new.delete(f"/os-server-groups/{body['id']}").status_code == 204


def test_server_group_quota(cloud: CloudRunner, admin_token):
    project = cloud.openstack("project", "create", _name("sg"), "-f", "json")
    cloud.openstack("role", "add", "--project", project["id"], "--user", "demo", "member")
    token = cloud.token("demo", project=project["name"])
    try:
        with compute(cloud, admin_token) as admin, compute(cloud, token, "2.64") as api:
            admin.put(f"/os-quota-sets/{project['id']}", json={"quota_set": {"server_groups": 1}})
            group = {"server_group": {"name": "one", "policy": "anti-affinity"}}
            assert api.post("/os-server-groups", json=group).status_code == 200
            over = api.post("/os-server-groups", json=group)
            assert over.status_code == 403
            assert over.json()["forbidden"]["message"] == "Quota exceeded, too many server groups."
            used = admin.get("/limits", params={"tenant_id": project["id"]}).json()
            assert used["limits"]["absolute"]["totalServerGroupsUsed"] == 1
            [existing] = api.get("/os-server-groups").json()["server_groups"]
            api.delete(f"/os-server-groups/{existing['id']}")
    finally:
        cloud.openstack("project", "delete", project["id"])


def test_openstacksdk_server_group(cloud: CloudRunner):
    conn = cloud.sdk("cumulo-demo")
    group = conn.compute.create_server_group(name=_name("sdk"), policy="soft-anti-affinity")
    assert conn.compute.get_server_group(group.id).policy == "soft-anti-affinity"
    conn.compute.delete_server_group(group)
    assert conn.compute.find_server_group(group.name) is None
