"""Block Storage administration with the `openstack` CLI: private volume types shared
with one project, disabling a backend, the hosts' usage, forcing deletes."""

from __future__ import annotations

import time

import httpx

from tests.cloudrunner import CloudRunner
from tests.functional.test_volume import unique
from tests.functional.test_volume_transfers import wait_status


def test_private_type_is_usable_only_by_the_projects_given(cloud: CloudRunner) -> None:
    vtype = unique("private")
    cloud.openstack("volume", "type", "create", "--private", vtype, "-f", "json")
    seen = cloud.openstack("volume", "type", "list", "-f", "json", cloud="cumulo-demo")
    assert vtype not in [t["Name"] for t in seen]
    refused = cloud.openstack(
        "volume", "create", "--size", "1", "--type", vtype, unique("v"), check=False,
        cloud="cumulo-demo",
    )  # fmt: skip
    assert refused.returncode != 0 and "could not be found" in refused.stderr

    cloud.openstack("volume", "type", "set", "--project", "demo", vtype)
    access = cloud.openstack("volume", "type", "show", vtype, "-f", "json")["access_project_ids"]
    demo = cloud.openstack("project", "show", "demo", "-f", "json")["id"]
    assert demo in str(access)
    name = unique("typed")
    cloud.openstack(
        "volume", "create", "--size", "1", "--type", vtype, name, "-f", "json",
        cloud="cumulo-demo",
    )  # fmt: skip
    assert wait_status(cloud, name, "available")["volume_type"] == vtype
    cloud.openstack("volume", "delete", name, cloud="cumulo-demo")

    cloud.openstack("volume", "type", "unset", "--project", "demo", vtype)
    seen = cloud.openstack("volume", "type", "list", "-f", "json", cloud="cumulo-demo")
    assert vtype not in [t["Name"] for t in seen]


def test_disabled_backend_gets_no_new_volumes(cloud: CloudRunner) -> None:
    services = cloud.openstack("volume", "service", "list", "-f", "json")
    backend = next(s["Host"] for s in services if s["Binary"] == "cinder-volume")
    cloud.openstack(
        "volume", "service", "set", "--disable", "--disable-reason", "maintenance",
        backend, "cinder-volume",
    )  # fmt: skip
    try:
        shown = cloud.openstack("volume", "service", "list", "--long", "-f", "json")
        row = next(s for s in shown if s["Host"] == backend)
        assert row["Status"] == "disabled" and row["Disabled Reason"] == "maintenance"
        name = unique("nowhere")
        cloud.openstack("volume", "create", "--size", "1", name, "-f", "json")
        assert wait_status(cloud, name, "error")
        cloud.openstack("volume", "delete", name)
    finally:
        cloud.openstack("volume", "service", "set", "--enable", backend, "cinder-volume")
    missing = cloud.openstack(
        "volume", "service", "set", "--enable", "no-such-host", "cinder-volume", check=False
    )
    assert missing.returncode != 0


def test_hosts_show_what_each_backend_holds(cloud: CloudRunner) -> None:
    name = unique("counted")
    cloud.openstack("volume", "create", "--size", "2", name, "-f", "json")
    volume = wait_status(cloud, name, "available")
    backend = volume["os-vol-host-attr:host"].split("#")[0]
    base = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3"
    with httpx.Client(headers={"X-Auth-Token": cloud.token("admin")}, timeout=30) as http:
        hosts = http.get(f"{base}/os-hosts").json()["hosts"]
        assert backend in [h["host_name"] for h in hosts if h["service"] == "cinder-volume"]
        usage = http.get(f"{base}/os-hosts/{backend}").json()["host"]
        total = usage[0]["resource"]
        assert total["project"] == "(total)" and int(total["total_volume_gb"]) >= 2
        assert http.get(f"{base}/os-hosts/nope@nothing").status_code == 404
        demo = cloud.token("demo", project="demo")
        assert http.get(f"{base}/os-hosts", headers={"X-Auth-Token": demo}).status_code == 403
    cloud.openstack("volume", "delete", name)


