"""The service catalog as an operator manages it: regions, services, endpoints."""

from __future__ import annotations

import uuid

from tests.cloudrunner import CloudRunner


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_operator_manages_regions_with_the_cli(cloud: CloudRunner):
    parent = _unique("region")
    child = _unique("subregion")
    created = cloud.openstack(
        "region", "create", parent, "--description", "first floor", "-f", "json"
    )
    assert created["region"] == parent and created["description"] == "first floor"
    cloud.openstack("region", "create", child, "--parent-region", parent, "-f", "json")

    listed = cloud.openstack("region", "list", "-f", "json")
    assert {parent, child} <= {r["Region"] for r in listed}
    shown = cloud.openstack("region", "show", child, "-f", "json")
    assert shown["parent_region"] == parent

    cloud.openstack("region", "set", child, "--description", "annex")
    assert cloud.openstack("region", "show", child, "-f", "json")["description"] == "annex"

    # Keystone deletes a region's child regions with it (none has endpoints here).
    cloud.openstack("region", "delete", parent)
    remaining = {r["Region"] for r in cloud.openstack("region", "list", "-f", "json")}
    assert parent not in remaining and child not in remaining


def test_region_api_details(cloud: CloudRunner, admin_http):
    r = admin_http.post("/v3/regions", json={"region": {"description": "no id given"}})
    assert r.status_code == 201
    generated = r.json()["region"]
    assert generated["id"] and generated["parent_region_id"] is None
    assert generated["links"]["self"].endswith(f"/v3/regions/{generated['id']}")

    named = _unique("put")
    r = admin_http.put(f"/v3/regions/{named}", json={"region": {"parent_region_id": None}})
    assert r.status_code == 201 and r.json()["region"]["id"] == named
    assert admin_http.put(f"/v3/regions/{named}", json={"region": {}}).status_code == 409
    r = admin_http.put(f"/v3/regions/{named}x", json={"region": {"id": "other"}})
    assert r.status_code == 400

    r = admin_http.post("/v3/regions", json={"region": {"parent_region_id": "nowhere"}})
    assert r.status_code == 404

    r = admin_http.post("/v3/regions", json={"region": {"parent_region_id": named}})
    child = r.json()["region"]["id"]
    r = admin_http.get("/v3/regions", params={"parent_region_id": named})
    assert [x["id"] for x in r.json()["regions"]] == [child]

    # A region cannot become its own ancestor.
    r = admin_http.patch(f"/v3/regions/{named}", json={"region": {"parent_region_id": child}})
    assert r.status_code == 400
    assert admin_http.patch(f"/v3/regions/{named}", json={"region": {}}).status_code == 400
    assert admin_http.get("/v3/regions/nowhere").status_code == 404


def test_region_with_endpoints_cannot_be_deleted(cloud: CloudRunner, admin_http):
    region = _unique("busy")
    admin_http.put(f"/v3/regions/{region}", json={"region": {}}).raise_for_status()
    sub = admin_http.post("/v3/regions", json={"region": {"parent_region_id": region}})
    service = admin_http.post("/v3/services", json={"service": {"type": _unique("t")}})
    endpoint = admin_http.post(
        "/v3/endpoints",
        json={
            "endpoint": {
                "service_id": service.json()["service"]["id"],
                "interface": "public",
                "url": "http://busy.example:1234/",
                "region_id": sub.json()["region"]["id"],
            }
        },
    )
    assert endpoint.status_code == 201
    r = admin_http.delete(f"/v3/regions/{region}")
    assert r.status_code == 403
    assert "associated endpoints" in r.json()["error"]["message"]
    admin_http.delete(f"/v3/endpoints/{endpoint.json()['endpoint']['id']}").raise_for_status()
    assert admin_http.delete(f"/v3/regions/{region}").status_code == 204


def test_operator_adds_a_service_and_endpoint_and_the_catalog_shows_it(cloud: CloudRunner):
    name = _unique("widgets")
    kind = _unique("widget")
    url = f"http://127.0.0.1:9/{name}"
    service = cloud.openstack(
        "service", "create", "--name", name, "--description", "Widget API", kind, "-f", "json"
    )
    assert service["name"] == name and service["type"] == kind
    assert service["description"] == "Widget API" and service["enabled"] is True

    assert name in {s["Name"] for s in cloud.openstack("service", "list", "-f", "json")}
    assert cloud.openstack("service", "show", name, "-f", "json")["id"] == service["id"]

    endpoint = cloud.openstack(
        "endpoint", "create", name, "public", url, "--region", "RegionOne", "-f", "json"
    )
    assert endpoint["url"] == url and endpoint["region"] == "RegionOne"
    assert endpoint["service_id"] == service["id"] and endpoint["interface"] == "public"

    listed = cloud.openstack("endpoint", "list", "--service", name, "-f", "json")
    assert [e["URL"] for e in listed] == [url]
    assert listed[0]["Service Name"] == name and listed[0]["Service Type"] == kind

    catalog = cloud.openstack("catalog", "list", "-f", "json")
    [entry] = [c for c in catalog if c["Type"] == kind]
    assert url in str(entry["Endpoints"])

    # Deleting the service takes its endpoints out of the catalog at once.
    cloud.openstack("service", "delete", name)
    catalog = cloud.openstack("catalog", "list", "-f", "json")
    assert kind not in {c["Type"] for c in catalog}
    assert url not in {e["URL"] for e in cloud.openstack("endpoint", "list", "-f", "json")}


