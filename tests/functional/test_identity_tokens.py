"""Tokens as the real clients use them: issue, validate, revoke, catalog."""

from __future__ import annotations

from tests.cloudrunner import CloudRunner


def test_openstack_token_issue_gives_a_project_scoped_token(cloud: CloudRunner):
    token = cloud.openstack("token", "issue", "-f", "json")
    assert token["id"] and token["project_id"] and token["user_id"]


def test_catalog_list_shows_identity_endpoints(cloud: CloudRunner):
    catalog = cloud.openstack("catalog", "list", "-f", "json")
    identity = [c for c in catalog if c["Type"] == "identity"]
    assert identity and "public" in str(identity[0]["Endpoints"])


def test_revoked_token_is_refused(cloud: CloudRunner, admin_http):
    token = cloud.token("demo", project="demo")
    with cloud.http(token) as demo:
        assert demo.get("/v3/auth/projects").status_code == 200
    cloud.openstack("token", "revoke", token)
    with cloud.http(token) as demo:
        r = demo.get("/v3/auth/projects")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401
    r = admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": token})
    assert r.status_code == 404


def test_every_response_carries_a_request_id(cloud: CloudRunner):
    with cloud.http() as anon:
        for path in ("/", "/v3", "/v3/projects", "/nowhere"):
            assert anon.get(path).headers["x-openstack-request-id"].startswith("req-")


def test_version_discovery_documents(cloud: CloudRunner):
    with cloud.http() as anon:
        root = anon.get("/")
        v3 = anon.get("/v3")
    assert root.status_code == 300
    [version] = root.json()["versions"]["values"]
    assert version["id"].startswith("v3.") and version["status"] == "stable"
    assert any(link["rel"] == "self" for link in version["links"])
    assert v3.json()["version"]["id"] == version["id"]


def test_wrong_password_is_401_with_keystone_body(cloud: CloudRunner):
    with cloud.http() as anon:
        r = anon.post(
            "/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "admin",
                                "domain": {"id": "default"},
                                "password": "wrong",
                            }
                        },
                    }
                }
            },
        )
    assert r.status_code == 401
    assert r.json() == {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