def test_admin_force_deletes_a_volume_stuck_in_a_state(cloud: CloudRunner) -> None:
    name = unique("stuck")
    cloud.openstack("volume", "create", "--size", "1", name, "-f", "json")
    volume = wait_status(cloud, name, "available")
    cloud.openstack("volume", "set", "--state", "maintenance", name)
    refused = cloud.openstack("volume", "delete", name, check=False)
    assert refused.returncode != 0
    cloud.openstack("volume", "delete", "--force", name)
    base = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3"
    with httpx.Client(headers={"X-Auth-Token": cloud.token("admin")}, timeout=30) as http:
        for _ in range(300):
            if http.get(f"{base}/volumes/{volume['id']}").status_code == 404:
                break
            time.sleep(0.1)
        assert http.get(f"{base}/volumes/{volume['id']}").status_code == 404


def test_qos_specs_are_kept_and_associated_with_types(cloud: CloudRunner) -> None:
    qos, vtype = unique("qos"), unique("qtype")
    created = cloud.openstack(
        "volume", "qos", "create", "--consumer", "front-end", "--property",
        "read_iops_sec=2000", qos, "-f", "json",
    )  # fmt: skip
    assert created["consumer"] == "front-end"
    assert "read_iops_sec" in str(created["properties"])
    cloud.openstack("volume", "qos", "set", "--property", "write_iops_sec=500", qos)
    cloud.openstack("volume", "qos", "unset", "--property", "read_iops_sec", qos)
    shown = cloud.openstack("volume", "qos", "show", qos, "-f", "json")
    assert "write_iops_sec" in str(shown["properties"])
    assert "read_iops_sec" not in str(shown["properties"])
    type_id = cloud.openstack("volume", "type", "create", vtype, "-f", "json")["id"]
    cloud.openstack("volume", "qos", "associate", qos, vtype)
    shown = cloud.openstack("volume", "qos", "show", qos, "-f", "json")
    assert vtype in str(shown["associations"])
    type_url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/types/{type_id}"
    headers = {"X-Auth-Token": cloud.token("admin")}
    assert httpx.get(type_url, headers=headers).json()["volume_type"]["qos_specs_id"]
    in_use = cloud.openstack("volume", "qos", "delete", qos, check=False)
    assert in_use.returncode != 0
    duplicate = cloud.openstack("volume", "qos", "create", qos, check=False)
    assert duplicate.returncode != 0
    cloud.openstack("volume", "qos", "delete", "--force", qos)
    assert httpx.get(type_url, headers=headers).json()["volume_type"]["qos_specs_id"] is None
    cloud.openstack("volume", "type", "delete", vtype)


def test_retype_on_the_same_backend_and_refused_across_backends(cloud: CloudRunner) -> None:
    plain, other, elsewhere = unique("t1"), unique("t2"), unique("t3")
    cloud.openstack("volume", "type", "create", plain)
    cloud.openstack("volume", "type", "create", other)
    cloud.openstack(
        "volume", "type", "create", "--property", "volume_backend_name=nowhere", elsewhere
    )
    name = unique("retyped")
    cloud.openstack("volume", "create", "--size", "1", "--type", plain, name, "-f", "json")
    before = wait_status(cloud, name, "available")
    cloud.openstack("volume", "set", "--type", other, "--retype-policy", "never", name)
    after = wait_status(cloud, name, "available")
    assert after["volume_type"] == other
    assert after["os-vol-host-attr:host"] == before["os-vol-host-attr:host"]
    moved = cloud.openstack(
        "volume", "set", "--type", elsewhere, "--retype-policy", "on-demand", name, check=False
    )
    assert moved.returncode != 0 and "another backend" in moved.stderr
    same = cloud.openstack("volume", "set", "--type", other, name, check=False)
    assert same.returncode != 0
    assert wait_status(cloud, name, "available")["volume_type"] == other
    cloud.openstack("volume", "delete", name)
    for t in (plain, other, elsewhere):
        cloud.openstack("volume", "type", "delete", t)


