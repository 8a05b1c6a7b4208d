"""Giving a volume to another project with the `openstack` CLI (volume transfer
requests), and the default quota class every project starts from."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.cloudrunner import CloudRunner
from tests.functional.test_volume import unique


def wait_status(cloud: CloudRunner, name: str, status: str, timeout: float = 60) -> dict:
    """The volume (of any project) once it has the status."""
    url = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/volumes/detail"
    params = {"name": name, "all_tenants": "1"}
    deadline = time.monotonic() + timeout
    with httpx.Client(headers={"X-Auth-Token": cloud.token("admin")}, timeout=30) as http:
        while True:
            found = http.get(url, params=params).json()["volumes"]
            if found and found[0]["status"] == status:
                return found[0]
            assert time.monotonic() < deadline, f"volume {name} not {status}: {found}"
            time.sleep(0.1)


def test_demo_gives_a_volume_to_admin_with_the_auth_key(cloud: CloudRunner) -> None:
    name = unique("gift")
    cloud.openstack("volume", "create", "--size", "1", name, "-f", "json", cloud="cumulo-demo")
    volume = wait_status(cloud, name, "available")
    offer = cloud.openstack(
        "volume", "transfer", "request", "create", "--name", "for-admin", name,
        "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    assert offer["volume_id"] == volume["id"] and offer["auth_key"]
    assert wait_status(cloud, name, "awaiting-transfer")
    listed = cloud.openstack(
        "volume", "transfer", "request", "list", "-f", "json", cloud="cumulo-demo"
    )
    assert [t["ID"] for t in listed if t["Volume"] == volume["id"]] == [offer["id"]]

    wrong = cloud.openstack(
        "volume", "transfer", "request", "accept", "--auth-key", "not-the-key", offer["id"],
        check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "invalid auth key" in wrong.stderr
    assert wait_status(cloud, name, "awaiting-transfer")

    taken = cloud.openstack(
        "volume", "transfer", "request", "accept", "--auth-key", offer["auth_key"], offer["id"],
        "-f", "json",
    )  # fmt: skip
    assert taken["volume_id"] == volume["id"]
    shown = cloud.openstack("volume", "show", volume["id"], "-f", "json")
    admin_project = cloud.openstack("project", "show", "admin", "-f", "json")["id"]
    assert shown["os-vol-tenant-attr:tenant_id"] == admin_project
    assert shown["status"] == "available"
    # demo no longer sees it, nor the accepted offer.
    gone = cloud.openstack("volume", "show", volume["id"], check=False, cloud="cumulo-demo")
    assert gone.returncode != 0
    again = cloud.openstack(
        "volume", "transfer", "request", "accept", "--auth-key", offer["auth_key"], offer["id"],
        check=False,
    )  # fmt: skip
    assert again.returncode != 0 and "could not be found" in again.stderr
    cloud.openstack("volume", "delete", volume["id"])


def test_cancelled_transfer_leaves_the_volume_available(cloud: CloudRunner) -> None:
    name = unique("kept")
    cloud.openstack("volume", "create", "--size", "1", name, "-f", "json", cloud="cumulo-demo")
    volume = wait_status(cloud, name, "available")
    offer = cloud.openstack(
        "volume", "transfer", "request", "create", name, "-f", "json", cloud="cumulo-demo"
    )
    refused = cloud.openstack("volume", "delete", name, check=False, cloud="cumulo-demo")
    assert refused.returncode != 0  # awaiting a transfer
    cloud.openstack("volume", "transfer", "request", "delete", offer["id"], cloud="cumulo-demo")
    assert wait_status(cloud, name, "available")["id"] == volume["id"]
    missing = cloud.openstack(
        "volume", "transfer", "request", "show", str(uuid.uuid4()), check=False
    )
    assert missing.returncode != 0
    cloud.openstack("volume", "delete", name, cloud="cumulo-demo")


def test_default_quota_class_sets_every_projects_defaults(cloud: CloudRunner) -> None:
    http = cloud.http(cloud.token("admin"))
    base = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/os-quota-class-sets/default"
    before = http.get(base).json()["quota_class_set"]
    assert before["id"] == "default"
    assert {"volumes", "snapshots", "gigabytes", "backups"} <= set(before)
    try:
        cloud.openstack("quota", "set", "--default", "--volumes", "17", "--snapshots", "9")
        demo = cloud.openstack("project", "show", "demo", "-f", "json")["id"]
        defaults = cloud.openstack("quota", "show", "--default", "--volume", demo, "-f", "json")
        by_name = {row["Resource"]: row["Limit"] for row in defaults}
        assert by_name["volumes"] == 17 and by_name["snapshots"] == 9
        # A project without its own limits gets the class's.
        shown = http.get(
            f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3/os-quota-sets/{demo}"
        ).json()["quota_set"]
        assert shown["volumes"] == 17
        refused = http.put(base, json={"quota_class_set": {"nonsense": 1}})
        assert refused.status_code == 400
        demo_http = cloud.http(cloud.token("demo", project="demo"))
        assert demo_http.put(base, json={"quota_class_set": {"volumes": 1}}).status_code == 403
    finally:
        http.put(
            base,
            json={
                "quota_class_set": {"volumes": before["volumes"], "snapshots": before["snapshots"]}
            },
        )