def test_endpoint_api_rules(cloud: CloudRunner, admin_http):
    service_id = admin_http.post(
        "/v3/services", json={"service": {"type": _unique("rules"), "name": _unique("n")}}
    ).json()["service"]["id"]

    def create(**endpoint):
        body = {"service_id": service_id, "interface": "internal", "url": "http://x:1/"}
        return admin_http.post("/v3/endpoints", json={"endpoint": {**body, **endpoint}})

    assert create(interface="sideways").status_code == 400
    assert create(service_id="no-such-service").status_code == 400
    assert create(region_id="no-such-region").status_code == 400
    assert create(url="not a url").status_code == 400
    assert create(url="http://x/$(nonsense)s").status_code == 400

    # The legacy `region` key creates the region, as Keystone does for v2-style clients.
    legacy = _unique("legacy")
    r = create(region=legacy)
    assert r.status_code == 201
    endpoint = r.json()["endpoint"]
    assert endpoint["region_id"] == legacy and endpoint["region"] == legacy
    assert admin_http.get(f"/v3/regions/{legacy}").status_code == 200

    r = admin_http.patch(
        f"/v3/endpoints/{endpoint['id']}", json={"endpoint": {"enabled": False, "url": "http://y/"}}
    )
    assert r.status_code == 200
    assert r.json()["endpoint"]["enabled"] is False and r.json()["endpoint"]["url"] == "http://y/"
    r = admin_http.patch(f"/v3/endpoints/{endpoint['id']}", json={"endpoint": {"id": "other"}})
    assert r.status_code == 400

    r = admin_http.get("/v3/endpoints", params={"service_id": service_id, "interface": "internal"})
    assert [e["id"] for e in r.json()["endpoints"]] == [endpoint["id"]]
    assert admin_http.get("/v3/endpoints", params={"interface": "bogus"}).status_code == 400

    # A disabled endpoint is not in the catalog.
    catalog = admin_http.get("/v3/auth/catalog").json()["catalog"]
    assert endpoint["id"] not in {e["id"] for s in catalog for e in s["endpoints"]}
    assert admin_http.delete(f"/v3/endpoints/{endpoint['id']}").status_code == 204
    assert admin_http.get(f"/v3/endpoints/{endpoint['id']}").status_code == 404


def test_service_update_and_filters(cloud: CloudRunner, admin_http):
    kind = _unique("filt")
    r = admin_http.post("/v3/services", json={"service": {"type": kind, "name": "one"}})
    assert r.status_code == 201
    service = r.json()["service"]
    assert "description" not in service  # Keystone shows it only when set
    r = admin_http.patch(
        f"/v3/services/{service['id']}", json={"service": {"enabled": False, "description": "d"}}
    )
    assert r.json()["service"]["enabled"] is False and r.json()["service"]["description"] == "d"
    r = admin_http.get("/v3/services", params={"type": kind})
    assert [s["id"] for s in r.json()["services"]] == [service["id"]]
    # A disabled service is not in the catalog.
    catalog = admin_http.get("/v3/auth/catalog").json()["catalog"]
    assert kind not in {s["type"] for s in catalog}
    assert admin_http.post("/v3/services", json={"service": {"name": "no type"}}).status_code == 400
    assert admin_http.get("/v3/services/nowhere").status_code == 404


def test_member_cannot_change_the_catalog(cloud: CloudRunner):
    proc = cloud.openstack(
        "service", "create", "--name", _unique("nope"), "nope", cloud="cumulo-demo", check=False
    )
    assert proc.returncode != 0 and "403" in proc.stderr
    with cloud.http(cloud.token("demo", project="demo")) as demo:
        r = demo.post("/v3/regions", json={"region": {}})
        assert r.status_code == 403 and r.json()["error"]["code"] == 403
        # Anyone with a token may read regions, as in Keystone.
        assert demo.get("/v3/regions").status_code == 200