def test_group_types_and_their_specs(cloud: CloudRunner) -> None:
    v311 = ("--os-volume-api-version", "3.11")
    name = unique("gtype")
    created = cloud.openstack(
        *v311, "volume", "group", "type", "create", "--private", "--description", "d", name,
        "-f", "json",
    )  # fmt: skip
    assert created["Name"] == name and created["Is Public"] is False
    cloud.openstack(*v311, "volume", "group", "type", "set", "--property", "replication=on", name)
    shown = cloud.openstack(*v311, "volume", "group", "type", "show", name, "-f", "json")
    assert "replication" in str(shown["Properties"])
    listed = cloud.openstack(*v311, "volume", "group", "type", "list", "-f", "json")
    assert name in [t["Name"] for t in listed]  # admins see private types too
    listed = cloud.openstack(
        *v311, "volume", "group", "type", "list", "-f", "json", cloud="cumulo-demo"
    )
    assert name not in [t["Name"] for t in listed]
    cloud.openstack(*v311, "volume", "group", "type", "set", "--no-property", name)
    shown = cloud.openstack(*v311, "volume", "group", "type", "show", name, "-f", "json")
    assert "replication" not in str(shown["Properties"])
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/group_types"
    too_old = httpx.get(url, headers={"X-Auth-Token": cloud.token("admin")})
    assert too_old.status_code == 404  # group types came with 3.11
    cloud.openstack(*v311, "volume", "group", "type", "delete", name)
    gone = cloud.openstack(*v311, "volume", "group", "type", "show", name, check=False)
    assert gone.returncode != 0


def test_user_message_says_why_a_volume_went_to_error(cloud: CloudRunner) -> None:
    v33 = ("--os-volume-api-version", "3.3")
    vtype = unique("nowhere")
    cloud.openstack("volume", "type", "create", "--property", "vendor_name=nobody", vtype)
    name = unique("failed")
    cloud.openstack("volume", "create", "--size", "1", "--type", vtype, name, "-f", "json")
    volume = wait_status(cloud, name, "error")
    found = cloud.openstack(*v33, "volume", "message", "list", "-f", "json")
    mine = [m for m in found if m["Resource UUID"] == volume["id"]]
    assert len(mine) == 1
    assert mine[0]["Event ID"] == "VOLUME_VOLUME_001_003"
    assert mine[0]["User Message"].startswith("schedule allocate volume:")
    shown = cloud.openstack(*v33, "volume", "message", "show", mine[0]["ID"], "-f", "json")
    assert shown["ID"] == mine[0]["ID"]
    demo = cloud.openstack(*v33, "volume", "message", "list", "-f", "json", cloud="cumulo-demo")
    assert mine[0]["ID"] not in [m["ID"] for m in demo]
    cloud.openstack(*v33, "volume", "message", "delete", mine[0]["ID"])
    gone = cloud.openstack(*v33, "volume", "message", "show", mine[0]["ID"], check=False)
    assert gone.returncode != 0
    cloud.openstack("volume", "delete", name)
    cloud.openstack("volume", "type", "delete", vtype)


