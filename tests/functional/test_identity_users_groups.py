"""Users and groups as an operator and a user drive them with the real openstack CLI."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import yaml

from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _login(
    cloud: CloudRunner, name: str, password: str, project: str | None = None
) -> httpx.Response:
    """Password authentication; unscoped unless a project is named (new users hold no role)."""
    auth: dict = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": name, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return httpx.post(f"{cloud.auth_url}/auth/tokens", json={"auth": auth})


def _token(cloud: CloudRunner, name: str, password: str) -> str:
    r = _login(cloud, name, password)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def _validates(admin_http: httpx.Client, token: str) -> bool:
    r = admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": token})
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def _create_user(admin_http: httpx.Client, password: str = "secret-1", **attrs) -> dict:
    r = admin_http.post(
        "/v3/users", json={"user": {"name": _name("user"), "password": password, **attrs}}
    )
    assert r.status_code == 201, r.text
    return r.json()["user"]


def _user_cloud(cloud: CloudRunner, tmp_path: Path, name: str, password: str) -> dict:
    """Environment for running the CLI as a user with an unscoped token."""
    path = tmp_path / "clouds.yaml"
    auth = {
        "auth_url": cloud.auth_url,
        "username": name,
        "password": password,
        "user_domain_id": "default",
    }
    path.write_text(yaml.safe_dump({"clouds": {"tester": {"auth": auth}}}))
    return {"OS_CLIENT_CONFIG_FILE": str(path), "OS_CLOUD": "tester"}


def test_user_lifecycle_with_the_cli(cloud: CloudRunner, admin_http):
    name = _name("alice")
    created = cloud.openstack(
        "user", "create", name, "--password", "first-pw", "--domain", "default",
        "--email", "alice@example.org", "--description", "first user", "-f", "json",
    )  # fmt: skip
    assert created["name"] == name and created["domain_id"] == "default"
    assert created["enabled"] is True and created["email"] == "alice@example.org"
    assert created["password_expires_at"] is None and "password" not in created

    assert name in [u["Name"] for u in cloud.openstack("user", "list", "-f", "json")]
    shown = cloud.openstack("user", "show", name, "-f", "json")
    assert shown["id"] == created["id"] and shown["description"] == "first user"

    old_token = _token(cloud, name, "first-pw")
    cloud.openstack("user", "set", name, "--password", "second-pw")
    assert _login(cloud, name, "first-pw").status_code == 401
    assert not _validates(admin_http, old_token)
    token = _token(cloud, name, "second-pw")
    assert _validates(admin_http, token)

    cloud.openstack("user", "set", name, "--disable")
    assert not _validates(admin_http, token)
    assert _login(cloud, name, "second-pw").status_code == 401
    # Enabling the user again does not bring back the tokens it held.
    cloud.openstack("user", "set", name, "--enable")
    assert not _validates(admin_http, token)
    assert _login(cloud, name, "second-pw").status_code == 201

    cloud.openstack("user", "delete", name)
    assert cloud.openstack("user", "show", name, check=False).returncode != 0
    assert admin_http.get(f"/v3/users/{created['id']}").status_code == 404


def test_groups_and_membership_with_the_cli(cloud: CloudRunner, admin_http):
    user = _create_user(admin_http)
    group = _name("group")
    created = cloud.openstack(
        "group", "create", group, "--domain", "default", "--description", "ops", "-f", "json"
    )
    assert created["name"] == group and created["description"] == "ops"
    assert group in [g["Name"] for g in cloud.openstack("group", "list", "-f", "json")]

    cloud.openstack("group", "add", "user", group, user["id"])
    assert "in group" in cloud.openstack("group", "contains", "user", group, user["id"])
    mine = cloud.openstack("group", "list", "--user", user["id"], "-f", "json")
    assert [g["Name"] for g in mine] == [group]
    members = cloud.openstack("user", "list", "--group", group, "-f", "json")
    assert [u["ID"] for u in members] == [user["id"]]

    cloud.openstack("group", "set", group, "--name", group + "-x")
    group += "-x"
    cloud.openstack("group", "remove", "user", group, user["id"])
    absent = cloud.openstack("group", "contains", "user", group, user["id"], check=False)
    assert "not in group" in absent.stderr
    assert cloud.openstack("group", "list", "--user", user["id"], "-f", "json") == []

    cloud.openstack("group", "delete", group)
    assert cloud.openstack("group", "show", group, check=False).returncode != 0


def test_user_changes_own_password_with_the_cli(cloud: CloudRunner, admin_http, tmp_path):
    user = _create_user(admin_http, password="old-pw")
    old_token = _token(cloud, user["name"], "old-pw")
    env = _user_cloud(cloud, tmp_path, user["name"], "old-pw")

    wrong = cloud.openstack(
        "user", "password", "set", "--password", "new-pw", "--original-password", "nope",
        env=env, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "401" in wrong.stderr
    assert _validates(admin_http, old_token)

    cloud.openstack(
        "user", "password", "set", "--password", "new-pw", "--original-password", "old-pw",
        env=env,
    )  # fmt: skip
    assert _login(cloud, user["name"], "old-pw").status_code == 401
    assert _login(cloud, user["name"], "new-pw").status_code == 201
    assert not _validates(admin_http, old_token)


def test_password_change_refuses_a_locked_password(cloud: CloudRunner, admin_http):
    user = _create_user(admin_http, password="pw-1", options={"lock_password": True})
    assert user["options"] == {"lock_password": True}
    token = _token(cloud, user["name"], "pw-1")
    with cloud.http(token) as own:
        r = own.post(
            f"/v3/users/{user['id']}/password",
            json={"user": {"password": "pw-2", "original_password": "pw-1"}},
        )
    assert r.status_code == 400 and "cannot change your password" in r.json()["error"]["message"]


def test_one_user_cannot_change_another_users_password(cloud: CloudRunner, admin_http):
    victim = _create_user(admin_http, password="victim-pw")
    other = _create_user(admin_http, password="other-pw")
    with cloud.http(_token(cloud, other["name"], "other-pw")) as client:
        r = client.post(
            f"/v3/users/{victim['id']}/password",
            json={"user": {"password": "mine-now", "original_password": "victim-pw"}},
        )
    assert r.status_code == 403
    assert _login(cloud, victim["name"], "victim-pw").status_code == 201


def test_duplicate_user_name_in_a_domain_is_409(admin_http):
    user = _create_user(admin_http)
    r = admin_http.post("/v3/users", json={"user": {"name": user["name"], "domain_id": "default"}})
    assert r.status_code == 409
    assert r.json() == {
        "error": {
            "code": 409,
            "title": "Conflict",
            "message": "Conflict occurred attempting to store user - Duplicate entry found "
            f"with name {user['name']} at domain ID default.",
        }
    }
    other = _create_user(admin_http)
    r = admin_http.patch(f"/v3/users/{other['id']}", json={"user": {"name": user["name"]}})
    assert r.status_code == 409


def test_bad_user_and_group_input_is_refused(admin_http):
    cases = [
        ("/v3/users", {"user": {"name": "x" * 256}}),
        ("/v3/users", {"user": {"name": 123}}),
        ("/v3/users", {"user": {"name": _name("u"), "enabled": "yes"}}),
        ("/v3/users", {"user": {"name": _name("u"), "password": 42}}),
        ("/v3/users", {"user": {"name": _name("u"), "options": {"no_such": True}}}),
        ("/v3/users", {"user": {"name": _name("u"), "password": "p" * 73}}),
        ("/v3/users", {"user": {"name": _name("u"), "default_project_id": "default"}}),
        ("/v3/users", {"user": {}}),
        ("/v3/users", {"name": "no-wrapper"}),
        ("/v3/groups", {"group": {"name": "g" * 65}}),
        ("/v3/groups", {"group": {"name": _name("g"), "description": 5}}),
    ]
    for path, body in cases:
        r = admin_http.post(path, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == 400
    names = [u["name"] for u in admin_http.get("/v3/users").json()["users"]]
    assert "x" * 256 not in names

    user = _create_user(admin_http)
    for body in ({"user": {}}, {"user": {"domain_id": "other"}}, {"user": {"id": "other"}}):
        assert admin_http.patch(f"/v3/users/{user['id']}", json=body).status_code == 400
    r = admin_http.post("/v3/users", json={"user": {"name": _name("u"), "domain_id": "nowhere"}})
    assert r.status_code == 404


def test_unknown_ids_are_404(admin_http):
    user = _create_user(admin_http)
    group = admin_http.post("/v3/groups", json={"group": {"name": _name("g")}}).json()["group"]
    missing = uuid.uuid4().hex
    for method, path in [
        ("GET", f"/v3/users/{missing}"),
        ("PATCH", f"/v3/users/{missing}"),
        ("DELETE", f"/v3/users/{missing}"),
        ("GET", f"/v3/users/{missing}/groups"),
        ("GET", f"/v3/users/{missing}/projects"),
        ("GET", f"/v3/groups/{missing}"),
        ("DELETE", f"/v3/groups/{missing}"),
        ("GET", f"/v3/groups/{missing}/users"),
        ("PUT", f"/v3/groups/{missing}/users/{user['id']}"),
        ("PUT", f"/v3/groups/{group['id']}/users/{missing}"),
        ("HEAD", f"/v3/groups/{group['id']}/users/{user['id']}"),
        ("DELETE", f"/v3/groups/{group['id']}/users/{user['id']}"),
    ]:
        body = {"user": {"name": "x"}} if method == "PATCH" else None
        r = admin_http.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)


def test_demo_member_cannot_manage_users_but_can_see_itself(cloud: CloudRunner):
    listing = cloud.openstack("user", "list", cloud="cumulo-demo", check=False)
    assert listing.returncode != 0 and "403" in listing.stderr
    creating = cloud.openstack(
        "user", "create", _name("intruder"), "--password", "x", cloud="cumulo-demo", check=False
    )
    assert creating.returncode != 0 and "403" in creating.stderr

    token = cloud.openstack("token", "issue", "-f", "json", cloud="cumulo-demo")
    me = cloud.openstack("user", "show", token["user_id"], "-f", "json", cloud="cumulo-demo")
    assert me["name"] == "demo"
    # `project list` as a member falls back to GET /v3/users/{id}/projects.
    projects = cloud.openstack("project", "list", "-f", "json", cloud="cumulo-demo")
    assert [p["Name"] for p in projects] == ["demo"]
    with cloud.http(cloud.token("demo", project="demo")) as demo:
        assert demo.get("/v3/users").status_code == 403
        assert demo.get(f"/v3/users/{uuid.uuid4().hex}").status_code == 403
        assert demo.get("/v3/groups").status_code == 403
        r = demo.get(f"/v3/users/{token['user_id']}/groups")
        assert r.status_code == 200 and r.json()["groups"] == []


def test_user_list_filters_and_pagination(admin_http):
    tag = uuid.uuid4().hex[:8]
    users = [_create_user(admin_http, name=f"filt-{tag}-{i}") for i in range(3)]
    admin_http.patch(f"/v3/users/{users[0]['id']}", json={"user": {"enabled": False}})

    def names(**params) -> list[str]:
        r = admin_http.get("/v3/users", params=params)
        assert r.status_code == 200, r.text
        return sorted(u["name"] for u in r.json()["users"])

    assert names(name=f"filt-{tag}-1") == [f"filt-{tag}-1"]
    assert names(name__contains=tag) == [u["name"] for u in users]
    assert names(name__startswith=f"filt-{tag}", enabled="false") == [f"filt-{tag}-0"]
    assert names(name__icontains=tag.upper(), enabled="true") == [
        f"filt-{tag}-1",
        f"filt-{tag}-2",
    ]
    assert names(domain_id="nowhere") == []
    assert names(idp_id="some-idp") == []
    assert names(password_expires_at="lt:2030-01-01T00:00:00Z") == []
    r = admin_http.get("/v3/users", params={"password_expires_at": "xx:2030-01-01T00:00:00Z"})
    assert r.status_code == 400

    page = admin_http.get("/v3/users", params={"name__contains": tag, "limit": 2}).json()
    assert len(page["users"]) == 2 and page["truncated"] is True
    rest = admin_http.get(page["links"]["next"]).json()
    assert len(rest["users"]) == 1 and "truncated" not in rest


def test_user_body_follows_the_api_ref(admin_http):
    user = _create_user(admin_http, email="e@example.org", shoe_size=44, default_project_id="p1")
    assert set(user) == {
        "id", "name", "domain_id", "enabled", "password_expires_at", "options", "links",
        "email", "shoe_size", "default_project_id",
    }  # fmt: skip
    assert user["links"]["self"].endswith(f"/v3/users/{user['id']}")
    updated = admin_http.patch(
        f"/v3/users/{user['id']}", json={"user": {"shoe_size": 45, "description": "d"}}
    ).json()["user"]
    assert updated["shoe_size"] == 45 and updated["email"] == "e@example.org"
    assert updated["description"] == "d"


def test_deleting_users_and_groups_removes_memberships(admin_http):
    keep, gone = _create_user(admin_http), _create_user(admin_http)
    group = admin_http.post("/v3/groups", json={"group": {"name": _name("g")}}).json()["group"]
    for u in (keep, gone):
        r = admin_http.put(f"/v3/groups/{group['id']}/users/{u['id']}")
        assert r.status_code == 204
    # Adding a member twice is not an error.
    assert admin_http.put(f"/v3/groups/{group['id']}/users/{keep['id']}").status_code == 204
    assert admin_http.head(f"/v3/groups/{group['id']}/users/{gone['id']}").status_code == 204

    assert admin_http.delete(f"/v3/users/{gone['id']}").status_code == 204
    members = admin_http.get(f"/v3/groups/{group['id']}/users").json()["users"]
    assert [u["id"] for u in members] == [keep["id"]]

    groups = admin_http.get(f"/v3/users/{keep['id']}/groups").json()["groups"]
    assert groups[0]["id"] == group["id"] and groups[0]["membership_expires_at"] is None
    assert admin_http.delete(f"/v3/groups/{group['id']}").status_code == 204
    assert admin_http.get(f"/v3/users/{keep['id']}/groups").json()["groups"] == []


def test_duplicate_group_name_in_a_domain_is_409(admin_http):
    name = _name("g")
    assert admin_http.post("/v3/groups", json={"group": {"name": name}}).status_code == 201
    r = admin_http.post("/v3/groups", json={"group": {"name": name}})
    assert r.status_code == 409
    assert r.json()["error"]["message"] == (
        "Conflict occurred attempting to store group - Duplicate entry found "
        f"with name {name} at domain ID default."
    )


def test_a_groups_role_reaches_its_members_until_they_leave(cloud: CloudRunner, admin_http):
    project = cloud.openstack("project", "create", _name("team"), "-f", "json")["name"]
    group = cloud.openstack("group", "create", _name("team"), "-f", "json")["name"]
    cloud.openstack("role", "add", "--group", group, "--project", project, "member")
    stays, leaves = _create_user(admin_http, "pw-a"), _create_user(admin_http, "pw-b")
    for user in (stays, leaves):
        cloud.openstack("group", "add", "user", group, user["id"])
    assert _login(cloud, leaves["name"], "pw-b", project).status_code == 201
    token = _login(cloud, stays["name"], "pw-a", project).headers["X-Subject-Token"]
    with cloud.http(token) as member:
        own = member.get(f"/v3/users/{stays['id']}/projects").json()["projects"]
    assert [p["name"] for p in own] == [project]

    cloud.openstack("group", "remove", "user", group, leaves["id"])
    assert _login(cloud, leaves["name"], "pw-b", project).status_code == 401

    cloud.openstack("group", "delete", group)
    assert not _validates(admin_http, token)
    assert _login(cloud, stays["name"], "pw-a", project).status_code == 401
