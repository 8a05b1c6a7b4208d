"""Bad input gets the api-ref status and a Keystone error body, and writes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.cloudrunner import CloudRunner


def _error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == status and body["title"] and body["message"]
    return body


def _count_projects(http, name: str) -> int:
    return len(http.get("/v3/projects", params={"name": name}).json()["projects"])


def test_malformed_json_is_400_and_creates_nothing(admin_http):
    r = admin_http.post(
        "/v3/projects",
        content=b'{"project": {"name": "x"',
        headers={"Content-Type": "application/json"},
    )
    _error(r, 400)
    assert _count_projects(admin_http, "x") == 0


@pytest.mark.parametrize(
    "project",
    [
        {},  # missing name
        {"name": ""},
        {"name": 42},  # wrong type
        {"name": "n" * 65},  # too long
        {"name": "ok", "enabled": "yes"},  # strings are not booleans
        {"name": "ok", "tags": ["a/b"]},  # tags may not hold '/'
    ],
)
def test_invalid_project_bodies_are_400(admin_http, project):
    _error(admin_http.post("/v3/projects", json={"project": project}), 400)


def test_body_without_its_wrapper_is_400(admin_http):
    _error(admin_http.post("/v3/projects", json={"name": "unwrapped"}), 400)
    assert _count_projects(admin_http, "unwrapped") == 0


def test_duplicate_project_name_in_a_domain_is_409(admin_http):
    name = f"dup-{uuid.uuid4().hex[:8]}"
    assert admin_http.post("/v3/projects", json={"project": {"name": name}}).status_code == 201
    body = _error(admin_http.post("/v3/projects", json={"project": {"name": name}}), 409)
    assert name in body["message"]
    assert _count_projects(admin_http, name) == 1


def test_unknown_ids_are_404(admin_http):
    _error(admin_http.get(f"/v3/projects/{uuid.uuid4().hex}"), 404)
    _error(admin_http.patch(f"/v3/projects/{uuid.uuid4().hex}", json={"project": {}}), 404)
    _error(admin_http.delete(f"/v3/domains/{uuid.uuid4().hex}"), 404)
    _error(
        admin_http.post("/v3/projects", json={"project": {"name": "orphan", "domain_id": "nope"}}),
        404,
    )


def test_unknown_path_and_method(admin_http):
    _error(admin_http.get("/v3/nothing-here"), 404)
    _error(admin_http.put("/v3/projects"), 405)


def test_tampered_and_garbage_tokens_are_401(cloud: CloudRunner, admin_token: str):
    tampered = admin_token[:-6] + ("AAAAAA" if not admin_token.endswith("AAAAAA") else "BBBBBB")
    for bad in (tampered, "garbage", "x" * 2000):
        with cloud.http(bad) as client:
            _error(client.get("/v3/auth/projects"), 401)


def test_missing_token_is_401(cloud: CloudRunner):
    with cloud.http() as anon:
        _error(anon.get("/v3/projects"), 401)


def test_subject_token_that_is_garbage_is_404(admin_http):
    _error(admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": "nope"}), 404)


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"identity": {}},
        {"identity": {"methods": []}},
        {"identity": {"methods": ["password"]}},
        {"identity": {"methods": ["password"], "password": {"user": {"name": "admin"}}}},
    ],
)
def test_malformed_auth_requests_are_400(cloud: CloudRunner, auth):
    with cloud.http() as anon:
        _error(anon.post("/v3/auth/tokens", json={"auth": auth}), 400)


def test_unknown_user_and_unknown_method_are_401(cloud: CloudRunner):
    with cloud.http() as anon:
        _error(
            anon.post(
                "/v3/auth/tokens",
                json={
                    "auth": {
                        "identity": {
                            "methods": ["password"],
                            "password": {
                                "user": {
                                    "name": "nobody",
                                    "domain": {"id": "default"},
                                    "password": "x",
                                }
                            },
                        }
                    }
                },
            ),
            401,
        )
        _error(
            anon.post(
                "/v3/auth/tokens",
                json={"auth": {"identity": {"methods": ["kerberos"], "kerberos": {}}}},
            ),
            401,
        )


def test_scope_to_a_project_without_a_role_is_401(cloud: CloudRunner):
    cfg = cloud.config
    with cloud.http() as anon:
        r = anon.post(
            "/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "demo",
                                "domain": {"id": "default"},
                                "password": cfg.identity.demo_password,
                            }
                        },
                    },
                    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
                }
            },
        )
    _error(r, 401)


def test_member_cannot_create_or_list_projects(cloud: CloudRunner):
    demo = cloud.token("demo", project="demo")
    with cloud.http(demo) as client:
        _error(client.post("/v3/projects", json={"project": {"name": "sneaky"}}), 403)
        _error(client.get("/v3/projects"), 403)
        _error(client.get("/v3/domains"), 403)
        own = client.get("/v3/auth/projects").json()["projects"]
    assert [p["name"] for p in own] == ["demo"]


def test_member_cannot_see_another_project(cloud: CloudRunner, admin_http):
    admin_project = admin_http.get("/v3/projects", params={"name": "admin"}).json()["projects"][0]
    with cloud.http(cloud.token("demo", project="demo")) as client:
        _error(client.get(f"/v3/projects/{admin_project['id']}"), 403)
        _error(
            client.patch(
                f"/v3/projects/{admin_project['id']}", json={"project": {"description": "mine now"}}
            ),
            403,
        )


def test_enabled_domain_cannot_be_deleted(admin_http):
    name = f"dom-{uuid.uuid4().hex[:8]}"
    domain = admin_http.post("/v3/domains", json={"domain": {"name": name}}).json()["domain"]
    _error(admin_http.delete(f"/v3/domains/{domain['id']}"), 403)
    admin_http.patch(f"/v3/domains/{domain['id']}", json={"domain": {"enabled": False}})
    assert admin_http.delete(f"/v3/domains/{domain['id']}").status_code == 204
