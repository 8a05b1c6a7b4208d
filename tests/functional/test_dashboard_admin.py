"""The dashboard's admin pages driven over HTTP as a browser sends them (the login form,
the session cookie, each form's CSRF token), on an in-process cloud with the fake compute
driver: domains, groups, role assignments, quotas, hypervisor usage, compute services,
aggregates with their metadata and zones, flavors and a private flavor's projects, the
domain scope, and `cumulo dashboard` serving it alone. Every outcome is checked through
the APIs (openstacksdk, plain HTTP)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import (
    VENV_BIN,
    CloudRunner,
    free_port,
    running_cloud,
    wait_for_port,
)
from tests.functional.dashboard_helpers import Dashboard, alerts, dashboard_url

ADMIN_PAGES = (
    "domains", "projects", "users", "groups", "roles", "quotas", "hypervisors", "services",
    "aggregates", "flavors", "instances", "volumes",
)  # fmt: skip
COMPUTE_287 = {"OpenStack-API-Version": "compute 2.87"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudRunner]:
    with running_cloud(tmp_path_factory.mktemp("dashboard-admin") / "state", timeout=60) as runner:
        yield runner


@pytest.fixture(scope="module")
def admin(cloud) -> Iterator[Dashboard]:
    dash = Dashboard(dashboard_url(cloud), "admin", cloud.config.identity.admin_password)
    yield dash
    dash.close()


@pytest.fixture(scope="module")
def sdk(cloud):
    conn = cloud.sdk()
    yield conn
    conn.close()


def compute_api(cloud: CloudRunner, token: str = "") -> httpx.Client:
    """Compute's API with the admin's token, or the one given."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1",
        headers={"X-Auth-Token": token or cloud.token(), **COMPUTE_287},
        timeout=30,
    )


def test_a_member_gets_403_on_every_admin_page_and_form(cloud, sdk):
    demo = Dashboard(dashboard_url(cloud), "demo", cloud.config.identity.demo_password)
    assert "/admin/" not in demo.page("/")  # no admin menu
    for kind in ADMIN_PAGES:
        demo.page(f"/admin/{kind}", status=403)
    group = sdk.identity.create_group(name="admins-only")
    project = sdk.identity.find_project("demo")
    posts = {
        "/admin/groups": {"name": "made-by-a-member"},
        f"/admin/groups/{group.id}/delete": {},
        f"/admin/groups/{group.id}/users": {"user_id": sdk.identity.find_user("demo").id},
        "/admin/roles/grant": {"project_id": project.id, "role_id": "x", "actor": "user:y"},
        "/admin/roles/revoke": {"project_id": project.id, "role_id": "x", "actor": "user:y"},
        f"/admin/quotas/{project.id}": {"service": "compute", "instances": "999"},
        "/admin/services/any": {"status": "disabled"},
        "/admin/aggregates": {"name": "made-by-a-member"},
        "/admin/flavors": {"name": "made-by-a-member", "vcpus": "1", "ram": "64", "disk": "1"},
        "/admin/flavors/1/delete": {},
    }
    for path, data in posts.items():
        answer = demo.post(path, data)
        assert answer.status_code == 403, path
        assert "for administrators" in answer.text
    demo.close()
    assert sdk.identity.find_group("made-by-a-member") is None
    assert sdk.identity.find_group("admins-only") is not None
    assert sdk.compute.find_flavor("made-by-a-member") is None
    assert all(a.name != "made-by-a-member" for a in sdk.compute.aggregates())
    assert sdk.get_compute_quotas(project.id).instances != 999


