"""Domain-specific configuration through the API, as Tempest and operators' tools use it."""

from __future__ import annotations

import uuid

LDAP = {
    "identity": {"driver": "ldap"},
    "ldap": {"url": "ldap://myldap.com:389/", "user_tree_dn": "ou=Users,dc=example,dc=org"},
}


def _domain(cloud) -> str:
    return cloud.openstack("domain", "create", f"dc-{uuid.uuid4().hex[:8]}", "-f", "json")["id"]


def test_domain_config_lifecycle(cloud, admin_http):
    domain_id = _domain(cloud)
    url = f"/v3/domains/{domain_id}/config"
    assert admin_http.get(url).status_code == 404

    r = admin_http.put(url, json={"config": {**LDAP, "ldap": {**LDAP["ldap"], "password": "s3"}}})
    assert r.status_code == 201, r.text
    # The LDAP password is kept but never shown.
    assert r.json()["config"] == LDAP
    assert admin_http.get(url).json()["config"] == LDAP
    assert admin_http.get(url + "/ldap").json()["config"] == {"ldap": LDAP["ldap"]}
    assert admin_http.get(url + "/ldap/url").json()["config"] == {"url": LDAP["ldap"]["url"]}
    assert admin_http.get(url + "/ldap/password").status_code == 404

    r = admin_http.patch(url + "/identity", json={"config": {"identity": {"list_limit": 5}}})
    assert r.status_code == 200 and r.json()["config"]["identity"] == {
        "driver": "ldap",
        "list_limit": 5,
    }
    r = admin_http.patch(url + "/identity/driver", json={"config": {"driver": "sql"}})
    assert r.json()["config"]["identity"]["driver"] == "sql"
    # Only the group or option in the path, and only one already set.
    r = admin_http.patch(url + "/identity", json={"config": {"ldap": {"url": "ldap://x"}}})
    assert r.status_code == 403
    r = admin_http.patch(url + "/ldap/user", json={"config": {"user": "cn=admin"}})
    assert r.status_code == 404

    assert admin_http.delete(url + "/identity/driver").status_code == 204
    assert admin_http.get(url + "/identity/driver").status_code == 404
    assert admin_http.delete(url + "/identity").status_code == 204
    assert admin_http.get(url + "/identity").status_code == 404
    # PUT again replaces the whole configuration (200: it existed).
    r = admin_http.put(url, json={"config": {"identity": {"driver": "sql"}}})
    assert r.status_code == 200 and r.json()["config"] == {"identity": {"driver": "sql"}}
    assert admin_http.delete(url).status_code == 204
    assert admin_http.get(url).status_code == 404


def test_domain_config_refuses_unknown_groups_and_options(cloud, admin_http):
    url = f"/v3/domains/{_domain(cloud)}/config"
    for config in ({"mystery": {"x": 1}}, {"ldap": {"not_an_option": 1}}, {}, {"ldap": {}}):
        r = admin_http.put(url, json={"config": config})
        assert r.status_code == 403, config
        assert r.json()["error"]["message"].startswith("Invalid domain specific configuration")
    assert admin_http.put("/v3/domains/nope/config", json={"config": LDAP}).status_code == 404
    demo = cloud.http(cloud.token("demo", project="demo"))
    assert demo.put(url, json={"config": LDAP}).status_code == 403


def test_default_domain_config_and_password_rules(cloud, admin_http):
    defaults = admin_http.get("/v3/domains/config/default").json()["config"]
    assert defaults["identity"]["driver"] == "sql"
    assert defaults["identity"]["list_limit"] == cloud.config.identity.list_limit
    assert "password" not in defaults["ldap"] and defaults["ldap"]["url"] == "ldap://localhost"
    assert admin_http.get("/v3/domains/config/ldap/default").json()["config"].keys() == {"ldap"}
    assert admin_http.get("/v3/domains/config/ldap/url/default").json()["config"] == {
        "url": "ldap://localhost"
    }

    # Any user may read the default domain's password rules (none are set on this cloud).
    demo = cloud.http(cloud.token("demo", project="demo"))
    r = demo.get("/v3/domains/default/config/security_compliance")
    assert r.json()["config"] == {"password_regex": None, "password_regex_description": None}
