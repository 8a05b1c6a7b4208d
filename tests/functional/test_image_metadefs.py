"""Metadata definitions as an operator publishes them and users read them: a namespace of
property definitions, objects and tags for resource types (Glance's /v2/metadefs)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner


@pytest.fixture
def glance(cloud: CloudRunner, admin_token: str):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": admin_token},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def demo_glance(cloud: CloudRunner):
    token = cloud.token("demo", project="demo")
    with httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.image}",
        headers={"X-Auth-Token": token},
        timeout=30,
    ) as client:
        yield client


def test_an_operator_publishes_a_namespace_users_read(glance, demo_glance):
    types = [t["name"] for t in glance.get("/v2/metadefs/resource_types").json()["resource_types"]]
    assert "OS::Glance::Image" in types and "OS::Nova::Flavor" in types
    name = f"CUMULO::Test{uuid.uuid4().hex[:6]}"
    created = glance.post(
        "/v2/metadefs/namespaces",
        json={
            "namespace": name,
            "display_name": "Test",
            "visibility": "public",
            "protected": True,
            "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}],
            "properties": {"cpu_cores": {"title": "Cores", "type": "integer", "minimum": 1}},
            "tags": [{"name": "fast"}],
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["namespace"] == name and body["self"] == f"/v2/metadefs/namespaces/{name}"
    assert body["resource_type_associations"][0]["prefix"] == "hw_"
    assert body["properties"] == {"cpu_cores": {"title": "Cores", "type": "integer", "minimum": 1}}
    assert glance.post("/v2/metadefs/namespaces", json={"namespace": name}).status_code == 409
    base = f"/v2/metadefs/namespaces/{name}"

    # Users read public namespaces (and filter them by resource type) but never write.
    listed = demo_glance.get(
        "/v2/metadefs/namespaces", params={"resource_types": "OS::Glance::Image"}
    )
    assert name in [n["namespace"] for n in listed.json()["namespaces"]]
    assert demo_glance.get(f"{base}/properties/cpu_cores").json()["title"] == "Cores"
    assert demo_glance.post(f"{base}/tags/mine").status_code == 403
    assert demo_glance.delete(base).status_code == 403

    # Objects, properties and tags: create, rename, delete.
    cores = {"cores": {"title": "c", "type": "integer"}}
    obj = glance.post(
        f"{base}/objects", json={"name": "CPU", "required": ["cores"], "properties": cores}
    )
    assert obj.status_code == 201 and obj.json()["self"] == f"{base}/objects/CPU"
    renamed = glance.put(f"{base}/objects/CPU", json={"name": "Processor"})
    assert renamed.json()["name"] == "Processor" and renamed.json()["required"] == []
    assert [o["name"] for o in glance.get(f"{base}/objects").json()["objects"]] == ["Processor"]
    bad = glance.post(f"{base}/properties", json={"name": "x", "title": "x", "type": "nope"})
    assert bad.status_code == 400
    tags = glance.post(f"{base}/tags", json={"tags": [{"name": "a"}, {"name": "b"}]})
    assert tags.status_code == 201
    assert [t["name"] for t in glance.get(f"{base}/tags").json()["tags"]] == ["a", "b"]
    appended = glance.post(
        f"{base}/tags", json={"tags": [{"name": "c"}]}, headers={"X-Openstack-Append": "true"}
    )
    assert appended.status_code == 201
    assert glance.put(f"{base}/tags/c", json={"name": "d"}).json()["name"] == "d"
    assert [t["name"] for t in glance.get(f"{base}/tags").json()["tags"]] == ["a", "b", "d"]
    assert glance.delete(f"{base}/tags/d").status_code == 204
    assert glance.get(f"{base}/tags/d").status_code == 404
    assert glance.delete(f"{base}/resource_types/OS::Glance::Image").status_code == 204
    assert glance.get(f"{base}/resource_types").json()["resource_type_associations"] == []

    # A protected namespace stays until it is unprotected; then it goes with its contents.
    assert glance.delete(base).status_code == 403
    updated = glance.put(
        base, json={"namespace": name, "protected": False, "visibility": "private"}
    )
    assert updated.json()["protected"] is False and updated.json()["visibility"] == "private"
    assert demo_glance.get(base).status_code == 404  # private: the owner's and admins'
    # Renamed with what it holds.
    renamed = glance.put(base, json={"namespace": name + "-2"}).json()
    assert renamed["namespace"] == name + "-2" and [t["name"] for t in renamed["tags"]] == [
        "a",
        "b",
    ]
    assert glance.get(base).status_code == 404
    base = f"/v2/metadefs/namespaces/{name}-2"
    assert glance.delete(base).status_code == 204
    assert glance.get(f"{base}/objects").status_code == 404


def test_clients_read_the_metadefs_schemas(glance):
    for path, name in (("namespace", "namespace"), ("resource_types", "resource_type_associations"),
                       ("property", "property"), ("tags", "tags")):  # fmt: skip
        assert glance.get(f"/v2/schemas/metadefs/{path}").json()["name"] == name
    assert glance.get("/v2/schemas/metadefs/nothing").status_code == 404