def test_an_admin_makes_a_group_adds_and_removes_a_member_and_deletes_it(admin, sdk):
    admin.submit("/admin/groups", {"name": "operators", "description": "on call"})
    group = sdk.identity.find_group("operators")
    assert group is not None and group.description == "on call"
    assert "operators" in admin.page("/admin/groups")
    # A second group of that name: Keystone's 409 in the form, what was typed kept.
    page = admin.refused("/admin/groups", {"name": "operators", "description": "again"}, 409)
    assert any("Duplicate entry found with name operators" in a for a in alerts(page)), alerts(page)
    assert 'value="again"' in page
    assert len([g for g in sdk.identity.groups() if g.name == "operators"]) == 1

    demo = sdk.identity.find_user("demo")
    admin.submit(f"/admin/groups/{group.id}/users", {"user_id": demo.id})
    assert sdk.identity.check_user_in_group(demo, group)
    assert "demo" in admin.page(f"/admin/groups/{group.id}").split('id="members"')[1]
    # A user that does not exist: Keystone's 404 shown on the group's page.
    page = admin.refused(f"/admin/groups/{group.id}/users", {"user_id": "no-such-user"}, 404)
    assert any("no-such-user" in a for a in alerts(page)), alerts(page)
    admin.submit(f"/admin/groups/{group.id}/users/{demo.id}/remove")
    assert not sdk.identity.check_user_in_group(demo, group)
    admin.submit(f"/admin/groups/{group.id}/delete")
    assert sdk.identity.find_group("operators") is None


def test_an_admin_creates_edits_and_deletes_a_project(admin, sdk):
    form = {"name": "delta", "description": "first", "domain_id": "default", "enabled": "on"}
    admin.submit("/admin/projects", form)
    project = sdk.identity.find_project("delta")
    assert project is not None and project.description == "first" and project.is_enabled
    assert "delta" in admin.page("/admin/projects").split('id="projects"')[1]
    # A second project of that name: Keystone's 409 next to the form, nothing made.
    page = admin.refused("/admin/projects", {**form, "description": "again"}, 409)
    duplicate = "two projects with the same name in the same domain : delta. (request req-"
    assert any(duplicate in a for a in alerts(page)), alerts(page)
    assert 'value="again"' in page
    assert len([p for p in sdk.identity.projects() if p.name == "delta"]) == 1
    # An empty name: Identity's 400 in the form.
    page = admin.refused("/admin/projects", {**form, "name": ""}, 400)
    assert alerts(page)
    path = f"/admin/projects/{project.id}"
    edit = {"name": "delta2", "description": "second"}  # enabled unticked
    assert admin.submit(path, edit) == path
    project = sdk.identity.get_project(project.id)
    assert (project.name, project.description, project.is_enabled) == ("delta2", "second", False)
    assert 'value="delta2"' in admin.page(path)
    # Renamed to another project's name: the 409 on its page, the project unchanged.
    page = admin.refused(path, {"name": "demo", "enabled": "on"}, 409)
    assert any("two projects with the same name" in a for a in alerts(page)), alerts(page)
    assert sdk.identity.get_project(project.id).name == "delta2"
    # Tags: added and removed; Keystone's refusal next to the tag form, the name kept.
    tags = f"{path}/tags"
    assert admin.submit(tags, {"action": "add", "tag": "team-blue"}) == path
    assert admin.submit(tags, {"action": "add", "tag": "billing 42"}) == path
    assert sorted(sdk.identity.get_project(project.id).tags) == ["billing 42", "team-blue"]
    listed = admin.page(path).split('id="tags"')[1].split("</ul>")[0]
    assert "team-blue" in listed and "billing 42" in listed
    page = admin.refused(tags, {"action": "add", "tag": "a,b"}, 400)
    assert alerts(page) and 'value="a,b"' in page.split('id="add-tag"')[1].split("</form>")[0]
    assert 'value="delta2"' in page.split('id="edit-project"')[1].split("</form>")[0]
    assert admin.submit(tags, {"action": "remove", "tag": "team-blue"}) == path
    assert sdk.identity.get_project(project.id).tags == ["billing 42"]
    admin.refused(tags, {"action": "remove", "tag": "team-blue"}, 404)
    admin.submit(f"{path}/delete")
    assert sdk.identity.find_project("delta2") is None


