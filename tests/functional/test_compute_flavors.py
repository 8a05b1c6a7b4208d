"""Flavors as an admin and a member use them: the openstack CLI, openstacksdk and the
raw API (microversion differences, paging, Nova error bodies)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def compute(cloud: CloudRunner, token: str, microversion: str | None = None) -> httpx.Client:
    headers = {"X-Auth-Token": token}
    if microversion:
        headers["OpenStack-API-Version"] = f"compute {microversion}"
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1", headers=headers, timeout=30
    )


@pytest.fixture(scope="module")
def demo_token(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


def test_admin_creates_sets_and_deletes_a_flavor_with_the_cli(cloud: CloudRunner):
    name = _name("flv")
    created = cloud.openstack(
        "flavor", "create", name, "--ram", "256", "--disk", "2", "--vcpus", "2",
        "--ephemeral", "1", "--swap", "128", "--description", "small and quick",
        "--property", "hw:cpu_policy=shared", "-f", "json",
    )  # fmt: skip
    assert created["name"] == name and created["ram"] == 256 and created["vcpus"] == 2
    assert created["OS-FLV-EXT-DATA:ephemeral"] == 1 and created["swap"] == 128
    assert created["description"] == "small and quick"
    assert created["properties"] == {"hw:cpu_policy": "shared"}

    cloud.openstack("flavor", "set", name, "--property", "quota:disk_read_iops_sec=100")
    shown = cloud.openstack("flavor", "show", name, "-f", "json")
    assert shown["id"] == created["id"]
    assert shown["properties"] == {"hw:cpu_policy": "shared", "quota:disk_read_iops_sec": "100"}
    cloud.openstack("flavor", "unset", name, "--property", "hw:cpu_policy")
    shown = cloud.openstack("flavor", "show", name, "-f", "json")
    assert shown["properties"] == {"quota:disk_read_iops_sec": "100"}

    listed = cloud.openstack("flavor", "list", "-f", "json")
    assert {"m1.tiny", name} <= {f["Name"] for f in listed}

    cloud.openstack("flavor", "delete", name)
    gone = cloud.openstack("flavor", "show", name, check=False)
    assert gone.returncode != 0 and "No Flavor found" in gone.stderr


def test_private_flavor_is_seen_only_by_projects_given_access(cloud: CloudRunner):
    name = _name("private")
    flavor = cloud.openstack(
        "flavor", "create", name, "--ram", "128", "--disk", "1", "--vcpus", "1", "--private",
        "-f", "json",
    )  # fmt: skip
    assert flavor["os-flavor-access:is_public"] is False
    demo_names = {
        f["Name"] for f in cloud.openstack("flavor", "list", "-f", "json", cloud="cumulo-demo")
    }
    assert name not in demo_names and "m1.tiny" in demo_names

    cloud.openstack("flavor", "set", name, "--project", "demo")
    demo_names = {
        f["Name"] for f in cloud.openstack("flavor", "list", "-f", "json", cloud="cumulo-demo")
    }
    assert name in demo_names
    shown = cloud.openstack("flavor", "show", name, "-f", "json")
    demo_id = cloud.openstack("project", "show", "demo", "-f", "json")["id"]
    assert shown["access_project_ids"] == [demo_id]

    cloud.openstack("flavor", "unset", name, "--project", "demo")
    demo_names = {
        f["Name"] for f in cloud.openstack("flavor", "list", "-f", "json", cloud="cumulo-demo")
    }
    assert name not in demo_names
    cloud.openstack("flavor", "delete", name)


def test_member_may_not_create_flavors(cloud: CloudRunner):
    result = cloud.openstack(
        "flavor", "create", _name("nope"), "--ram", "64", "--disk", "1", "--vcpus", "1",
        cloud="cumulo-demo", check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "403" in result.stderr


def test_duplicate_name_or_id_is_409_and_unknown_flavor_is_404(cloud: CloudRunner, admin_token):
    name = _name("dup")
    body = {"flavor": {"name": name, "id": name, "ram": 64, "vcpus": 1, "disk": 0}}
    with compute(cloud, admin_token) as api:
        assert api.post("/flavors", json=body).status_code == 200
        again = api.post("/flavors", json=body)
        assert again.status_code == 409
        assert again.json() == {
            "conflictingRequest": {
                "code": 409,
                "message": f"Flavor with name {name} already exists.",
            }
        }
        same_id = api.post("/flavors", json={"flavor": {**body["flavor"], "name": _name("x")}})
        assert (
            same_id.status_code == 409 and "ID" in same_id.json()["conflictingRequest"]["message"]
        )
        missing = api.get("/flavors/no-such-flavor")
        assert missing.status_code == 404
        assert (
            missing.json()["itemNotFound"]["message"] == "Flavor no-such-flavor could not be found."
        )
        bad = api.post("/flavors", json={"flavor": {**body["flavor"], "ram": "lots"}})
        assert bad.status_code == 400 and "ram" in bad.json()["badRequest"]["message"]
        assert api.delete(f"/flavors/{name}").status_code == 202


def test_flavor_fields_follow_the_microversion(cloud: CloudRunner, admin_token):
    with compute(cloud, admin_token, "2.1") as old, compute(cloud, admin_token, "2.79") as new:
        tiny_old = old.get("/flavors/1").json()["flavor"]
        tiny_new = new.get("/flavors/1").json()["flavor"]
        described = old.post(
            "/flavors", json={"flavor": {"name": _name("d"), "ram": 64, "vcpus": 1, "disk": 0,
                                         "description": "not before 2.55"}}
        )  # fmt: skip
    assert tiny_old["swap"] == "" and tiny_new["swap"] == 0
    assert "description" not in tiny_old and "extra_specs" not in tiny_old
    assert tiny_new["description"] is None and tiny_new["extra_specs"] == {}
    assert tiny_new["OS-FLV-DISABLED:disabled"] is False and tiny_new["rxtx_factor"] == 1.0
    assert {link["rel"] for link in tiny_new["links"]} == {"self", "bookmark"}
    assert described.status_code == 400


def test_flavor_list_filters_sorting_and_paging(cloud: CloudRunner, demo_token):
    with compute(cloud, demo_token) as api:
        big = api.get("/flavors/detail", params={"minRam": 4096}).json()["flavors"]
        assert {f["name"] for f in big} >= {"m1.medium", "m1.large", "m1.xlarge"}
        assert all(f["ram"] >= 4096 for f in big)
        by_ram = api.get("/flavors", params={"sort_key": "memory_mb", "sort_dir": "desc"}).json()
        assert by_ram["flavors"][0]["name"] == "m1.xlarge"
        first = api.get("/flavors", params={"limit": 2}).json()
        assert [f["id"] for f in first["flavors"]] == ["0", "1"]
        [next_link] = first["flavors_links"]
        assert next_link["rel"] == "next" and "marker=1" in next_link["href"]
        second = api.get("/flavors", params={"limit": 2, "marker": "1"}).json()
        assert [f["id"] for f in second["flavors"]] == ["2", "3"]
        bad_marker = api.get("/flavors", params={"marker": "nowhere"})
        assert bad_marker.status_code == 400
        assert api.get("/flavors", params={"sort_key": "color"}).status_code == 400


def test_extra_specs_and_access_api(cloud: CloudRunner, admin_token):
    name = _name("specs")
    with compute(cloud, admin_token, "2.61") as api:
        flavor = api.post(
            "/flavors", json={"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 0,
                                         "os-flavor-access:is_public": False}}
        ).json()["flavor"]  # fmt: skip
        fid = flavor["id"]
        assert uuid.UUID(fid)
        specs = api.post(
            f"/flavors/{fid}/os-extra_specs", json={"extra_specs": {"a": "1", "b": "2"}}
        )
        assert specs.json() == {"extra_specs": {"a": "1", "b": "2"}}
        assert api.get(f"/flavors/{fid}/os-extra_specs/a").json() == {"a": "1"}
        assert api.put(f"/flavors/{fid}/os-extra_specs/a", json={"a": "9"}).json() == {"a": "9"}
        mismatch = api.put(f"/flavors/{fid}/os-extra_specs/a", json={"b": "9"})
        assert mismatch.status_code == 400
        assert api.delete(f"/flavors/{fid}/os-extra_specs/b").status_code == 200
        assert api.get(f"/flavors/{fid}/os-extra_specs/b").status_code == 404
        assert api.get(f"/flavors/{fid}").json()["flavor"]["extra_specs"] == {"a": "9"}

        added = api.post(f"/flavors/{fid}/action", json={"addTenantAccess": {"tenant": "p1"}})
        assert added.json() == {"flavor_access": [{"flavor_id": fid, "tenant_id": "p1"}]}
        twice = api.post(f"/flavors/{fid}/action", json={"addTenantAccess": {"tenant": "p1"}})
        assert twice.status_code == 409
        access = api.get(f"/flavors/{fid}/os-flavor-access").json()["flavor_access"]
        assert access == [{"flavor_id": fid, "tenant_id": "p1"}]
        removed = api.post(f"/flavors/{fid}/action", json={"removeTenantAccess": {"tenant": "p1"}})
        assert removed.json() == {"flavor_access": []}
        assert api.get("/flavors/1/os-flavor-access").status_code == 404
        api.delete(f"/flavors/{fid}")


def test_description_can_be_changed_from_2_55(cloud: CloudRunner, admin_token):
    name = _name("desc")
    with compute(cloud, admin_token, "2.55") as api, compute(cloud, admin_token) as old:
        fid = api.post(
            "/flavors", json={"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 0}}
        ).json()["flavor"]["id"]
        assert old.put(f"/flavors/{fid}", json={"flavor": {"description": "x"}}).status_code == 404
        updated = api.put(f"/flavors/{fid}", json={"flavor": {"description": "for tests"}})
        assert updated.json()["flavor"]["description"] == "for tests"
        api.delete(f"/flavors/{fid}")


def test_openstacksdk_flavor_round_trip(cloud: CloudRunner):
    conn = cloud.sdk()
    name = _name("sdk")
    flavor = conn.compute.create_flavor(name=name, ram=128, vcpus=1, disk=1, is_public=True)
    try:
        found = conn.compute.find_flavor(name, ignore_missing=False)
        assert found.id == flavor.id and found.ram == 128
        conn.compute.create_flavor_extra_specs(found, {"trait:CUSTOM_X": "required"})
        assert conn.compute.fetch_flavor_extra_specs(found).extra_specs == {
            "trait:CUSTOM_X": "required"
        }
    finally:
        conn.compute.delete_flavor(flavor, ignore_missing=False)
    assert conn.compute.find_flavor(name) is None
