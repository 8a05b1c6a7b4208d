"""Policy blobs and OAuth1 consumers as an operator keeps them with the openstack CLI."""

from __future__ import annotations

import json


def test_operator_stores_and_updates_a_policy_blob(cloud, tmp_path):
    rules = tmp_path / "policy.json"
    rules.write_text(json.dumps({"compute:create": "role:member"}))
    created = cloud.openstack(
        "policy", "create", "--type", "application/json", str(rules), "-f", "json"
    )
    assert json.loads(created["rules"]) == {"compute:create": "role:member"}
    assert created["type"] == "application/json"

    listed = cloud.openstack("policy", "list", "-f", "json")
    assert created["id"] in [p["ID"] for p in listed]
    cloud.openstack("policy", "set", "--type", "text/plain", created["id"])
    shown = cloud.openstack("policy", "show", created["id"], "-f", "json")
    assert shown["type"] == "text/plain" and shown["rules"] == created["rules"]

    cloud.openstack("policy", "delete", created["id"])
    assert cloud.openstack("policy", "show", created["id"], check=False).returncode != 0


def test_policy_api_needs_an_admin_and_a_blob(cloud, admin_http):
    assert admin_http.post("/v3/policies", json={"policy": {"type": "x"}}).status_code == 400
    demo = cloud.http(cloud.token("demo", project="demo"))
    r = demo.post("/v3/policies", json={"policy": {"type": "x", "blob": "{}"}})
    assert r.status_code == 403
    assert demo.get("/v3/policies").status_code == 403


def test_oauth1_consumer_secret_is_shown_once(admin_http):
    # (The CLI's consumer commands need oauthlib; the API is driven directly.)
    r = admin_http.post("/v3/OS-OAUTH1/consumers", json={"consumer": {"description": "tool"}})
    assert r.status_code == 201, r.text
    created = r.json()["consumer"]
    assert created["description"] == "tool" and len(created["secret"]) == 32
    url = f"/v3/OS-OAUTH1/consumers/{created['id']}"
    shown = admin_http.get(url).json()["consumer"]
    assert shown == {k: v for k, v in created.items() if k != "secret"}
    listed = admin_http.get("/v3/OS-OAUTH1/consumers").json()["consumers"]
    assert created["id"] in [c["id"] for c in listed]

    r = admin_http.patch(url, json={"consumer": {"description": "renamed"}})
    assert r.status_code == 200 and r.json()["consumer"]["description"] == "renamed"
    assert admin_http.patch(url, json={"consumer": {"secret": "mine"}}).status_code == 400

    assert admin_http.delete(url).status_code == 204
    assert admin_http.get(url).status_code == 404
