"""Cached token paths over HTTP: a change is seen by the very next request."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner


@pytest.fixture
def member(cloud: CloudRunner, admin_http: httpx.Client) -> dict[str, str]:
    """A fresh user with the member role on a fresh project."""
    suffix = uuid.uuid4().hex[:8]
    password = f"pw-{suffix}"
    project = admin_http.post("/v3/projects", json={"project": {"name": f"cache-{suffix}"}})
    user = admin_http.post(
        "/v3/users", json={"user": {"name": f"cache-{suffix}", "password": password}}
    )
    roles = admin_http.get("/v3/roles", params={"name": "member"}).json()["roles"]
    project_id, user_id = project.json()["project"]["id"], user.json()["user"]["id"]
    role_id = roles[0]["id"]
    grant = f"/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
    assert admin_http.put(grant).status_code == 204
    return {
        "name": f"cache-{suffix}",
        "password": password,
        "user_id": user_id,
        "project_id": project_id,
        "grant": grant,
    }


def unscoped_token(cloud: CloudRunner, member: dict[str, str]) -> str:
    with cloud.http() as anon:
        r = anon.post(
            "/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": member["name"],
                                "domain": {"id": "default"},
                                "password": member["password"],
                            }
                        },
                    },
                    "scope": "unscoped",
                }
            },
        )
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def rescope(cloud: CloudRunner, token: str, project_id: str) -> httpx.Response:
    with cloud.http() as anon:
        return anon.post(
            "/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {"methods": ["token"], "token": {"id": token}},
                    "scope": {"project": {"id": project_id}},
                }
            },
        )


def test_rescoping_stops_the_moment_the_role_is_removed(
    cloud: CloudRunner, admin_http: httpx.Client, member: dict[str, str]
):
    token = unscoped_token(cloud, member)
    for _ in range(3):  # the scope is resolved once, then answered from the caches
        r = rescope(cloud, token, member["project_id"])
        assert r.status_code == 201
    scoped = r.headers["X-Subject-Token"]
    assert admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": scoped}).is_success

    assert admin_http.delete(member["grant"]).status_code == 204
    assert rescope(cloud, token, member["project_id"]).status_code == 401
    r = admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": scoped})
    assert r.status_code == 404


def test_a_disabled_user_cannot_use_or_rescope_a_cached_token(
    cloud: CloudRunner, admin_http: httpx.Client, member: dict[str, str]
):
    token = unscoped_token(cloud, member)
    scoped = rescope(cloud, token, member["project_id"]).headers["X-Subject-Token"]
    with cloud.http(scoped) as user:
        assert user.get("/v3/auth/projects").status_code == 200
        r = admin_http.patch(f"/v3/users/{member['user_id']}", json={"user": {"enabled": False}})
        assert r.status_code == 200
        assert user.get("/v3/auth/projects").status_code == 401
    # Keystone: a token that no longer validates is not found (404) when rescoped.
    assert rescope(cloud, token, member["project_id"]).status_code == 404
