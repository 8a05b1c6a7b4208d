"""OS-EP-FILTER: an operator narrows what a project's catalog shows, with the openstack CLI."""

from __future__ import annotations

import json
import uuid

from tests.cloudrunner import CloudRunner


def _project_with_member(cloud: CloudRunner) -> tuple[str, str]:
    """A new project whose catalog the test narrows, and a token of its member (admin)."""
    name = f"epf-{uuid.uuid4().hex[:8]}"
    project = cloud.openstack("project", "create", name, "-f", "json")
    cloud.openstack("role", "add", "--user", "admin", "--project", name, "admin")
    return project["id"], cloud.token("admin", project=name)


def _catalog_types(cloud: CloudRunner, token: str) -> dict[str, list[str]]:
    with cloud.http(token) as http:
        catalog = http.get("/v3/auth/catalog").json()["catalog"]
    return {s["type"]: sorted(e["interface"] for e in s["endpoints"]) for s in catalog}


def test_endpoint_group_narrows_a_projects_catalog(cloud, tmp_path):
    project_id, token = _project_with_member(cloud)
    assert {"identity", "compute", "image"} <= set(_catalog_types(cloud, token))

    image = cloud.openstack("service", "show", "image", "-f", "json")
    rules = tmp_path / "filters.json"
    rules.write_text(json.dumps({"service_id": image["id"], "interface": "public"}))
    group = cloud.openstack(
        "endpoint", "group", "create", "images", str(rules), "--description", "d", "-f", "json"
    )
    assert group["filters"] == {"service_id": image["id"], "interface": "public"}
    assert group["id"] in [
        g["ID"] for g in cloud.openstack("endpoint", "group", "list", "-f", "json")
    ]

    cloud.openstack("endpoint", "group", "add", "project", group["id"], project_id)
    # Tokens issued from now on, and the token validated again, show only that group.
    assert _catalog_types(cloud, token) == {"image": ["public"]}
    fresh = cloud.token(
        "admin", project=cloud.openstack("project", "show", project_id, "-f", "json")["name"]
    )
    with cloud.http(fresh) as http:
        issued = http.get("/v3/auth/tokens", headers={"X-Subject-Token": fresh}).json()
    assert [s["type"] for s in issued["token"]["catalog"]] == ["image"]

    # A single endpoint added to the project joins the group's.
    identity_public = next(
        e
        for e in cloud.openstack("endpoint", "list", "--service", "identity", "-f", "json")
        if e["Interface"] == "public"
    )
    cloud.openstack("endpoint", "add", "project", identity_public["ID"], project_id)
    assert _catalog_types(cloud, token) == {"identity": ["public"], "image": ["public"]}
    listed = cloud.openstack("endpoint", "list", "--project", project_id, "-f", "json")
    assert len(listed) == 2

    cloud.openstack("endpoint", "remove", "project", identity_public["ID"], project_id)
    cloud.openstack("endpoint", "group", "remove", "project", group["id"], project_id)
    assert {"identity", "compute", "image"} <= set(_catalog_types(cloud, token))
    cloud.openstack("endpoint", "group", "delete", group["id"])


def test_endpoint_group_api_details(cloud, admin_http):
    service = cloud.openstack("service", "show", "compute", "-f", "json")
    r = admin_http.post(
        "/v3/OS-EP-FILTER/endpoint_groups",
        json={"endpoint_group": {"name": "g", "filters": {"service_id": service["id"]}}},
    )
    assert r.status_code == 201, r.text
    group = r.json()["endpoint_group"]
    url = f"/v3/OS-EP-FILTER/endpoint_groups/{group['id']}"
    assert admin_http.head(url).status_code == 200
    endpoints = admin_http.get(url + "/endpoints").json()["endpoints"]
    assert {e["interface"] for e in endpoints} == {"public", "internal", "admin"}

    bad = {"endpoint_group": {"name": "g", "filters": {"color": "red"}}}
    assert admin_http.post("/v3/OS-EP-FILTER/endpoint_groups", json=bad).status_code == 400
    empty = {"endpoint_group": {"name": "g", "filters": {}}}
    assert admin_http.post("/v3/OS-EP-FILTER/endpoint_groups", json=empty).status_code == 400

    r = admin_http.patch(
        url, json={"endpoint_group": {"name": "g2", "filters": {"interface": "admin"}}}
    )
    assert r.status_code == 200 and r.json()["endpoint_group"]["filters"] == {"interface": "admin"}

    project = cloud.openstack("project", "show", "demo", "-f", "json")
    assoc = f"{url}/projects/{project['id']}"
    assert admin_http.get(assoc).status_code == 404
    assert admin_http.put(assoc).status_code == 204
    shown = admin_http.get(assoc).json()["project_endpoint_group"]
    assert shown["project_id"] == project["id"] and shown["endpoint_group_id"] == group["id"]
    assert [p["id"] for p in admin_http.get(url + "/projects").json()["projects"]] == [
        project["id"]
    ]
    groups = admin_http.get(f"/v3/OS-EP-FILTER/projects/{project['id']}/endpoint_groups")
    assert [g["id"] for g in groups.json()["endpoint_groups"]] == [group["id"]]
    # Deleting the group ends its associations.
    assert admin_http.delete(url).status_code == 204
    assert admin_http.get(assoc).status_code == 404
    assert (
        admin_http.get(f"/v3/OS-EP-FILTER/projects/{project['id']}/endpoint_groups").json()[
            "endpoint_groups"
        ]
        == []
    )