def test_an_admin_creates_edits_resets_and_deletes_a_user(cloud, admin, sdk):
    demo_project = sdk.identity.find_project("demo")
    form = {
        "name": "frank",
        "email": "frank@example.org",
        "password": "frank-first-pw",
        "domain_id": "default",
        "default_project_id": demo_project.id,
        "enabled": "on",
    }
    admin.submit("/admin/users", form)
    user = sdk.identity.find_user("frank")
    assert user is not None and user.email == "frank@example.org" and user.is_enabled
    assert user.default_project_id == demo_project.id
    assert "frank@example.org" in admin.page("/admin/users").split('id="users"')[1]
    page = admin.refused("/admin/users", {**form, "email": "other@example.org"}, 409)
    assert any("Duplicate entry" in a and "request" in a for a in alerts(page)), alerts(page)
    assert 'value="other@example.org"' in page and "frank-first-pw" not in page
    assert len([u for u in sdk.identity.users() if u.name == "frank"]) == 1
    # A domain's id as default project: Identity's 400 in the form, no user made.
    page = admin.refused(
        "/admin/users", {**form, "name": "frank-x", "default_project_id": "default"}, 400
    )
    assert any("cannot be a domain ID" in a for a in alerts(page)), alerts(page)
    assert sdk.identity.find_user("frank-x") is None

    path = f"/admin/users/{user.id}"
    edit = {"name": "frank2", "email": "f2@example.org", "password": "frank-second-pw"}
    assert admin.submit(path, {**edit, "enabled": "on"}) == path
    user = sdk.identity.get_user(user.id)
    assert (user.name, user.email, user.is_enabled) == ("frank2", "f2@example.org", True)
    assert user.default_project_id is None
    # The reset password is the one Identity takes now, the first one no longer.
    for password, status in (("frank-second-pw", 201), ("frank-first-pw", 401)):
        identity = {
            "methods": ["password"],
            "password": {"user": {"id": user.id, "password": password}},
        }
        answer = httpx.post(f"{cloud.auth_url}/auth/tokens", json={"auth": {"identity": identity}})
        assert answer.status_code == status, answer.text
    # Disabled, the password left empty (unchanged).
    admin.submit(path, {"name": "frank2", "email": "f2@example.org"})
    assert not sdk.identity.get_user(user.id).is_enabled
    page = admin.refused(path, {"name": "demo", "enabled": "on"}, 409)
    assert any("Duplicate entry" in a for a in alerts(page)), alerts(page)
    assert sdk.identity.get_user(user.id).name == "frank2"
    admin.submit(f"{path}/delete")
    assert sdk.identity.find_user("frank2") is None


def test_project_and_user_forms_are_for_admins_with_a_csrf_token(cloud, admin, sdk):
    project = sdk.identity.create_project(name="epsilon", domain_id="default")
    user = sdk.identity.create_user(name="grace", password="grace-secret-pw", domain_id="default")
    demo = Dashboard(dashboard_url(cloud), "demo", cloud.config.identity.demo_password)
    for path in (f"/admin/projects/{project.id}", f"/admin/users/{user.id}"):
        demo.page(path, status=403)
    posts = {
        "/admin/projects": {"name": "made-by-a-member"},
        f"/admin/projects/{project.id}": {"name": "renamed-by-a-member"},
        f"/admin/projects/{project.id}/delete": {},
        "/admin/users": {"name": "made-by-a-member", "password": "x-secret-pw"},
        f"/admin/users/{user.id}": {"name": "renamed-by-a-member"},
        f"/admin/users/{user.id}/delete": {},
    }
    for path, data in posts.items():
        answer = demo.post(path, data)
        assert answer.status_code == 403, path
        assert "for administrators" in answer.text
        # The admin's own session, without the form's CSRF token (a forged form).
        forged = admin.http.post(path, data=data)
        assert forged.status_code == 403, path
        assert "CSRF token is missing or wrong" in forged.text
    demo.close()
    assert sdk.identity.find_project("made-by-a-member") is None
    assert sdk.identity.find_user("made-by-a-member") is None
    assert sdk.identity.get_project(project.id).name == "epsilon"
    assert sdk.identity.get_user(user.id).name == "grace"


def test_an_admin_grants_and_revokes_roles_on_a_project_to_users_and_groups(admin, sdk):
    project = sdk.identity.create_project(name="gamma", domain_id="default")
    user = sdk.identity.create_user(name="erin", password="erin-secret-pw", domain_id="default")
    group = sdk.identity.create_group(name="gamma-readers", domain_id="default")
    member, reader = sdk.identity.find_role("member"), sdk.identity.find_role("reader")

    def assigned() -> set[tuple[str, str]]:
        return {
            (a.role["id"], (a.user or a.group)["id"])
            for a in sdk.identity.role_assignments(scope_project_id=project.id)
        }

    grant = {"project_id": project.id, "role_id": member.id, "actor": f"user:{user.id}"}
    assert admin.submit("/admin/roles/grant", grant) == f"/admin/roles?project={project.id}"
    admin.submit(
        "/admin/roles/grant", {**grant, "role_id": reader.id, "actor": f"group:{group.id}"}
    )
    assert assigned() == {(member.id, user.id), (reader.id, group.id)}
    page = admin.page(f"/admin/roles?project={project.id}").split('id="assignments"')[1]
    assert "erin" in page and "gamma-readers (group)" in page
    # A role that does not exist: the API's 404 on the page, nothing granted.
    page = admin.refused("/admin/roles/grant", {**grant, "role_id": "no-such-role"}, 404)
    assert any("no-such-role" in a for a in alerts(page)), alerts(page)
    admin.submit("/admin/roles/revoke", grant)
    assert assigned() == {(reader.id, group.id)}


