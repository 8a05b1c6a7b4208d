"""Projects and domains as a new user drives them with the openstack CLI."""

from __future__ import annotations

import uuid

from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_project_lifecycle_with_the_cli(cloud: CloudRunner):
    name = _name("proj")
    created = cloud.openstack(
        "project", "create", name, "--description", "first", "--tag", "web", "-f", "json"
    )
    assert created["name"] == name and created["enabled"] is True
    assert created["domain_id"] == "default" and created["tags"] == ["web"]

    listed = cloud.openstack("project", "list", "-f", "json")
    assert name in [p["Name"] for p in listed]

    cloud.openstack("project", "set", name, "--description", "second", "--disable", "--tag", "db")
    shown = cloud.openstack("project", "show", name, "-f", "json")
    assert shown["description"] == "second" and shown["enabled"] is False
    assert sorted(shown["tags"]) == ["db", "web"]

    cloud.openstack("project", "delete", name)
    gone = cloud.openstack("project", "show", name, check=False)
    assert gone.returncode != 0


def test_project_hierarchy(cloud: CloudRunner):
    parent = cloud.openstack("project", "create", _name("parent"), "-f", "json")
    child = cloud.openstack(
        "project", "create", _name("child"), "--parent", parent["id"], "-f", "json"
    )
    assert child["parent_id"] == parent["id"]
    children = cloud.openstack("project", "list", "--parent", parent["id"], "-f", "json")
    assert [c["ID"] for c in children] == [child["id"]]
    # A parent with children cannot be deleted: Keystone answers 403.
    assert cloud.openstack("project", "delete", parent["id"], check=False).returncode != 0
    cloud.openstack("project", "delete", child["id"])
    cloud.openstack("project", "delete", parent["id"])


def test_list_filters_and_pagination(admin_http):
    tag = uuid.uuid4().hex[:8]
    names = sorted(_name("page") for _ in range(3))
    for n in names:
        admin_http.post("/v3/projects", json={"project": {"name": n, "tags": [tag]}})
    tagged = admin_http.get("/v3/projects", params={"tags": tag}).json()["projects"]
    assert sorted(p["name"] for p in tagged) == names

    page = admin_http.get("/v3/projects", params={"limit": 1}).json()
    assert len(page["projects"]) == 1 and page["truncated"] is True
    assert page["links"]["next"]
    second = admin_http.get(page["links"]["next"]).json()
    assert second["projects"][0]["id"] > page["projects"][0]["id"]

    disabled = admin_http.get("/v3/projects", params={"enabled": "false"}).json()["projects"]
    assert all(p["enabled"] is False for p in disabled)


def test_disabling_a_project_invalidates_its_tokens(cloud: CloudRunner, admin_http):
    demo = admin_http.get("/v3/projects", params={"name": "demo"}).json()["projects"][0]
    token = cloud.token("demo", project="demo")
    with cloud.http(token) as client:
        assert client.get("/v3/auth/catalog").status_code == 200
    admin_http.patch(f"/v3/projects/{demo['id']}", json={"project": {"enabled": False}})
    try:
        with cloud.http(token) as client:
            assert client.get("/v3/auth/catalog").status_code == 401
    finally:
        admin_http.patch(f"/v3/projects/{demo['id']}", json={"project": {"enabled": True}})
    with cloud.http(cloud.token("demo", project="demo")) as client:
        assert client.get("/v3/auth/catalog").status_code == 200


def test_domains_with_the_cli(cloud: CloudRunner):
    name = _name("dom")
    created = cloud.openstack("domain", "create", name, "--description", "d", "-f", "json")
    assert created["name"] == name and created["enabled"] is True
    proj = cloud.openstack("project", "create", _name("in-dom"), "--domain", name, "-f", "json")
    assert proj["domain_id"] == created["id"]
    listed = cloud.openstack("domain", "list", "-f", "json")
    assert name in [d["Name"] for d in listed]
    cloud.openstack("domain", "set", name, "--disable")
    cloud.openstack("domain", "delete", name)
    projects = cloud.openstack("project", "list", "-f", "json")
    assert proj["id"] not in [p["ID"] for p in projects]


def test_project_acting_as_a_domain_is_a_domain(cloud, admin_http):
    """is_domain=true makes a domain, seen through both APIs (Tempest's test_create_is_domain)."""
    conn = cloud.sdk()
    name = f"isdom-{uuid.uuid4().hex[:8]}"
    created = conn.identity.create_project(name=name, is_domain=True, description="d")
    assert created.is_domain is True and created.domain_id is None and created.parent_id is None
    assert conn.identity.get_domain(created.id).name == name

    listed = admin_http.get("/v3/projects", params={"is_domain": "true"}).json()["projects"]
    assert created.id in [p["id"] for p in listed]
    plain = admin_http.get("/v3/projects").json()["projects"]
    assert created.id not in [p["id"] for p in plain]
    assert admin_http.get(f"/v3/projects/{created.id}").json()["project"]["is_domain"] is True

    # A project can live in it; the domain goes like a domain (disabled first).
    inner = cloud.openstack("project", "create", "--domain", created.id, "inner", "-f", "json")
    assert inner["domain_id"] == created.id
    assert admin_http.delete(f"/v3/projects/{created.id}").status_code == 403
    r = admin_http.patch(f"/v3/projects/{created.id}", json={"project": {"enabled": False}})
    assert r.status_code == 200 and r.json()["project"]["enabled"] is False
    assert conn.identity.get_domain(created.id).is_enabled is False
    assert admin_http.delete(f"/v3/projects/{created.id}").status_code == 204
    assert admin_http.get(f"/v3/domains/{created.id}").status_code == 404
    assert admin_http.get(f"/v3/projects/{inner['id']}").status_code == 404

    # Only a cloud admin makes domains, through either API.
    demo = cloud.http(cloud.token("demo", project="demo"))
    body = {"project": {"name": "sneaky", "is_domain": True}}
    assert demo.post("/v3/projects", json=body).status_code == 403
