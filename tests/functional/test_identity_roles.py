"""Roles, grants and role assignments, as an operator uses them with the real `openstack` CLI."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner

PASSWORD = "s3cret-Pass"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def password_auth(name: str, scope: dict | None = None) -> dict:
    auth: dict = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": name, "domain": {"id": "default"}, "password": PASSWORD}},
        }
    }
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def issue(cloud: CloudRunner, name: str, scope: dict) -> httpx.Response:
    with cloud.http() as anon:
        return anon.post("/v3/auth/tokens", json=password_auth(name, scope))


def role_names(token_response: httpx.Response) -> set[str]:
    return {r["name"] for r in token_response.json()["token"]["roles"]}


@pytest.fixture
def user(admin_http: httpx.Client) -> dict:
    r = admin_http.post(
        "/v3/users",
        json={"user": {"name": unique("user"), "domain_id": "default", "password": PASSWORD}},
    )
    assert r.status_code == 201, r.text
    return r.json()["user"]


@pytest.fixture
def project(admin_http: httpx.Client) -> dict:
    r = admin_http.post("/v3/projects", json={"project": {"name": unique("proj")}})
    assert r.status_code == 201, r.text
    return r.json()["project"]


def project_scope(project: dict) -> dict:
    return {"project": {"id": project["id"]}}


def assert_keystone_error(r: httpx.Response, code: int) -> None:
    assert r.status_code == code, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["title"] and error["message"]


# -- roles -----------------------------------------------------------------------------


def test_operator_manages_a_role_with_the_cli(cloud: CloudRunner):
    name = unique("auditor")
    created = cloud.openstack(
        "role", "create", "--description", "reads audit logs", name, "-f", "json"
    )
    assert created["name"] == name and created["description"] == "reads audit logs"
    assert created["domain_id"] is None

    listed = cloud.openstack("role", "list", "-f", "json")
    assert name in {r["Name"] for r in listed}
    assert {"admin", "member", "reader"} <= {r["Name"] for r in listed}

    renamed = unique("auditor")
    cloud.openstack("role", "set", "--name", renamed, "--description", "audits", name)
    shown = cloud.openstack("role", "show", renamed, "-f", "json")
    assert shown["id"] == created["id"] and shown["description"] == "audits"

    cloud.openstack("role", "delete", renamed)
    gone = cloud.openstack("role", "show", created["id"], check=False)
    assert gone.returncode != 0


def test_role_errors_have_keystone_bodies(cloud: CloudRunner, admin_http: httpx.Client):
    name = unique("dup")
    assert admin_http.post("/v3/roles", json={"role": {"name": name}}).status_code == 201
    assert_keystone_error(admin_http.post("/v3/roles", json={"role": {"name": name}}), 409)
    assert_keystone_error(admin_http.post("/v3/roles", json={"role": {"name": 42}}), 400)
    assert_keystone_error(admin_http.post("/v3/roles", json={"role": {}}), 400)
    assert_keystone_error(admin_http.post("/v3/roles", json={"nothing": {}}), 400)
    bad_option = {"role": {"name": unique("opt"), "options": {"frobnicate": True}}}
    assert_keystone_error(admin_http.post("/v3/roles", json=bad_option), 400)
    assert_keystone_error(admin_http.get(f"/v3/roles/{uuid.uuid4().hex}"), 404)
    assert_keystone_error(admin_http.delete(f"/v3/roles/{uuid.uuid4().hex}"), 404)
    assert_keystone_error(
        admin_http.patch(f"/v3/roles/{uuid.uuid4().hex}", json={"role": {"name": "x"}}), 404
    )


def test_domain_specific_roles_are_listed_per_domain(admin_http: httpx.Client):
    domain = admin_http.post("/v3/domains", json={"domain": {"name": unique("dom")}}).json()
    domain_id = domain["domain"]["id"]
    r = admin_http.post("/v3/roles", json={"role": {"name": "member", "domain_id": domain_id}})
    assert r.status_code == 201, r.text
    role = r.json()["role"]
    assert role["domain_id"] == domain_id
    in_domain = admin_http.get("/v3/roles", params={"domain_id": domain_id}).json()["roles"]
    assert [r["id"] for r in in_domain] == [role["id"]]
    global_roles = admin_http.get("/v3/roles", params={"name": "member"}).json()["roles"]
    assert [r["domain_id"] for r in global_roles] == [None]
    r = admin_http.patch(f"/v3/roles/{role['id']}", json={"role": {"domain_id": None}})
    assert_keystone_error(r, 400)


def test_immutable_role_cannot_be_changed_or_deleted(admin_http: httpx.Client):
    body = {"role": {"name": unique("locked"), "options": {"immutable": True}}}
    role = admin_http.post("/v3/roles", json=body).json()["role"]
    assert role["options"] == {"immutable": True}
    url = f"/v3/roles/{role['id']}"
    assert_keystone_error(admin_http.patch(url, json={"role": {"description": "x"}}), 403)
    assert_keystone_error(admin_http.delete(url), 403)
    unlock = {"role": {"options": {"immutable": False}}}
    assert admin_http.patch(url, json=unlock).status_code == 200
    assert admin_http.delete(url).status_code == 204


def test_member_cannot_create_roles_or_grant_them(cloud: CloudRunner, admin_http: httpx.Client):
    denied = cloud.openstack("role", "create", unique("sneaky"), cloud="cumulo-demo", check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    demo = admin_http.get("/v3/users", params={"name": "demo"}).json()["users"][0]
    project = admin_http.get("/v3/projects", params={"name": "demo"}).json()["projects"][0]
    admin = _role_id(admin_http, "admin")
    # The CLI ignores the answer to its PUT, so --debug shows what the server said.
    attempt = cloud.openstack(
        "--debug", "role", "add", "--user", demo["id"], "--project", project["id"], admin,
        cloud="cumulo-demo", check=False,
    )  # fmt: skip
    assert f"/roles/{admin} used request id" in attempt.stderr
    assert "RESP: [403]" in attempt.stderr
    grant = f"/v3/projects/{project['id']}/users/{demo['id']}/roles/{admin}"
    assert admin_http.head(grant).status_code == 404


# -- grants ----------------------------------------------------------------------------


def test_role_add_lets_a_user_into_a_project_and_role_remove_takes_it_back(
    cloud: CloudRunner, user: dict, project: dict
):
    assert issue(cloud, user["name"], project_scope(project)).status_code == 401
    cloud.openstack("role", "add", "--user", user["id"], "--project", project["id"], "member")

    granted = issue(cloud, user["name"], project_scope(project))
    assert granted.status_code == 201, granted.text
    assert role_names(granted) == {"member", "reader"}  # member implies reader
    token = granted.headers["X-Subject-Token"]

    cloud.openstack("role", "remove", "--user", user["id"], "--project", project["id"], "member")
    assert issue(cloud, user["name"], project_scope(project)).status_code == 401
    with cloud.http(token) as client:
        assert client.get("/v3/auth/catalog").status_code == 401


def test_a_new_grant_shows_in_an_existing_token(
    cloud: CloudRunner, admin_http: httpx.Client, user: dict, project: dict, admin_token: str
):
    cloud.openstack("role", "add", "--user", user["id"], "--project", project["id"], "reader")
    token = issue(cloud, user["name"], project_scope(project)).headers["X-Subject-Token"]
    cloud.openstack("role", "add", "--user", user["id"], "--project", project["id"], "member")
    validated = admin_http.get("/v3/auth/tokens", headers={"X-Subject-Token": token})
    assert {r["name"] for r in validated.json()["token"]["roles"]} == {"member", "reader"}


def test_group_role_applies_to_its_members(
    cloud: CloudRunner, admin_http: httpx.Client, user: dict, project: dict
):
    group = cloud.openstack("group", "create", unique("devs"), "-f", "json")
    cloud.openstack("group", "add", "user", group["id"], user["id"])
    cloud.openstack("role", "add", "--group", group["id"], "--project", project["id"], "member")
    granted = issue(cloud, user["name"], project_scope(project))
    assert granted.status_code == 201, granted.text
    assert "member" in role_names(granted)
    path = f"/v3/projects/{project['id']}/groups/{group['id']}/roles"
    assert [r["name"] for r in admin_http.get(path).json()["roles"]] == ["member"]


def test_domain_role_gives_a_domain_scoped_token(cloud: CloudRunner, user: dict):
    cloud.openstack("role", "add", "--user", user["id"], "--domain", "default", "admin")
    granted = issue(cloud, user["name"], {"domain": {"id": "default"}})
    assert granted.status_code == 201, granted.text
    assert granted.json()["token"]["domain"]["id"] == "default"
    assert role_names(granted) == {"admin", "manager", "member", "reader"}


def test_system_role_gives_a_system_scoped_token(cloud: CloudRunner, user: dict):
    assert issue(cloud, user["name"], {"system": {"all": True}}).status_code == 401
    cloud.openstack("role", "add", "--user", user["id"], "--system", "all", "reader")
    granted = issue(cloud, user["name"], {"system": {"all": True}})
    assert granted.status_code == 201, granted.text
    assert granted.json()["token"]["system"] == {"all": True}
    assert role_names(granted) == {"reader"}


def test_role_inherited_from_the_domain_reaches_its_projects(
    cloud: CloudRunner, admin_http: httpx.Client, user: dict, project: dict
):
    path = (
        f"/v3/OS-INHERIT/domains/default/users/{user['id']}/roles/"
        f"{_role_id(admin_http, 'reader')}/inherited_to_projects"
    )
    assert admin_http.put(path).status_code == 204
    assert admin_http.head(path).status_code == 204
    granted = issue(cloud, user["name"], project_scope(project))
    assert granted.status_code == 201 and role_names(granted) == {"reader"}
    # Inherited to projects only: no domain-scoped token from it.
    assert issue(cloud, user["name"], {"domain": {"id": "default"}}).status_code == 401
    listed = admin_http.get(
        f"/v3/OS-INHERIT/domains/default/users/{user['id']}/roles/inherited_to_projects"
    )
    assert [r["name"] for r in listed.json()["roles"]] == ["reader"]
    assert admin_http.delete(path).status_code == 204
    assert issue(cloud, user["name"], project_scope(project)).status_code == 401


def test_role_inherited_from_a_parent_project_reaches_its_children(
    cloud: CloudRunner, admin_http: httpx.Client, user: dict, project: dict
):
    child = admin_http.post(
        "/v3/projects", json={"project": {"name": unique("child"), "parent_id": project["id"]}}
    ).json()["project"]
    cloud.openstack(
        "role", "add", "--user", user["id"], "--project", project["id"], "--inherited", "member"
    )
    granted = issue(cloud, user["name"], project_scope(child))
    assert granted.status_code == 201 and role_names(granted) == {"member", "reader"}
    # Inherited to the projects below only, not to the project itself.
    assert issue(cloud, user["name"], project_scope(project)).status_code == 401
    subtree = admin_http.get(
        "/v3/role_assignments",
        params={"scope.project.id": project["id"], "include_subtree": "true", "effective": "1"},
    ).json()["role_assignments"]
    assert {(a["scope"]["project"]["id"], a["user"]["id"]) for a in subtree} == {
        (child["id"], user["id"])
    }


def _role_id(admin_http: httpx.Client, name: str) -> str:
    [role] = admin_http.get("/v3/roles", params={"name": name}).json()["roles"]
    return role["id"]


def test_grant_errors(admin_http: httpx.Client, user: dict, project: dict):
    member = _role_id(admin_http, "member")
    nobody = uuid.uuid4().hex
    base = f"/v3/projects/{project['id']}/users/{user['id']}/roles"
    assert_keystone_error(admin_http.put(f"{base}/{nobody}"), 404)
    assert_keystone_error(
        admin_http.put(f"/v3/projects/{nobody}/users/{user['id']}/roles/{member}"), 404
    )
    assert_keystone_error(
        admin_http.put(f"/v3/projects/{project['id']}/users/{nobody}/roles/{member}"), 404
    )
    assert_keystone_error(
        admin_http.put(f"/v3/projects/{project['id']}/groups/{nobody}/roles/{member}"), 404
    )
    assert admin_http.head(f"{base}/{member}").status_code == 404
    assert_keystone_error(admin_http.delete(f"{base}/{member}"), 404)
    assert admin_http.put(f"{base}/{member}").status_code == 204
    assert admin_http.put(f"{base}/{member}").status_code == 204  # idempotent
    assert admin_http.head(f"{base}/{member}").status_code == 204
    assert admin_http.get(f"{base}/{member}").status_code == 204
    assert [r["id"] for r in admin_http.get(base).json()["roles"]] == [member]
    assert admin_http.delete(f"{base}/{member}").status_code == 204
    assert admin_http.get(base).json()["roles"] == []


def test_deleting_a_role_removes_its_grants_and_rules(
    cloud: CloudRunner, admin_http: httpx.Client, user: dict, project: dict
):
    doomed = admin_http.post("/v3/roles", json={"role": {"name": unique("doomed")}}).json()
    doomed_id = doomed["role"]["id"]
    reader = _role_id(admin_http, "reader")
    assert admin_http.put(f"/v3/roles/{doomed_id}/implies/{reader}").status_code == 201
    grant = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{doomed_id}"
    assert admin_http.put(grant).status_code == 204
    assert role_names(issue(cloud, user["name"], project_scope(project))) == {
        doomed["role"]["name"],
        "reader",
    }
    assert admin_http.delete(f"/v3/roles/{doomed_id}").status_code == 204
    assert issue(cloud, user["name"], project_scope(project)).status_code == 401
    listed = admin_http.get("/v3/role_assignments", params={"role.id": doomed_id})
    assert listed.json()["role_assignments"] == []
    inferences = admin_http.get("/v3/role_inferences").json()["role_inferences"]
    assert doomed_id not in {i["prior_role"]["id"] for i in inferences}


# -- role assignments ------------------------------------------------------------------


def test_role_assignment_list_with_names_and_filters(cloud: CloudRunner, user: dict, project: dict):
    cloud.openstack("role", "add", "--user", user["id"], "--project", project["id"], "member")
    rows = cloud.openstack(
        "role", "assignment", "list", "--names", "--user", user["id"], "-f", "json"
    )
    assert rows == [
        {
            "Role": "member",
            "User": f"{user['name']}@Default",
            "Group": "",
            "Project": f"{project['name']}@Default",
            "Domain": "",
            "System": "",
            "Inherited": False,
        }
    ]
    by_project = cloud.openstack(
        "role", "assignment", "list", "--project", project["id"], "-f", "json"
    )
    assert [(r["User"], r["Role"] != "") for r in by_project] == [(user["id"], True)]

    everything = cloud.openstack("role", "assignment", "list", "--names", "-f", "json")
    assert {"Role": "admin", "User": "admin@Default", "System": "all"}.items() <= next(
        r for r in everything if r["System"] == "all" and r["User"] == "admin@Default"
    ).items()


def test_effective_assignments_expand_groups_and_implied_roles(
    cloud: CloudRunner, admin_http: httpx.Client, user: dict, project: dict
):
    group = admin_http.post(
        "/v3/groups", json={"group": {"name": unique("ops"), "domain_id": "default"}}
    ).json()["group"]
    assert admin_http.put(f"/v3/groups/{group['id']}/users/{user['id']}").status_code == 204
    member = _role_id(admin_http, "member")
    grant = f"/v3/projects/{project['id']}/groups/{group['id']}/roles/{member}"
    assert admin_http.put(grant).status_code == 204

    raw = cloud.openstack("role", "assignment", "list", "--user", user["id"], "-f", "json")
    assert raw == []  # the grant is the group's, not the user's
    rows = cloud.openstack(
        "role", "assignment", "list", "--effective", "--names", "--user", user["id"], "-f", "json"
    )
    assert sorted(r["Role"] for r in rows) == ["member", "reader"]
    assert {r["Project"] for r in rows} == {f"{project['name']}@Default"}

    body = admin_http.get(
        "/v3/role_assignments", params={"user.id": user["id"], "effective": ""}
    ).json()
    by_role = {a["role"]["id"]: a for a in body["role_assignments"]}
    direct = by_role[member]
    base = str(admin_http.base_url).rstrip("/") + "/v3"
    assert direct == {
        "role": {"id": member},
        "scope": {"project": {"id": project["id"]}},
        "user": {"id": user["id"]},
        "links": {
            "assignment": f"{base}/projects/{project['id']}/groups/{group['id']}/roles/{member}",
            "membership": f"{base}/groups/{group['id']}/users/{user['id']}",
        },
    }
    implied = by_role[_role_id(admin_http, "reader")]
    assert implied["links"]["assignment"] == direct["links"]["assignment"]


def test_role_assignment_list_refuses_senseless_filters(admin_http: httpx.Client):
    for params in (
        {"scope.project.id": "a", "scope.domain.id": "b"},
        {"user.id": "a", "group.id": "b"},
        {"effective": "", "group.id": "b"},
        {"include_subtree": "true"},
    ):
        assert_keystone_error(admin_http.get("/v3/role_assignments", params=params), 400)


def test_inherited_assignments_show_as_inherited(
    admin_http: httpx.Client, user: dict, project: dict
):
    reader = _role_id(admin_http, "reader")
    path = f"/v3/OS-INHERIT/domains/default/users/{user['id']}/roles/{reader}/inherited_to_projects"
    assert admin_http.put(path).status_code == 204
    raw = admin_http.get("/v3/role_assignments", params={"user.id": user["id"]}).json()
    [entry] = raw["role_assignments"]
    assert entry["scope"] == {"domain": {"id": "default"}, "OS-INHERIT:inherited_to": "projects"}
    assert entry["links"]["assignment"].endswith(path)
    effective = admin_http.get(
        "/v3/role_assignments",
        params={"user.id": user["id"], "scope.project.id": project["id"], "effective": "true"},
    ).json()["role_assignments"]
    assert [
        (e["scope"]["project"]["id"], e["scope"]["OS-INHERIT:inherited_to"]) for e in effective
    ] == [(project["id"], "projects")]
    assert admin_http.delete(path).status_code == 204


# -- implied roles ---------------------------------------------------------------------


def test_implied_roles_with_the_cli(cloud: CloudRunner, admin_http: httpx.Client):
    listed = cloud.openstack("implied", "role", "list", "-f", "json")
    pairs = {(r["Prior Role Name"], r["Implied Role Name"]) for r in listed}
    # Keystone's bootstrap chain (2023.2): admin -> manager -> member -> reader.
    assert {("admin", "manager"), ("manager", "member"), ("member", "reader")} <= pairs
    assert ("admin", "member") not in pairs

    prior, implied = unique("lead"), unique("helper")
    cloud.openstack("role", "create", prior)
    cloud.openstack("role", "create", implied)
    created = cloud.openstack(
        "implied", "role", "create", prior, "--implied-role", implied, "-f", "json"
    )
    assert set(created) == {"implies", "prior_role"}
    listed = cloud.openstack("implied", "role", "list", "-f", "json")
    assert (prior, implied) in {(r["Prior Role Name"], r["Implied Role Name"]) for r in listed}

    prior_id = _role_id(admin_http, prior)
    body = admin_http.get(f"/v3/roles/{prior_id}/implies").json()
    assert [r["name"] for r in body["role_inference"]["implies"]] == [implied]
    cloud.openstack("implied", "role", "delete", prior, "--implied-role", implied)
    assert admin_http.get(f"/v3/roles/{prior_id}/implies").json()["role_inference"]["implies"] == []


def test_implied_role_rules(admin_http: httpx.Client):
    role = admin_http.post("/v3/roles", json={"role": {"name": unique("r")}}).json()["role"]
    admin = _role_id(admin_http, "admin")
    member = _role_id(admin_http, "member")
    url = f"/v3/roles/{role['id']}/implies/{member}"
    assert admin_http.head(url).status_code == 404
    assert_keystone_error(admin_http.get(url), 404)
    assert_keystone_error(admin_http.put(f"/v3/roles/{role['id']}/implies/{admin}"), 403)
    assert_keystone_error(admin_http.put(f"/v3/roles/{role['id']}/implies/{uuid.uuid4().hex}"), 404)
    created = admin_http.put(url)
    assert created.status_code == 201
    assert created.json()["role_inference"]["implies"]["id"] == member
    assert admin_http.head(url).status_code == 204
    assert admin_http.get(url).json()["role_inference"]["prior_role"]["id"] == role["id"]
    assert admin_http.delete(url).status_code == 204
    assert_keystone_error(admin_http.delete(url), 404)