def test_an_admin_edits_a_project_s_compute_volume_and_network_quotas(admin, sdk):
    project = sdk.identity.find_project("demo")
    page = admin.page(f"/admin/quotas?project={project.id}")
    for service in ("compute", "volume", "network"):
        assert f'id="quotas-{service}"' in page
    instances = sdk.get_compute_quotas(project.id).instances
    assert f'name="instances" class="narrow" value="{instances}"' in page
    path = f"/admin/quotas/{project.id}"
    admin.submit(path, {"service": "compute", "instances": "7", "cores": "11"})
    admin.submit(path, {"service": "volume", "volumes": "4"})
    admin.submit(path, {"service": "network", "network": "3"})
    compute = sdk.get_compute_quotas(project.id)
    assert (compute.instances, compute.cores) == (7, 11)
    assert sdk.get_volume_quotas(project.id).volumes == 4
    assert sdk.get_network_quotas(project.id).networks == 3
    # Bad values reach the API, which refuses them (400); the form keeps what was typed.
    page = admin.refused(path, {"service": "compute", "instances": "-5"}, 400)
    assert alerts(page) and 'value="-5"' in page
    page = admin.refused(path, {"service": "volume", "volumes": "many"}, 400)
    assert alerts(page) and 'value="many"' in page
    assert sdk.get_compute_quotas(project.id).instances == 7
    assert sdk.get_volume_quotas(project.id).volumes == 4


def test_hypervisor_usage_is_charted_and_a_service_is_disabled_with_a_reason(cloud, admin, sdk):
    with compute_api(cloud) as api:
        hypervisor = api.get("/os-hypervisors/detail").json()["hypervisors"][0]
    page = admin.page("/admin/hypervisors")
    assert hypervisor["hypervisor_hostname"] in page
    for label, used, total, unit in (
        ("vCPUs", "vcpus_used", "vcpus", ""),
        ("RAM", "memory_mb_used", "memory_mb", " MiB"),
        ("Disk", "local_gb_used", "local_gb", " GiB"),
    ):
        shown = f'aria-label="{label}: {hypervisor[used]}{unit} of {hypervisor[total]}{unit}"'
        assert shown in page, shown
    assert page.count("<svg") == 3

    service = next(s for s in sdk.compute.services() if s.binary == "nova-compute")
    path = f"/admin/services/{service.id}"
    admin.submit(path, {"status": "disabled", "disabled_reason": "new disks"})
    changed = next(s for s in sdk.compute.services() if s.id == service.id)
    assert (changed.status, changed.disabled_reason) == ("disabled", "new disks")
    assert "new disks" in admin.page("/admin/services")
    # A reason over Nova's 255 characters: its 400 in the page, the service unchanged.
    page = admin.refused(path, {"status": "disabled", "disabled_reason": "x" * 300}, 400)
    assert any("disabled_reason" in a for a in alerts(page)), alerts(page)
    admin.submit(path, {"status": "enabled"})
    changed = next(s for s in sdk.compute.services() if s.id == service.id)
    assert (changed.status, changed.disabled_reason) == ("enabled", None)