def test_encryption_types_are_kept(cloud: CloudRunner) -> None:
    vtype = unique("luks")
    cloud.openstack(
        "volume", "type", "create", vtype, "--encryption-provider", "luks",
        "--encryption-cipher", "aes-xts-plain64", "--encryption-key-size", "256",
        "--encryption-control-location", "front-end", "-f", "json",
    )  # fmt: skip
    shown = cloud.openstack("volume", "type", "show", vtype, "--encryption-type", "-f", "json")
    encryption = shown["encryption"]
    assert encryption["provider"] == "luks" and encryption["key_size"] == 256
    assert encryption["control_location"] == "front-end"
    cloud.openstack("volume", "type", "set", vtype, "--encryption-key-size", "128")
    shown = cloud.openstack("volume", "type", "show", vtype, "--encryption-type", "-f", "json")
    assert shown["encryption"]["key_size"] == 128
    # A 128-bit key in XTS would be AES-64: a volume of the type is refused, none made.
    name = unique("enc")
    refused = cloud.openstack("volume", "create", "--size", "1", "--type", vtype, name, check=False)
    assert refused.returncode != 0 and "does not fit cipher" in refused.stderr
    assert cloud.openstack("volume", "list", "--name", name, "-f", "json") == []
    bad = cloud.openstack(
        "volume", "type", "create", unique("bad"), "--encryption-provider", "luks",
        "--encryption-control-location", "sideways", check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    cloud.openstack("volume", "type", "unset", vtype, "--encryption-type")
    shown = cloud.openstack("volume", "type", "show", vtype, "--encryption-type", "-f", "json")
    assert not shown.get("encryption")
    cloud.openstack("volume", "type", "delete", vtype)


def test_volume_groups_snapshots_and_groups_made_from_them(cloud: CloudRunner) -> None:
    """A group of volumes with the `openstack` CLI: made, snapshotted together, a new
    group made from its snapshot, members moved in and out, everything deleted."""
    v = ["--os-volume-api-version", "3.20"]
    vtype = unique("gvt")
    cloud.openstack("volume", "type", "create", vtype, "-f", "json")
    gtype = unique("ggt")
    cloud.openstack(*v, "volume", "group", "type", "create", gtype, "-f", "json")
    group = cloud.openstack(
        *v, "volume", "group", "create", "--volume-group-type", gtype, "--volume-type", vtype,
        "--name", unique("grp"), "-f", "json",
    )  # fmt: skip
    group = {k.lower(): value for k, value in group.items()}  # the CLI's column names
    assert group["status"] == "available"
    token = cloud.token("admin")
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3"
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": "volume 3.20"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
        members, names = [], [unique("gm1"), unique("gm2")]
        for name in names:
            spec = {"size": 1, "volume_type": vtype, "group_id": group["id"], "name": name}
            made = api.post("/volumes", json={"volume": spec})
            assert made.status_code == 202 and made.json()["volume"]["group_id"] == group["id"]
            members.append(made.json()["volume"]["id"])
        for name in names:
            wait_status(cloud, name, "available")
        # A volume of another type may not join; a member leaves and comes back.
        other = api.post("/volumes", json={"volume": {"size": 1, "group_id": group["id"]}})
        assert other.status_code == 400
        assert (
            api.put(
                f"/groups/{group['id']}", json={"group": {"remove_volumes": members[1]}}
            ).status_code
            == 202
        )
        assert api.get(f"/volumes/{members[1]}").json()["volume"]["group_id"] is None
        assert (
            api.put(
                f"/groups/{group['id']}", json={"group": {"add_volumes": members[1]}}
            ).status_code
            == 202
        )
        gsnap = cloud.openstack(
            *v, "volume", "group", "snapshot", "create", group["id"], "--name", unique("gs"),
            "-f", "json",
        )  # fmt: skip
        gsnap = {k.lower(): value for k, value in gsnap.items()}
        for _ in range(100):
            shown = api.get(f"/group_snapshots/{gsnap['id']}").json()["group_snapshot"]
            if shown["status"] != "creating":
                break
            time.sleep(0.2)
        assert shown["status"] == "available"
        snaps = api.get("/snapshots/detail").json()["snapshots"]
        assert {s["volume_id"] for s in snaps} >= set(members)
        copy = api.post("/groups/action", json={"create-from-src": {
            "group_snapshot_id": gsnap["id"], "name": "copy"}})  # fmt: skip
        assert copy.status_code == 202
        copy_id = copy.json()["group"]["id"]
        for _ in range(100):
            if api.get(f"/groups/{copy_id}").json()["group"]["status"] == "available":
                break
            time.sleep(0.2)
        copies = [
            x for x in api.get("/volumes/detail").json()["volumes"] if x["group_id"] == copy_id
        ]
        assert len(copies) == 2 and {c["snapshot_id"] for c in copies} <= {s["id"] for s in snaps}
        # A group with volumes is not deleted without delete-volumes.
        refused = api.post(f"/groups/{copy_id}/action", json={"delete": {"delete-volumes": False}})
        assert refused.status_code == 400
        assert api.delete(f"/group_snapshots/{gsnap['id']}").status_code == 202
        for group_id in (copy_id, group["id"]):
            done = api.post(f"/groups/{group_id}/action", json={"delete": {"delete-volumes": True}})
            assert done.status_code == 202
            assert api.get(f"/groups/{group_id}").status_code == 404
    assert cloud.openstack(*v, "volume", "group", "list", "-f", "json") == []
