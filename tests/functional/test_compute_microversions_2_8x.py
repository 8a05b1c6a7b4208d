"""Compute microversions 2.80 to 2.92, each as its api-ref entry says, and the version
before it unchanged: with the `openstack` CLI, openstacksdk and the raw API."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.functional.test_compute_flavors import compute


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def _upload(cloud: CloudRunner, tmp_path_factory, **properties: str) -> str:
    path = tmp_path_factory.mktemp("img") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)
    extra = [arg for k, v in properties.items() for arg in ("--property", f"{k}={v}")]
    created = cloud.openstack(
        "image", "create", _name("mv-img"), "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", *extra, "-f", "json",
    )  # fmt: skip
    return created["id"]


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    return _upload(cloud, tmp_path_factory)


@pytest.fixture(scope="module")
def demo_token(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


def _status(api: httpx.Client, server_id: str, status: str, timeout: float = 30) -> dict:
    def done() -> dict | None:
        server = api.get(f"/servers/{server_id}").json()["server"]
        assert server["status"] != "ERROR" or status == "ERROR", server.get("fault")
        settled = server["status"] == status and not server["OS-EXT-STS:task_state"]
        return server if settled else None

    return _eventually(done, f"server {server_id} to be {status}", timeout)


def _boot(api: httpx.Client, image: str, **server: Any) -> dict:
    body = {"name": _name("mv"), "flavorRef": "0", "imageRef": image, "networks": "none"}
    made = api.post("/servers", json={"server": {**body, **server}})
    assert made.status_code == 202, made.text
    return _status(api, made.json()["server"]["id"], "ACTIVE")


def _delete(api: httpx.Client, server_id: str) -> None:
    assert api.delete(f"/servers/{server_id}").status_code == 204
    _eventually(lambda: api.get(f"/servers/{server_id}").status_code == 404, "the delete")


def _volume(cloud: CloudRunner, size: int = 1) -> str:
    volume = cloud.openstack("volume", "create", "--size", str(size), _name("vol"), "-f", "json")
    _eventually(
        lambda: (
            cloud.openstack("volume", "show", volume["id"], "-f", "json")["status"] == "available"
        ),
        "the volume",
    )
    return volume["id"]


def test_2_92_is_offered(cloud: CloudRunner, admin_token: str):
    """The maximum is checked with the 2.9x versions (test_compute_microversions_2_9x)."""
    with compute(cloud, admin_token, "2.92") as api:
        r = api.get("/servers")
        assert r.status_code == 200 and r.headers["OpenStack-API-Version"] == "compute 2.92"


def test_2_80_migrations_name_their_user_and_project(cloud: CloudRunner, admin_token, image):
    with compute(cloud, admin_token, "2.80") as api, compute(cloud, admin_token, "2.79") as old:
        server = _boot(api, image)
        assert (
            api.post(
                f"/servers/{server['id']}/action", json={"resize": {"flavorRef": "1"}}
            ).status_code
            == 202
        )
        _status(api, server["id"], "VERIFY_RESIZE")
        [migration] = api.get("/os-migrations", params={"instance_uuid": server["id"]}).json()[
            "migrations"
        ]
        assert migration["user_id"] == server["user_id"]
        assert migration["project_id"] == server["tenant_id"]
        for key, value in (("user_id", server["user_id"]), ("project_id", server["tenant_id"])):
            mine = api.get("/os-migrations", params={key: value}).json()["migrations"]
            assert migration["uuid"] in [m["uuid"] for m in mine]
            other = api.get("/os-migrations", params={key: uuid.uuid4().hex}).json()
            assert other["migrations"] == []
        # 2.79: neither the fields nor the filters.
        [before] = old.get("/os-migrations", params={"instance_uuid": server["id"]}).json()[
            "migrations"
        ]
        assert "user_id" not in before and "project_id" not in before
        # The list's query schema is strict from 2.59 (Nova's): a filter 2.80 adds is refused.
        refused = old.get("/os-migrations", params={"user_id": uuid.uuid4().hex})
        assert refused.status_code == 400 and "'user_id' was unexpected" in refused.text
        assert (
            api.post(f"/servers/{server['id']}/action", json={"confirmResize": None}).status_code
            == 204
        )
        _status(api, server["id"], "ACTIVE")
        _delete(api, server["id"])
    sdk = cloud.sdk()
    listed = list(sdk.compute.migrations(user_id=server["user_id"], server_id=server["id"]))
    assert [m.project_id for m in listed] == [server["tenant_id"]]


def test_2_81_aggregate_hosts_cache_images(cloud: CloudRunner, admin_token, tmp_path_factory):
    fresh = _upload(cloud, tmp_path_factory)
    [service] = cloud.openstack("compute", "service", "list", "--service", "nova-compute",
                                "-f", "json")  # fmt: skip
    host = service["Host"]
    cached = cloud.state_dir / "compute" / host / "images" / fresh
    aggregate = str(cloud.openstack("aggregate", "create", _name("agg"), "-f", "json")["id"])
    cloud.openstack("aggregate", "add", "host", aggregate, host)
    try:
        path = f"/os-aggregates/{aggregate}/images"
        body = {"cache": [{"id": fresh}]}
        with compute(cloud, admin_token, "2.81") as api:
            with compute(cloud, admin_token, "2.80") as old:
                assert old.post(path, json=body).status_code == 404
            assert not cached.exists()
            for bad in ({}, {"cache": []}, {"cache": [{"id": "nope"}]},
                        {"cache": [{"id": fresh}, {"id": fresh}]}):  # fmt: skip
                assert api.post(path, json=bad).status_code == 400, bad
            unknown = api.post(path, json={"cache": [{"id": str(uuid.uuid4())}]})
            assert unknown.status_code == 400 and "could not be found" in unknown.text
            assert api.post("/os-aggregates/999999/images", json=body).status_code == 404
            assert api.post("/os-aggregates/x/images", json=body).status_code == 400
            with compute(cloud, cloud.token("demo", project="demo"), "2.81") as member:
                assert member.post(path, json=body).status_code == 403
            assert not cached.exists()
        # openstacksdk's precache call (2.81): the host downloads the image.
        sdk = cloud.sdk()
        sdk.compute.aggregate_precache_images(aggregate, [fresh])
        _eventually(cached.exists, "the image in the host's cache")
        shown = cloud.openstack("image", "show", fresh, "-f", "json")
        assert cached.stat().st_size == shown["size"]
    finally:
        cloud.openstack("aggregate", "remove", "host", aggregate, host)
        cloud.openstack("aggregate", "delete", aggregate)


def test_2_82_accelerator_request_bound_events(cloud: CloudRunner, admin_token, image):
    with compute(cloud, admin_token, "2.82") as api, compute(cloud, admin_token, "2.81") as old:
        server = _boot(api, image)
        event = {"name": "accelerator-request-bound", "server_uuid": server["id"], "tag": "arq"}
        assert old.post("/os-server-external-events", json={"events": [event]}).status_code == 400
        r = api.post("/os-server-external-events", json={"events": [event]})
        assert r.status_code == 200 and r.json()["events"][0]["code"] == 200
        untagged = {k: v for k, v in event.items() if k != "tag"}
        r = api.post("/os-server-external-events", json={"events": [untagged, event]})
        assert r.status_code == 207
        assert [e["code"] for e in r.json()["events"]] == [400, 200]
        _delete(api, server["id"])


def test_2_83_members_filter_their_servers(cloud: CloudRunner, demo_token, image):
    with compute(cloud, demo_token, "2.83") as api, compute(cloud, demo_token, "2.82") as old:
        server = _boot(api, image)

        def listed(client: httpx.Client, **filters: str) -> bool:
            found = client.get("/servers/detail", params=filters).json()["servers"]
            return server["id"] in [s["id"] for s in found]

        matching = {
            "vm_state": "active",
            "power_state": "1",
            "user_id": server["user_id"],
            "availability_zone": "nova",
            "config_drive": "",
            "launched_at": server["OS-SRV-USG:launched_at"][:10],
            "created_at": server["created"][:10],
            "progress": "0",
        }
        for key, value in matching.items():
            assert listed(api, **{key: value}), key
        others = {
            "vm_state": "stopped",
            "task_state": "rebooting",
            "power_state": "4",
            "user_id": uuid.uuid4().hex,
            "availability_zone": "elsewhere",
            "key_name": "no-such-key",
            "terminated_at": "2000-01-01",
            "config_drive": "True",
        }
        for key, value in others.items():
            assert not listed(api, **{key: value}), key
            # 2.82: a member's filter of these is dropped, as Nova does.
            assert listed(old, **{key: value}), key
        _delete(api, server["id"])


def test_2_84_failed_events_say_why(cloud: CloudRunner, admin_token, demo_token, image):
    flavor = cloud.openstack(
        "flavor", "create", _name("huge"), "--ram", "64", "--disk", "100000", "--vcpus", "1",
        "--public", "-f", "json",
    )  # fmt: skip
    try:
        with compute(cloud, admin_token, "2.84") as api:
            made = api.post("/servers", json={"server": {
                "name": _name("nohost"), "flavorRef": flavor["id"], "imageRef": image,
                "networks": "none"}})  # fmt: skip
            assert made.status_code == 202
            server_id = made.json()["server"]["id"]
            failed = _status(api, server_id, "ERROR")
            [create] = api.get(f"/servers/{server_id}/os-instance-actions").json()[
                "instanceActions"
            ]
            path = f"/servers/{server_id}/os-instance-actions/{create['request_id']}"
            events = api.get(path).json()["instanceAction"]["events"]
            [bad] = [e for e in events if e["result"] == "Error"]
            assert bad["details"] == failed["fault"]["message"]
            assert all(e["details"] is None for e in events if e["result"] != "Error")
            with compute(cloud, admin_token, "2.83") as old:
                assert all(
                    "details" not in e for e in old.get(path).json()["instanceAction"]["events"]
                )
            sdk = cloud.sdk()
            action = sdk.compute.get_server_action(create["request_id"], server_id)
            assert [e.details for e in action.events if e.result == "Error"] == [bad["details"]]
            api.delete(f"/servers/{server_id}")
    finally:
        cloud.openstack("flavor", "delete", flavor["id"])


@pytest.fixture
def server_with_volume(cloud: CloudRunner, admin_token, image):
    volume = _volume(cloud)
    with compute(cloud, admin_token, "2.79") as api:
        server = _boot(api, image)
        cloud.openstack("server", "add", "volume", server["id"], volume)
        _eventually(
            lambda: cloud.openstack("volume", "show", volume, "-f", "json")["status"] == "in-use",
            "the attachment",
        )
        yield server, volume
        if api.get(f"/servers/{server['id']}").status_code == 200:
            _delete(api, server["id"])
    if cloud.openstack("volume", "show", volume, check=False).returncode == 0:
        _eventually(
            lambda: (
                cloud.openstack("volume", "show", volume, "-f", "json")["status"] == "available"
            ),
            "the detach",
        )
        cloud.openstack("volume", "delete", volume)


def _service_user_token(cloud: CloudRunner) -> str:
    """A user with the admin and service roles, as a deployment's service users (what
    the Block Storage service calls Compute as)."""
    name, password = _name("svc"), "svc-secret-1"
    cloud.openstack("user", "create", "--password", password, name)
    if cloud.openstack("role", "show", "service", check=False).returncode != 0:
        cloud.openstack("role", "create", "service")
    for role in ("admin", "service"):
        cloud.openstack("role", "add", "--user", name, "--project", "admin", role)
    return cloud.token(name, password)


def test_2_85_delete_on_termination_changes(cloud: CloudRunner, admin_token, server_with_volume):
    server, volume = server_with_volume
    path = f"/servers/{server['id']}/os-volume_attachments/{volume}"
    elsewhere = str(uuid.uuid4())
    with compute(cloud, admin_token, "2.85") as api:
        with compute(cloud, admin_token, "2.84") as old:
            # Before 2.85 a PUT is a swap: the Block Storage service's call (service role).
            r = old.put(path, json={"volumeAttachment": {"volumeId": volume}})
            assert r.status_code == 403
        with compute(cloud, _service_user_token(cloud), "2.84") as service:
            unknown = f"/servers/{server['id']}/os-volume_attachments/{elsewhere}"
            r = service.put(unknown, json={"volumeAttachment": {"volumeId": volume}})
            assert r.status_code == 404
            # A direct swap (the volume is not migrating): 409, as Nova since bug 2112187.
            r = service.put(path, json={"volumeAttachment": {"volumeId": volume}})
            assert r.status_code == 409
            assert "should only be called by Cinder" in r.json()["conflictingRequest"]["message"]
        assert api.get(path).json()["volumeAttachment"]["delete_on_termination"] is False
        for immutable in ({"tag": "other"}, {"device": "/dev/vdz"}, {"serverId": elsewhere}):
            body = {"volumeAttachment": {"volumeId": volume, **immutable}}
            assert api.put(path, json=body).status_code == 400, immutable
        bad = {"volumeAttachment": {"volumeId": volume, "delete_on_termination": "maybe"}}
        assert api.put(path, json=bad).status_code == 400
        missing = api.put(
            f"/servers/{server['id']}/os-volume_attachments/{elsewhere}",
            json={"volumeAttachment": {"volumeId": elsewhere, "delete_on_termination": True}},
        )
        assert missing.status_code == 404
        shown = api.get(path).json()["volumeAttachment"]
        # What GET shows may be sent back (Nova's schema: the id is the volume's, a tag
        # is a string, so an untagged attachment's null tag is left out).
        echo = {k: v for k, v in shown.items() if v is not None}
        assert api.put(path, json={"volumeAttachment": {**echo, "tag": None}}).status_code == 400
        echo = {"volumeAttachment": {**echo, "delete_on_termination": True}}
        assert api.put(path, json=echo).status_code == 202
        assert api.get(path).json()["volumeAttachment"]["delete_on_termination"] is True
    # The CLI's `server volume update` (2.85) sets it back.
    cloud.openstack(
        "--os-compute-api-version", "2.85", "server", "volume", "update",
        "--preserve-on-termination", server["id"], volume,
    )  # fmt: skip
    with compute(cloud, admin_token, "2.85") as api:
        assert api.get(path).json()["volumeAttachment"]["delete_on_termination"] is False
        api.put(path, json={"volumeAttachment": {"volumeId": volume,
                                                  "delete_on_termination": True}})  # fmt: skip
        _delete(api, server["id"])
    # Deleting the server deleted the volume with it.
    _eventually(
        lambda: cloud.openstack("volume", "show", volume, check=False).returncode != 0,
        "the volume to go with its server",
    )


def test_2_89_attachments_show_their_ids(cloud: CloudRunner, admin_token, server_with_volume):
    server, volume = server_with_volume
    path = f"/servers/{server['id']}/os-volume_attachments"
    attachment = cloud.openstack("volume", "show", volume, "-f", "json")["attachments"][0]
    with compute(cloud, admin_token, "2.89") as api, compute(cloud, admin_token, "2.88") as old:
        [new] = api.get(path).json()["volumeAttachments"]
        assert "id" not in new and new["volumeId"] == volume
        assert new["attachment_id"] == attachment["attachment_id"]
        assert len(new["bdm_uuid"]) == 36
        assert api.get(f"{path}/{volume}").json()["volumeAttachment"] == new
        [before] = old.get(path).json()["volumeAttachments"]
        assert before["id"] == volume and "attachment_id" not in before
        assert "bdm_uuid" not in before
    sdk = cloud.sdk()
    [seen] = list(sdk.compute.volume_attachments(server["id"]))
    assert seen.attachment_id == attachment["attachment_id"] and seen.bdm_id == new["bdm_uuid"]
    # The attach answer kept its 2.79 shape at 2.89 (as Nova's api-ref shows it).
    second = _volume(cloud)
    with compute(cloud, admin_token, "2.89") as api:
        made = api.post(path, json={"volumeAttachment": {"volumeId": second}})
        assert made.status_code == 200
        body = made.json()["volumeAttachment"]
        assert body["id"] == second and "attachment_id" not in body and "bdm_uuid" not in body
        _eventually(
            lambda: cloud.openstack("volume", "show", second, "-f", "json")["status"] == "in-use",
            "the attach",
        )
        assert api.delete(f"{path}/{second}").status_code == 202
    _eventually(
        lambda: cloud.openstack("volume", "show", second, "-f", "json")["status"] == "available",
        "the detach",
    )
    cloud.openstack("volume", "delete", second)


def test_2_86_extra_specs_of_known_namespaces_are_checked(cloud: CloudRunner, admin_token):
    flavor = cloud.openstack("flavor", "create", _name("spec"), "--ram", "64", "--disk", "1",
                             "--vcpus", "1", "-f", "json")  # fmt: skip
    path = f"/flavors/{flavor['id']}/os-extra_specs"
    try:
        with compute(cloud, admin_token, "2.86") as api:
            with compute(cloud, admin_token, "2.85") as old:
                loose = {"hw:cpu_policy": "sometimes", "hw:no_such_thing": "1"}
                assert old.post(path, json={"extra_specs": loose}).status_code == 200
            for key, value in (
                ("hw:cpu_policy", "sometimes"),  # not one of its values
                ("hw:no_such_thing", "1"),  # unknown key of a known namespace
                ("hw:numa_nodes", "0"),  # under the minimum
                ("hw:cpu_realtime", "perhaps"),  # not a boolean
                ("resources:VCPU", "two"),  # not an integer
                ("resources:NO_SUCH_CLASS", "1"),
                ("trait:NO_SUCH_TRAIT", "required"),
                ("trait:HW_CPU_X86_AVX", "wanted"),
                ("group_policy", "all"),
            ):
                r = api.post(path, json={"extra_specs": {key: value}})
                assert r.status_code == 400, (key, value, r.text)
                assert "Validation failed" in r.json()["badRequest"]["message"]
            good = {
                "hw:cpu_policy": "dedicated",
                "hw:numa_nodes": "2",
                "hw:numa_cpus.0": "0-1,^1",
                "hw:numa_mem.1": "512",
                "resources1:VCPU": "2",
                "resources:CUSTOM_GPU": "1",
                "trait:HW_CPU_X86_AVX": "required",
                "trait_a:CUSTOM_FAST": "forbidden",
                "quota:disk_read_iops_sec": 100,
                "hw_rng:allowed": True,
                "capabilities:cpu_info:features": "<in> aes",
                "aggregate_instance_extra_specs:ssd": "true",
                "my_company:anything": "goes",  # unknown namespaces are left alone
                "no_namespace": "x",
            }
            assert api.post(path, json={"extra_specs": good}).status_code == 200
            put = api.put(f"{path}/hw:mem_page_size", json={"hw:mem_page_size": "enormous"})
            assert put.status_code == 400
            put = api.put(f"{path}/hw:mem_page_size", json={"hw:mem_page_size": "2MB"})
            assert put.status_code == 200
        refused = cloud.openstack(
            "--os-compute-api-version", "2.86", "flavor", "set", "--property",
            "hw:watchdog_action=explode", flavor["id"], check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "Validation failed" in refused.stderr
    finally:
        cloud.openstack("flavor", "delete", flavor["id"])


def test_2_87_volume_backed_servers_are_rescued(cloud, admin_token, image, tmp_path_factory):
    rescuer = _upload(cloud, tmp_path_factory, hw_rescue_bus="virtio", hw_rescue_device="disk")
    server = cloud.openstack(
        "server", "create", "--image", image, "--boot-from-volume", "1", "--flavor", "m1.nano",
        "--nic", "none", "--wait", _name("bfv"), "-f", "json",
    )  # fmt: skip
    action = f"/servers/{server['id']}/action"
    with compute(cloud, admin_token, "2.87") as api:
        with compute(cloud, admin_token, "2.86") as old:
            r = old.post(action, json={"rescue": {"rescue_image_ref": rescuer}})
            assert r.status_code == 400 and "volume-backed" in r.text
        # The rescue image must say how it is attached (hw_rescue_bus/device).
        r = api.post(action, json={"rescue": {"rescue_image_ref": image}})
        assert r.status_code == 400 and "volume-backed" in r.text
        assert api.post(action, json={"rescue": None}).status_code == 400
        r = api.post(action, json={"rescue": {"rescue_image_ref": rescuer}})
        assert r.status_code == 200 and r.json()["adminPass"]
        _status(api, server["id"], "RESCUE")
        assert api.post(action, json={"unrescue": None}).status_code == 202
        _status(api, server["id"], "ACTIVE")
        events = api.get(f"/servers/{server['id']}/os-instance-actions").json()
        assert {"rescue", "unrescue"} <= {a["action"] for a in events["instanceActions"]}
        [volume] = server["volumes_attached"]
        _delete(api, server["id"])
    _eventually(
        lambda: (
            cloud.openstack("volume", "show", volume["id"], "-f", "json")["status"] == "available"
        ),
        "the root volume's detach",
    )
    cloud.openstack("volume", "delete", volume["id"])


def test_2_88_hypervisors_lose_usage_and_gain_uptime(cloud: CloudRunner, admin_token):
    with compute(cloud, admin_token, "2.88") as api, compute(cloud, admin_token, "2.87") as old:
        [before] = old.get("/os-hypervisors/detail").json()["hypervisors"]
        assert before["vcpus"] > 0 and "cpu_info" in before and "uptime" not in before
        hid = before["id"]
        assert old.get("/os-hypervisors/statistics").status_code == 200
        assert "uptime" in old.get(f"/os-hypervisors/{hid}/uptime").json()["hypervisor"]
        [after] = api.get("/os-hypervisors/detail").json()["hypervisors"]
        removed = {
            "current_workload", "cpu_info", "vcpus", "vcpus_used", "free_disk_gb", "local_gb",
            "local_gb_used", "disk_available_least", "free_ram_mb", "memory_mb",
            "memory_mb_used", "running_vms",
        }  # fmt: skip
        assert not removed & set(after)
        assert "load average" in after["uptime"]
        assert set(after) - {"uptime"} == set(before) - removed
        shown = api.get(f"/os-hypervisors/{hid}").json()["hypervisor"]
        assert "load average" in shown["uptime"] and "vcpus" not in shown
        assert api.get("/os-hypervisors/statistics").status_code == 404
        assert api.get(f"/os-hypervisors/{hid}/uptime").status_code == 404
    # The CLI reads 2.88 as the SDK's newest hypervisor version.
    [listed] = cloud.openstack("hypervisor", "list", "-f", "json")
    shown = cloud.openstack("hypervisor", "show", listed["ID"], "-f", "json")
    assert shown["uptime"] and shown["load_average"]  # parsed from the 2.88 uptime field


def test_2_90_hostname_is_chosen_and_shown_to_members(cloud: CloudRunner, demo_token, image):
    with compute(cloud, demo_token, "2.90") as api, compute(cloud, demo_token, "2.89") as old:
        base = {"name": _name("named"), "flavorRef": "0", "imageRef": image, "networks": "none"}
        r = old.post("/servers", json={"server": {**base, "hostname": "chosen"}})
        assert r.status_code == 400
        for bad in ("-x", "a", "under_score", "x" * 64):
            r = api.post("/servers", json={"server": {**base, "hostname": bad}})
            assert r.status_code == 400, bad
        r = api.post("/servers", json={"server": {**base, "hostname": "two", "max_count": 2}})
        assert r.status_code == 400 and "single hostname" in r.text
        server = _boot(api, image, hostname="chosen-one")
        assert server["OS-EXT-SRV-ATTR:hostname"] == "chosen-one"
        before = old.get(f"/servers/{server['id']}").json()["server"]
        assert "OS-EXT-SRV-ATTR:hostname" not in before
        found = api.get("/servers", params={"hostname": "^chosen-"}).json()["servers"]
        assert server["id"] in [s["id"] for s in found]
        # 2.89: a member's hostname filter is dropped (the server is listed anyway).
        unfiltered = old.get("/servers", params={"hostname": "nothing"}).json()["servers"]
        assert server["id"] in [s["id"] for s in unfiltered]
        assert api.get("/servers", params={"hostname": "nothing"}).json()["servers"] == []

        assert old.put(f"/servers/{server['id']}",
                       json={"server": {"hostname": "renamed"}}).status_code == 400  # fmt: skip
        updated = api.put(f"/servers/{server['id']}", json={"server": {"hostname": "renamed"}})
        assert updated.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == "renamed"
        rebuilt = api.post(
            f"/servers/{server['id']}/action",
            json={"rebuild": {"imageRef": image, "hostname": "rebuilt"}},
        )
        assert rebuilt.status_code == 202
        assert rebuilt.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == "rebuilt"
        _status(api, server["id"], "ACTIVE")
        _delete(api, server["id"])
    # The CLI's --hostname (2.90).
    name = _name("cli")
    created = cloud.openstack(
        "--os-compute-api-version", "2.90", "server", "create", "--image", image, "--flavor",
        "m1.nano", "--nic", "none", "--hostname", "from-the-cli", "--wait", name, "-f", "json",
        cloud="cumulo-demo",
    )  # fmt: skip
    assert created["OS-EXT-SRV-ATTR:hostname"] == "from-the-cli"
    cloud.openstack("server", "delete", "--wait", name, cloud="cumulo-demo")


@pytest.fixture(scope="module")
def three_hosts(tmp_path_factory):
    """A cloud of its own with three fake compute hosts (for unshelving to a host)."""
    state = tmp_path_factory.mktemp("unshelve")
    configure_state_dir(state)
    config = load_config(state)
    config.compute.host = "mv-main"
    config.compute.fake_hosts = 2
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def test_2_91_unshelve_to_a_host_and_unpin_the_zone(three_hosts: CloudRunner, tmp_path_factory):
    cloud = three_hosts
    image = _upload(cloud, tmp_path_factory)
    main, zoned = "mv-main", "mv-main-fake2"
    aggregate = str(cloud.openstack(
        "aggregate", "create", "--zone", "az2", _name("agg"), "-f", "json")["id"])  # fmt: skip
    cloud.openstack("aggregate", "add", "host", aggregate, zoned)
    admin = cloud.token()
    with compute(cloud, admin, "2.91") as api, compute(cloud, admin, "2.90") as old:
        server = _boot(api, image, availability_zone="az2")
        assert server["OS-EXT-SRV-ATTR:host"] == zoned
        action = f"/servers/{server['id']}/action"
        assert api.post(action, json={"shelve": None}).status_code == 202
        _status(api, server["id"], "SHELVED_OFFLOADED")
        # 2.90: neither a host nor a null zone.
        assert old.post(action, json={"unshelve": {"host": main}}).status_code == 400
        assert old.post(action, json={"unshelve": {"availability_zone": None}}).status_code == 400
        with compute(cloud, cloud.token("demo", project="demo"), "2.91") as member:
            own = _boot(member, image)
            own_action = f"/servers/{own['id']}/action"
            assert member.post(own_action, json={"shelve": None}).status_code == 202
            _status(member, own["id"], "SHELVED_OFFLOADED")
            # Choosing the host is for admins (Nova's unshelve_to_host policy).
            refused = member.post(own_action, json={"unshelve": {"host": main}})
            assert refused.status_code == 403
            assert member.post(own_action, json={"unshelve": None}).status_code == 202
            _status(member, own["id"], "ACTIVE")
            _delete(member, own["id"])
        unknown = api.post(action, json={"unshelve": {"host": "no-such-host"}})
        assert unknown.status_code == 400
        # Pinned to az2 (where it was created): another zone's host is a conflict...
        pinned = api.post(action, json={"unshelve": {"host": main}})
        assert pinned.status_code == 409 and "az2" in pinned.text
        # ...unless the pin is removed with it.
        unpin = {"unshelve": {"availability_zone": None, "host": main}}
        assert api.post(action, json=unpin).status_code == 202
        moved = _status(api, server["id"], "ACTIVE")
        assert moved["OS-EXT-SRV-ATTR:host"] == main
        assert moved["OS-EXT-AZ:availability_zone"] == "nova"
        assert api.post(action, json={"shelve": None}).status_code == 202
        _status(api, server["id"], "SHELVED_OFFLOADED")
        assert api.post(action, json={"unshelve": {"host": zoned}}).status_code == 202
        assert _status(api, server["id"], "ACTIVE")["OS-EXT-SRV-ATTR:host"] == zoned
        _delete(api, server["id"])
    cloud.openstack("aggregate", "remove", "host", aggregate, zoned)
    cloud.openstack("aggregate", "delete", aggregate)


def test_2_92_key_pairs_are_imported_and_may_have_at_and_dot(cloud: CloudRunner, demo_token):
    name = f"me@example.{uuid.uuid4().hex[:6]}"
    with compute(cloud, demo_token, "2.92") as api, compute(cloud, demo_token, "2.91") as old:
        # 2.92: no more generated key pairs...
        generated = api.post("/os-keypairs", json={"keypair": {"name": _name("gen")}})
        assert generated.status_code == 400 and "public_key" in generated.text
        made = old.post("/os-keypairs", json={"keypair": {"name": (kept := _name("gen"))}})
        assert made.status_code == 201 and "private_key" in made.json()["keypair"]
        assert old.delete(f"/os-keypairs/{kept}").status_code == 204
        # ...and '@' and '.' in names, refused before.
        public = made.json()["keypair"]["public_key"]
        body = {"keypair": {"name": name, "public_key": public}}
        assert old.post("/os-keypairs", json=body).status_code == 400
        imported = api.post("/os-keypairs", json=body)
        assert imported.status_code == 201 and "private_key" not in imported.json()["keypair"]
        assert api.get(f"/os-keypairs/{name}").json()["keypair"]["name"] == name
        assert api.post("/os-keypairs", json={"keypair": {"name": "a/b", "public_key": public}}
                        ).status_code == 400  # fmt: skip
        assert api.delete(f"/os-keypairs/{name}").status_code == 204
    # The CLI at 2.92 makes the key itself and imports its public half.
    cli_name = f"cli.{uuid.uuid4().hex[:6]}@host"
    cloud.openstack(
        "--os-compute-api-version", "2.92", "keypair", "create", cli_name, cloud="cumulo-demo"
    )
    shown = cloud.openstack("keypair", "show", cli_name, "-f", "json", cloud="cumulo-demo")
    assert shown["name"] == cli_name
    cloud.openstack("keypair", "delete", cli_name, cloud="cumulo-demo")


def test_multiattach_volumes_need_2_60_and_then_take_two_servers(
    cloud: CloudRunner, admin_token, image
):
    """A volume of a multiattach type (Cinder's `<is> True`): refused below 2.60, as
    Nova refuses it to clients that may not expect a shared volume; from 2.60 two
    servers attach it."""
    kind = _name("ma")
    cloud.openstack("volume", "type", "create", "--property", "multiattach=<is> True", kind)
    shared = cloud.openstack("volume", "create", "--type", kind, "--size", "1", _name("v"),
                             "-f", "json")["id"]  # fmt: skip
    _eventually(
        lambda: cloud.openstack("volume", "show", shared, "-f", "json")["status"] == "available",
        "the volume",
    )
    with compute(cloud, admin_token, "2.59") as old, compute(cloud, admin_token, "2.60") as api:
        one, two = _boot(api, image), _boot(api, image)
        body = {"volumeAttachment": {"volumeId": shared}}
        refused = old.post(f"/servers/{one['id']}/os-volume_attachments", json=body)
        assert refused.status_code == 400
        assert "starting with compute API version 2.60" in refused.json()["badRequest"]["message"]
        for server in (one, two):
            made = api.post(f"/servers/{server['id']}/os-volume_attachments", json=body)
            assert made.status_code == 200, made.text
        _eventually(
            lambda: (
                len(cloud.openstack("volume", "show", shared, "-f", "json")["attachments"]) == 2
            ),
            "both attachments",
        )
        for server in (one, two):
            _delete(api, server["id"])


def test_assisted_volume_snapshots_are_for_the_service_role(
    cloud: CloudRunner, admin_token, server_with_volume
):
    """os-assisted-volume-snapshots: the host's driver (fake: it records the overlay)
    snapshots the attached volume and reports the snapshot's status to Block Storage."""
    server, volume = server_with_volume
    made = cloud.openstack(
        "volume",
        "snapshot",
        "create",
        "--volume",
        volume,
        _name("avs"),
        "-f",
        "json",
        "--os-volume-api-version",
        "3.66",
    )
    _eventually(
        lambda: (
            cloud.openstack("volume", "snapshot", "show", made["id"], "-f", "json")["status"]
            == "available"
        ),
        "the snapshot",
    )
    # As a file-based volume driver leaves it while the host takes the snapshot.
    cloud.openstack("volume", "snapshot", "set", "--state", "creating", made["id"])
    info = {"snapshot_id": made["id"], "type": "qcow2", "new_file": "volume-x.snap1"}
    body = {"snapshot": {"volume_id": volume, "create_info": info}}
    with compute(cloud, admin_token) as admin:
        assert admin.post("/os-assisted-volume-snapshots", json=body).status_code == 403
    with compute(cloud, _service_user_token(cloud)) as service:
        for bad in (
            {"snapshot": {"volume_id": volume, "create_info": {**info, "type": "vmdk"}}},
            {"snapshot": {"volume_id": volume, "create_info": {"type": "qcow2"}}},
            {"snapshot": {"volume_id": str(uuid.uuid4()), "create_info": info}},
        ):
            assert service.post("/os-assisted-volume-snapshots", json=bad).status_code == 400
        r = service.post("/os-assisted-volume-snapshots", json=body)
        assert r.status_code == 200, r.text
        assert r.json() == {"snapshot": {"id": None, "volumeId": volume}}

        sdk = cloud.sdk()

        def reported():
            shown = sdk.block_storage.get_snapshot(made["id"])
            return shown if shown.progress == "90%" else None

        # As Nova's libvirt driver reports a finished overlay: creating, 90%.
        assert _eventually(reported, "the status report").status == "creating"
        console = cloud.openstack("console", "log", "show", server["id"])
        assert f"volume {volume}: now writing to volume-x.snap1" in console
        path = f"/os-assisted-volume-snapshots/{made['id']}"
        assert service.delete(path).status_code == 400  # no delete_info
        deleted = service.delete(path, params={"delete_info": f'{{"volume_id": "{volume}"}}'})
        assert deleted.status_code == 204
        _eventually(
            lambda: (
                f"snapshot {made['id']} merged"
                in cloud.openstack("console", "log", "show", server["id"])
            ),
            "the merge",
        )
    cloud.openstack("volume", "snapshot", "set", "--state", "available", made["id"])
    cloud.openstack("volume", "snapshot", "delete", made["id"])