def test_an_aggregate_gets_a_zone_and_hosts_and_is_deleted(cloud, admin, sdk):
    host = next(s.host for s in sdk.compute.services() if s.binary == "nova-compute")
    admin.submit("/admin/aggregates", {"name": "fast-disks", "zone": "zone-b"})
    aggregate = next(a for a in sdk.compute.aggregates() if a.name == "fast-disks")
    assert aggregate.availability_zone == "zone-b"
    hosts = f"/admin/aggregates/{aggregate.id}/hosts"
    admin.submit(hosts, {"action": "add_host", "host": host})
    assert sdk.compute.get_aggregate(aggregate.id).hosts == [host]
    with compute_api(cloud) as api:
        zones = api.get("/os-availability-zone/detail").json()["availabilityZoneInfo"]
    assert host in next(z for z in zones if z["zoneName"] == "zone-b")["hosts"]
    assert "zone-b" in admin.page("/admin/aggregates").split('id="zones"')[1]
    # Nova refuses to delete an aggregate with hosts (400): shown, nothing deleted.
    page = admin.refused(f"/admin/aggregates/{aggregate.id}/delete", {}, 400)
    assert alerts(page)
    admin.submit(hosts, {"action": "remove_host", "host": host})
    assert sdk.compute.get_aggregate(aggregate.id).hosts == []
    admin.submit(f"/admin/aggregates/{aggregate.id}/delete")
    assert all(a.name != "fast-disks" for a in sdk.compute.aggregates())


def test_an_admin_creates_and_deletes_a_flavor(admin, sdk):
    data = {"name": "m1.dash", "vcpus": "2", "ram": "256", "disk": "3", "is_public": "on"}
    admin.submit("/admin/flavors", data)
    flavor = sdk.compute.find_flavor("m1.dash")
    assert (flavor.vcpus, flavor.ram, flavor.disk, flavor.is_public) == (2, 256, 3, True)
    assert "m1.dash" in admin.page("/admin/flavors")
    page = admin.refused("/admin/flavors", {**data, "name": "m1.zero", "vcpus": "0"}, 400)
    assert any("vcpus" in a for a in alerts(page)), alerts(page)
    assert sdk.compute.find_flavor("m1.zero") is None
    admin.submit(f"/admin/flavors/{flavor.id}/delete")
    assert sdk.compute.find_flavor("m1.dash") is None


def test_an_admin_creates_edits_disables_and_deletes_a_domain(admin, sdk):
    admin.submit("/admin/domains", {"name": "east", "description": "first", "enabled": "on"})
    domain = sdk.identity.find_domain("east")
    assert domain is not None and domain.description == "first" and domain.is_enabled
    assert "east" in admin.page("/admin/domains").split('id="domains"')[1]
    # A second domain of that name: Keystone's 409 next to the form, what was typed kept.
    page = admin.refused("/admin/domains", {"name": "east", "description": "again"}, 409)
    assert any("(request req-" in a for a in alerts(page)), alerts(page)
    assert 'value="again"' in page
    assert len([d for d in sdk.identity.domains() if d.name == "east"]) == 1

    path = f"/admin/domains/{domain.id}"
    edit = {"name": "east2", "description": "second", "enabled": "on"}
    assert admin.submit(path, edit) == path
    domain = sdk.identity.get_domain(domain.id)
    assert (domain.name, domain.description, domain.is_enabled) == ("east2", "second", True)
    assert 'value="east2"' in admin.page(path)
    page = admin.refused(path, {"name": "Default", "enabled": "on"}, 409)
    assert alerts(page) and sdk.identity.get_domain(domain.id).name == "east2"

    # Enabled, it is not deleted: Keystone's 403 in its words on the list.
    project = sdk.identity.create_project(name="east-project", domain_id=domain.id)
    page = admin.refused(f"{path}/delete", {}, 403)
    refusal = "Cannot delete a domain that is enabled, please disable it first. (request req-"
    assert any(refusal in a for a in alerts(page)), alerts(page)
    assert sdk.identity.get_domain(domain.id).is_enabled
    # Disabled from the list, enabled again, then disabled by its edit form (unticked).
    assert admin.submit(f"{path}/enabled") == "/admin/domains"
    assert not sdk.identity.get_domain(domain.id).is_enabled
    row = admin.page("/admin/domains").split(f'id="domain-{domain.id}"')[1].split("</tr>")[0]
    assert "Enable</button>" in row and "Disable</button>" not in row
    admin.submit(f"{path}/enabled", {"enabled": "on"})
    assert sdk.identity.get_domain(domain.id).is_enabled
    admin.submit(path, {"name": "east2", "description": "second"})
    assert not sdk.identity.get_domain(domain.id).is_enabled
    # Disabled, it is deleted with what it holds.
    assert admin.submit(f"{path}/delete") == "/admin/domains"
    assert sdk.identity.find_domain(domain.id) is None
    assert sdk.identity.find_project(project.id) is None
    assert "east2" not in admin.page("/admin/domains")


def test_a_private_flavor_is_given_to_a_project_and_taken_back(cloud, admin, sdk):
    form = {"name": "m1.private", "vcpus": "1", "ram": "128", "disk": "1"}  # Public unticked
    admin.submit("/admin/flavors", form)
    with compute_api(cloud) as api:
        listed = api.get("/flavors/detail", params={"is_public": "none"}).json()["flavors"]
    flavor = next(f for f in listed if f["name"] == "m1.private")
    assert flavor["os-flavor-access:is_public"] is False
    path, project = f"/admin/flavors/{flavor['id']}", sdk.identity.find_project("demo")
    assert f'href="{path}"' in admin.page("/admin/flavors")
    assert "No project" in admin.page(path).split('id="access"')[1]
    demo = Dashboard(dashboard_url(cloud), "demo", cloud.config.identity.demo_password)
    demo_token = cloud.token("demo", project="demo")

    def seen_by_demo() -> tuple[bool, bool]:
        """Whether demo's launch wizard offers the flavor, and Compute lists it for demo."""
        with compute_api(cloud, demo_token) as api:
            names = {f["name"] for f in api.get("/flavors/detail").json()["flavors"]}
        wizard = demo.page("/instances/launch").split('id="flavor"')[1].split("</select>")[0]
        return "m1.private" in wizard, "m1.private" in names

    assert seen_by_demo() == (False, False)
    access = f"{path}/access"
    assert admin.submit(access, {"action": "add", "project_id": project.id}) == path
    with compute_api(cloud) as api:
        given = api.get(f"/flavors/{flavor['id']}/os-flavor-access").json()["flavor_access"]
    assert given == [{"flavor_id": flavor["id"], "tenant_id": project.id}]
    assert "demo" in admin.page(path).split('id="access"')[1]
    assert seen_by_demo() == (True, True)
    # Given twice: Nova's 409 in plain words, with its request id.
    page = admin.refused(access, {"action": "add", "project_id": project.id}, 409)
    said = "The project demo already has access to this flavor. (request req-"
    assert any(said in a for a in alerts(page)), alerts(page)

    assert admin.submit(access, {"action": "remove", "project_id": project.id}) == path
    with compute_api(cloud) as api:
        given = api.get(f"/flavors/{flavor['id']}/os-flavor-access").json()["flavor_access"]
    assert given == []
    assert seen_by_demo() == (False, False)
    page = admin.refused(access, {"action": "remove", "project_id": project.id}, 404)
    assert any("The project demo has no access to this flavor" in a for a in alerts(page))
    demo.close()
    # A public flavor is every project's: no access list to keep.
    public = next(f for f in listed if f["os-flavor-access:is_public"])
    page = admin.page(f"/admin/flavors/{public['id']}")
    assert "Every project may use this flavor." in page and 'id="access"' not in page
    admin.submit(f"{path}/delete")


def test_a_flavor_s_extra_specs_are_set_and_unset_as_compute_checks_them(cloud, admin):
    admin.submit("/admin/flavors", {"name": "m1.specs", "vcpus": "1", "ram": "128", "disk": "1"})
    with compute_api(cloud) as api:
        listed = api.get("/flavors/detail", params={"is_public": "none"}).json()["flavors"]
    flavor = next(f for f in listed if f["name"] == "m1.specs")
    path = f"/admin/flavors/{flavor['id']}"
    specs = f"{path}/extra-specs"

    def stored() -> dict:
        with compute_api(cloud) as api:
            return api.get(f"/flavors/{flavor['id']}/os-extra_specs").json()["extra_specs"]

    assert "None." in admin.page(path).split('id="extra-specs"')[1]
    assert admin.submit(specs, {"action": "set", "key": "hw:cpu_policy", "value": "dedicated"})
    assert admin.submit(specs, {"action": "set", "key": "quota:cpu_shares", "value": "2048"})
    assert stored() == {"hw:cpu_policy": "dedicated", "quota:cpu_shares": "2048"}
    table = admin.page(path).split('id="extra-specs"')[1].split("</table>")[0]
    assert "hw:cpu_policy" in table and "dedicated" in table and "quota:cpu_shares" in table
    # Compute's validation of a value, in the page, with what was typed kept.
    page = admin.refused(
        specs, {"action": "set", "key": "hw:cpu_policy", "value": "sometimes"}, 400
    )
    assert any("'sometimes' is not one of" in a for a in alerts(page)), alerts(page)
    assert 'value="sometimes"' in page.split('id="set-extra-spec"')[1].split("</form>")[0]
    assert stored() == {"hw:cpu_policy": "dedicated", "quota:cpu_shares": "2048"}
    assert admin.submit(specs, {"action": "unset", "key": "hw:cpu_policy"}) == path
    assert stored() == {"quota:cpu_shares": "2048"}
    page = admin.refused(specs, {"action": "unset", "key": "hw:cpu_policy"}, 404)
    assert alerts(page), page
    admin.submit(f"{path}/delete")


def test_an_aggregate_s_metadata_and_zone_are_set_and_unset(cloud, admin, sdk):
    host = next(s.host for s in sdk.compute.services() if s.binary == "nova-compute")
    admin.submit("/admin/aggregates", {"name": "gpu-hosts"})
    aggregate = next(a for a in sdk.compute.aggregates() if a.name == "gpu-hosts")
    admin.submit(f"/admin/aggregates/{aggregate.id}/hosts", {"action": "add_host", "host": host})
    metadata = f"/admin/aggregates/{aggregate.id}/metadata"

    def shown() -> tuple[dict, str | None, list]:
        """The aggregate's metadata and zone, and the hosts in zone-g, from Compute."""
        with compute_api(cloud) as api:
            found = api.get(f"/os-aggregates/{aggregate.id}").json()["aggregate"]
            zones = api.get("/os-availability-zone/detail").json()["availabilityZoneInfo"]
        in_g = [h for z in zones if z["zoneName"] == "zone-g" for h in (z["hosts"] or {})]
        return found["metadata"], found["availability_zone"], in_g

    admin.submit(metadata, {"action": "set", "key": "gpu", "value": "a100"})
    admin.submit(metadata, {"action": "set", "key": "availability_zone", "value": "zone-g"})
    assert shown() == ({"gpu": "a100", "availability_zone": "zone-g"}, "zone-g", [host])
    page = admin.page("/admin/aggregates")
    row = page.split(f'id="aggregate-{aggregate.id}"')[1].split("</tr>")[0]
    assert "gpu=a100" in row and "availability_zone=zone-g" in row
    # An empty key: Nova's 400 on the page, what was typed kept in that aggregate's form.
    page = admin.refused(metadata, {"action": "set", "key": " ", "value": "orphan"}, 400)
    assert any("metadata" in a for a in alerts(page)), alerts(page)
    row = page.split(f'id="aggregate-{aggregate.id}"')[1].split("</tr>")[0]
    assert 'value="orphan"' in row
    admin.submit(metadata, {"action": "unset", "key": "gpu"})
    admin.submit(metadata, {"action": "unset", "key": "availability_zone"})
    assert shown() == ({}, None, [])
    admin.submit(f"/admin/aggregates/{aggregate.id}/hosts", {"action": "remove_host", "host": host})
    admin.submit(f"/admin/aggregates/{aggregate.id}/delete")


def test_a_member_gets_403_on_the_domain_flavor_access_and_metadata_forms(cloud, admin, sdk):
    domain = sdk.identity.create_domain(name="north", description="kept")
    flavor = sdk.compute.create_flavor(name="m1.secret", vcpus=1, ram=64, disk=1, is_public=False)
    aggregate = sdk.compute.create_aggregate(name="members-cannot")
    project = sdk.identity.find_project("demo")
    demo = Dashboard(dashboard_url(cloud), "demo", cloud.config.identity.demo_password)
    for path in (f"/admin/domains/{domain.id}", f"/admin/flavors/{flavor.id}"):
        demo.page(path, status=403)
    posts = {
        "/admin/domains": {"name": "made-by-a-member", "enabled": "on"},
        f"/admin/domains/{domain.id}": {"name": "renamed-by-a-member"},
        f"/admin/domains/{domain.id}/enabled": {},
        f"/admin/domains/{domain.id}/delete": {},
        f"/admin/flavors/{flavor.id}/access": {"action": "add", "project_id": project.id},
        f"/admin/aggregates/{aggregate.id}/metadata": {"action": "set", "key": "k", "value": "v"},
    }
    for path, data in posts.items():
        answer = demo.post(path, data)
        assert answer.status_code == 403, path
        assert "for administrators" in answer.text
        forged = admin.http.post(path, data=data)  # the admin's session, no CSRF token
        assert forged.status_code == 403, path
        assert "CSRF token is missing or wrong" in forged.text
    demo.close()
    assert sdk.identity.find_domain("made-by-a-member") is None
    domain = sdk.identity.get_domain(domain.id)
    assert (domain.name, domain.is_enabled) == ("north", True)
    with compute_api(cloud) as api:
        given = api.get(f"/flavors/{flavor.id}/os-flavor-access").json()["flavor_access"]
    assert given == []
    assert not sdk.compute.get_aggregate(aggregate.id).metadata
    sdk.compute.delete_flavor(flavor)
    sdk.compute.delete_aggregate(aggregate)
    sdk.identity.update_domain(domain, is_enabled=False)
    sdk.identity.delete_domain(domain)


def test_an_admin_switches_to_a_domain_scope_and_back(cloud, sdk):
    domain = sdk.identity.find_domain("Default")
    admin_user = sdk.identity.find_user("admin")
    sdk.identity.assign_domain_role_to_user(domain, admin_user, sdk.identity.find_role("admin"))
    dash = Dashboard(dashboard_url(cloud), "admin", cloud.config.identity.admin_password)
    assert f'value="domain:{domain.id}"' in dash.page("/")  # the switcher offers it
    dash.submit("/switch-project", {"project_id": f"domain:{domain.id}"})
    page = dash.page("/")
    assert "Overview of the domain Default" in page
    assert "demo" in page.split('id="domain-users"')[1]
    assert "operators" not in page.split('id="domain-groups"')[1]
    # Identity's admin pages work in the domain scope, on the domain's own.
    for kind, shown in (("projects", "demo"), ("users", "demo"), ("roles", "member")):
        assert shown in dash.page(f"/admin/{kind}").split('id="main"')[1], kind
    dash.submit("/admin/groups", {"name": "domain-made", "domain_id": domain.id})
    assert sdk.identity.find_group("domain-made").domain_id == domain.id
    assert "domain-made" in dash.page("/admin/groups").split('id="groups"')[1]
    # Compute wants a project: its answer is shown, the session goes on.
    answer = dash.http.get("/instances")
    assert answer.status_code == 403 and "compute:servers:index" in answer.text
    # A domain the user has no role on is refused.
    answer = dash.post("/switch-project", {"project_id": "domain:elsewhere"})
    assert answer.status_code == 404
    project = sdk.identity.find_project("demo")
    dash.submit("/switch-project", {"project_id": project.id})
    assert "Overview of demo" in dash.page("/")
    dash.close()


def test_cumulo_dashboard_serves_it_alone_over_http(cloud, tmp_path: Path):
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(VENV_BIN / "cumulo"), "dashboard", "--state-dir", str(cloud.state_dir)]
            + ["--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port, 30, proc)
        return proc

    proc = start()
    try:
        dash = Dashboard(f"http://127.0.0.1:{port}", "admin", cloud.config.identity.admin_password)
        assert "Overview of admin" in dash.page("/")  # Compute, Block Storage, Network
        dash.page("/instances")
        with compute_api(cloud) as api:
            hostname = api.get("/os-hypervisors").json()["hypervisors"][0]["hypervisor_hostname"]
        assert hostname in dash.page("/admin/hypervisors")
        dash.submit("/admin/groups", {"name": "made-from-afar"})
        with cloud.http(cloud.token()) as identity:
            groups = identity.get("/v3/groups", params={"name": "made-from-afar"}).json()
        assert len(groups["groups"]) == 1
        # Sessions are in the dashboard's database: a restarted dashboard keeps them.
        proc.terminate()
        proc.wait(30)
        proc = start()
        assert "Overview of admin" in dash.page("/")
        dash.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert "Identity at http://127.0.0.1:" in (tmp_path / "dashboard.log").read_text()
