"""Servers as a new user drives them: the openstack CLI and openstacksdk against the
all-in-one cloud (fake hypervisor, real Image and Network services)."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest

from cumulo.compute.api.microversion import MAX
from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    """A small public qcow2 image, as an admin would upload it."""
    path = tmp_path_factory.mktemp("img") / "tiny.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True, capture_output=True
    )
    created = cloud.openstack(
        "image",
        "create",
        _name("tiny"),
        "--file",
        str(path),
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--public",
        "-f",
        "json",
    )
    return created["id"]


def demo(cloud: CloudRunner, *args: str, check: bool = True):
    return cloud.openstack(*args, cloud="cumulo-demo", check=check)


def boot(cloud: CloudRunner, image: str, name: str, *extra: str, check: bool = True):
    """`server create --wait` of an m1.tiny on the private network, as the demo user."""
    return demo(
        cloud,
        "server",
        "create",
        "--image",
        image,
        "--flavor",
        "m1.tiny",
        "--network",
        "private",
        "--wait",
        name,
        *extra,
        check=check,
    )


def wait_status(cloud: CloudRunner, name: str, status: str, timeout: float = 30) -> dict:
    """Poll `server show` as a user would after an action the CLI does not wait for."""
    deadline = time.monotonic() + timeout
    while True:
        server = demo(cloud, "server", "show", name, "-f", "json")
        if server["status"] == status and server["OS-EXT-STS:task_state"] is None:
            return server
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {server['status']}, not {status}")
        time.sleep(0.2)


def test_server_lifecycle_with_the_cli(cloud: CloudRunner, image: str, tmp_path):
    name = _name("vm")
    key = _name("key")
    demo(cloud, "keypair", "create", key, "--private-key", str(tmp_path / "k.pem"))
    server = demo(
        cloud,
        "server",
        "create",
        "--image",
        image,
        "--flavor",
        "m1.tiny",
        "--network",
        "private",
        "--key-name",
        key,
        "--wait",
        name,
        "-f",
        "json",
    )
    assert server["status"] == "ACTIVE"
    assert server["key_name"] == key
    [address] = server["addresses"]["private"]
    ports = demo(cloud, "port", "list", "--server", server["id"], "-f", "json")
    assert [p["Fixed IP Addresses"][0]["ip_address"] for p in ports] == [address]
    # The host's network agent reports the port wired: ACTIVE, as Neutron shows it.
    for _ in range(50):
        if demo(cloud, "port", "show", ports[0]["ID"], "-f", "json")["status"] == "ACTIVE":
            break
        time.sleep(0.2)
    assert demo(cloud, "port", "show", ports[0]["ID"], "-f", "json")["status"] == "ACTIVE"

    listed = demo(cloud, "server", "list", "-f", "json")
    assert name in [s["Name"] for s in listed]
    assert "login:" in demo(cloud, "console", "log", "show", name)

    demo(cloud, "server", "stop", name)
    assert wait_status(cloud, name, "SHUTOFF")["OS-EXT-STS:power_state"] in (4, "Shutdown")
    demo(cloud, "server", "start", name)
    wait_status(cloud, name, "ACTIVE")
    demo(cloud, "server", "reboot", "--hard", "--wait", name)
    demo(cloud, "server", "pause", name)
    assert wait_status(cloud, name, "PAUSED")["OS-EXT-STS:power_state"] in (3, "Paused")
    demo(cloud, "server", "unpause", name)
    wait_status(cloud, name, "ACTIVE")

    events = demo(cloud, "server", "event", "list", name, "-f", "json")
    actions = [e["Action"] for e in events]
    for action in ("create", "stop", "start", "reboot", "pause", "unpause"):
        assert action in actions

    demo(cloud, "server", "delete", "--wait", name)
    assert demo(cloud, "server", "show", name, check=False).returncode != 0
    assert demo(cloud, "port", "list", "--device-id", server["id"], "-f", "json") == []


def test_boot_walks_the_task_states_in_order(cloud: CloudRunner, image: str):
    name = _name("states")
    server = boot(cloud, image, name, "-f", "json")
    [create] = [
        e
        for e in demo(cloud, "server", "event", "list", name, "-f", "json")
        if e["Action"] == "create"
    ]
    detail = cloud.openstack(
        "server", "event", "show", server["id"], create["Request ID"], "-f", "json"
    )
    events = [e["event"] for e in detail["events"]]
    assert events == [
        "conductor_build_instances",
        "compute_build_and_run_instance",
        "compute_networking",
        "compute_spawning",
    ]
    assert all(e["result"] == "Success" for e in detail["events"])
    demo(cloud, "server", "delete", "--wait", name)


def test_sdk_create_wait_delete(cloud: CloudRunner, image: str):
    conn = cloud.sdk("cumulo-demo")
    network = conn.network.find_network("private")
    flavor = conn.compute.find_flavor("m1.tiny")
    server = conn.compute.create_server(
        name=_name("sdk"), image_id=image, flavor_id=flavor.id, networks=[{"uuid": network.id}]
    )
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60)
    assert server.addresses["private"]
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=60)


def test_action_in_the_wrong_state_is_409(cloud: CloudRunner, image: str):
    name = _name("wrong-state")
    boot(cloud, image, name)
    demo(cloud, "server", "stop", name)
    wait_status(cloud, name, "SHUTOFF")
    result = demo(cloud, "server", "pause", name, check=False)
    assert result.returncode != 0 and "409" in result.stderr
    assert "vm_state stopped" in result.stderr
    demo(cloud, "server", "delete", "--wait", name)


def test_another_projects_server_is_404(cloud: CloudRunner, image: str):
    name = _name("private-to-admin")
    server = cloud.openstack(
        "server",
        "create",
        "--image",
        image,
        "--flavor",
        "m1.tiny",
        "--network",
        "public",
        "--wait",
        name,
        "-f",
        "json",
    )
    with cloud.http(cloud.token("demo", project="demo")) as client:
        url = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}"
        r = client.get(url)
        assert r.status_code == 404
        assert r.json()["itemNotFound"]["code"] == 404
        assert client.delete(url).status_code == 404
    cloud.openstack("server", "delete", "--wait", name)


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"flavorRef": "no-such-flavor"}, 400, "Flavor no-such-flavor could not be found"),
        ({"imageRef": str(uuid.uuid4())}, 400, "could not be found"),
        ({"networks": [{"uuid": str(uuid.uuid4())}]}, 400, "could not be found"),
        ({"name": "n" * 256}, 400, "name"),
        ({"metadata": {"k": "v" * 256}}, 400, "metadata"),
        ({"networks": None}, 400, "networks"),
        ({"key_name": "no-such-key"}, 400, "Invalid key_name provided."),
        ({"user_data": "not base64!"}, 400, "base 64"),
    ],
)
def test_bad_create_requests(cloud: CloudRunner, image: str, change, status, text):
    network = cloud.openstack("network", "show", "private", "-f", "json", cloud="cumulo-demo")
    body = {
        "name": _name("bad"),
        "imageRef": image,
        "flavorRef": "1",
        "networks": [{"uuid": network["id"]}],
        **change,
    }
    body = {k: v for k, v in body.items() if v is not None}
    token = cloud.token("demo", project="demo")
    with cloud.http(token) as client:
        before = client.get(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers",
            headers={"OpenStack-API-Version": "compute 2.79"},
        ).json()
        r = client.post(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers",
            json={"server": body},
            headers={"OpenStack-API-Version": "compute 2.79"},
        )
        after = client.get(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers",
            headers={"OpenStack-API-Version": "compute 2.79"},
        ).json()
    assert r.status_code == status, r.text
    [(key, err)] = r.json().items()
    assert err["code"] == status and text in err["message"]
    assert before == after  # nothing half-written


def test_unsupported_microversion_is_406(cloud: CloudRunner):
    with cloud.http(cloud.token()) as client:
        r = client.get(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers",
            headers={"OpenStack-API-Version": "compute 2.999"},
        )
    assert r.status_code == 406
    assert f"maximum is {MAX}" in r.json()["computeFault"]["message"]


def test_resize_confirm_and_revert(cloud: CloudRunner, image: str):
    name = _name("resize")
    boot(cloud, image, name)
    demo(cloud, "server", "resize", "--flavor", "m1.small", "--wait", name)
    resized = wait_status(cloud, name, "VERIFY_RESIZE")
    assert resized["flavor"]["name"] == "m1.small"
    demo(cloud, "server", "resize", "confirm", name)
    assert wait_status(cloud, name, "ACTIVE")["flavor"]["name"] == "m1.small"

    demo(cloud, "server", "resize", "--flavor", "m1.medium", "--wait", name)
    wait_status(cloud, name, "VERIFY_RESIZE")
    demo(cloud, "server", "resize", "revert", name)
    assert wait_status(cloud, name, "ACTIVE")["flavor"]["name"] == "m1.small"
    # Same flavor again: the api-ref's 400.
    same = demo(cloud, "server", "resize", "--flavor", "m1.small", name, check=False)
    assert same.returncode != 0 and "must change flavor" in same.stderr
    demo(cloud, "server", "delete", "--wait", name)


def test_rebuild_keeps_the_server_and_its_address(cloud: CloudRunner, image: str, tmp_path):
    name = _name("rebuild")
    before = boot(cloud, image, name, "-f", "json")
    path = tmp_path / "other.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "32M"], check=True, capture_output=True
    )
    other = cloud.openstack(
        "image",
        "create",
        _name("other"),
        "--file",
        str(path),
        "--disk-format",
        "qcow2",
        "--public",
        "-f",
        "json",
    )
    demo(cloud, "server", "rebuild", "--image", other["id"], "--wait", name)
    after = wait_status(cloud, name, "ACTIVE")
    assert after["id"] == before["id"] and after["addresses"] == before["addresses"]
    assert other["id"] in after["image"]
    demo(cloud, "server", "delete", "--wait", name)


def test_server_image_create(cloud: CloudRunner, image: str):
    name = _name("snap-src")
    boot(cloud, image, name)
    snap = demo(
        cloud, "server", "image", "create", "--name", _name("snap"), "--wait", name, "-f", "json"
    )
    shown = demo(cloud, "image", "show", snap["id"], "-f", "json")
    assert shown["status"] == "active" and shown["disk_format"] == "qcow2"
    assert shown["properties"]["image_type"] == "snapshot"
    original = cloud.openstack("image", "show", image, "-f", "json")
    assert shown["checksum"] == original["checksum"]  # the fake disk is the base image's bytes
    demo(cloud, "image", "delete", snap["id"])
    demo(cloud, "server", "delete", "--wait", name)


def test_server_add_and_remove_volume(cloud: CloudRunner, image: str):
    name = _name("with-volume")
    boot(cloud, image, name)
    volume = demo(cloud, "volume", "create", "--size", "1", _name("vol"), "-f", "json")
    for _ in range(100):
        if demo(cloud, "volume", "show", volume["id"], "-f", "json")["status"] == "available":
            break
        time.sleep(0.2)
    demo(cloud, "server", "add", "volume", name, volume["id"])
    for _ in range(100):
        shown = demo(cloud, "volume", "show", volume["id"], "-f", "json")
        if shown["status"] == "in-use":
            break
        time.sleep(0.2)
    assert shown["status"] == "in-use"
    [attachment] = shown["attachments"]
    assert attachment["device"] == "/dev/vdb"
    server = demo(cloud, "server", "show", name, "-f", "json")
    assert [v["id"] for v in server["volumes_attached"]] == [volume["id"]]
    assert "attached" in demo(cloud, "console", "log", "show", name)

    again = demo(cloud, "server", "add", "volume", name, volume["id"], check=False)
    assert again.returncode != 0 and "400" in again.stderr or "already" in again.stderr

    # Growing the attached volume: Block Storage tells Compute (volume-extended), the
    # server records an extend_volume action and the guest sees the new capacity.
    demo(cloud, "--os-volume-api-version", "3.42", "volume", "set", "--size", "2", volume["id"])
    for _ in range(100):
        shown = demo(cloud, "volume", "show", volume["id"], "-f", "json")
        actions = demo(cloud, "server", "event", "list", name, "-f", "json")
        if shown["size"] == 2 and any(a["Action"] == "extend_volume" for a in actions):
            break
        time.sleep(0.2)
    assert shown["size"] == 2 and shown["status"] == "in-use"
    extend = next(a for a in actions if a["Action"] == "extend_volume")
    for _ in range(100):
        events = demo(
            cloud, "server", "event", "show", server["id"], extend["Request ID"], "-f", "json"
        )
        if events["events"] and events["events"][0].get("result"):
            break
        time.sleep(0.2)
    assert [(e["event"], e["result"]) for e in events["events"]] == [
        ("compute_extend_volume", "Success")
    ]
    assert "capacity change" in demo(cloud, "console", "log", "show", name)

    demo(cloud, "server", "remove", "volume", name, volume["id"])
    for _ in range(100):
        if demo(cloud, "volume", "show", volume["id"], "-f", "json")["status"] == "available":
            break
        time.sleep(0.2)
    assert demo(cloud, "volume", "show", volume["id"], "-f", "json")["attachments"] == []
    demo(cloud, "volume", "delete", volume["id"])
    demo(cloud, "server", "delete", "--wait", name)


def test_lock_keeps_a_member_from_acting_until_unlocked(cloud: CloudRunner, image: str):
    name = _name("locked")
    server = boot(cloud, image, name, "-f", "json")
    cloud.openstack("server", "lock", server["id"])  # by the admin
    shown = demo(cloud, "server", "show", name, "-f", "json")
    assert shown["locked"] is True
    refused = demo(cloud, "server", "stop", name, check=False)
    assert refused.returncode != 0 and "409" in refused.stderr and "locked" in refused.stderr
    not_mine = demo(cloud, "server", "unlock", name, check=False)
    assert not_mine.returncode != 0 and "403" in not_mine.stderr
    cloud.openstack("server", "unlock", server["id"])
    demo(cloud, "server", "stop", name)
    wait_status(cloud, name, "SHUTOFF")
    demo(cloud, "server", "delete", "--wait", name)


def test_flavor_too_small_for_the_image_is_400(cloud: CloudRunner, tmp_path):
    path = tmp_path / "big.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True
    )
    big = cloud.openstack(
        "image",
        "create",
        _name("needs-ram"),
        "--file",
        str(path),
        "--disk-format",
        "qcow2",
        "--public",
        "--min-ram",
        "4096",
        "-f",
        "json",
    )
    result = demo(
        cloud,
        "server",
        "create",
        "--image",
        big["id"],
        "--flavor",
        "m1.tiny",
        "--network",
        "private",
        _name("too-small"),
        check=False,
    )
    assert result.returncode != 0 and "400" in result.stderr
    assert "Flavor's memory is too small for requested image" in result.stderr
    cloud.openstack("image", "delete", big["id"])


def test_flavor_and_image_asking_secure_boot_differently_is_400(cloud: CloudRunner, tmp_path):
    """Nova's FlavorImageConflict: the flavor's os:secure_boot against the image's
    os_secure_boot, refused before anything is built."""
    path = tmp_path / "uefi.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True
    )
    image = cloud.openstack(
        "image", "create", _name("no-secboot"), "--file", str(path), "--disk-format", "qcow2",
        "--public", "--property", "hw_firmware_type=uefi", "--property",
        "os_secure_boot=disabled", "-f", "json",
    )  # fmt: skip
    flavor = _name("secboot")
    cloud.openstack("flavor", "create", flavor, "--ram", "512", "--disk", "1", "--vcpus", "1")
    cloud.openstack("flavor", "set", flavor, "--property", "os:secure_boot=required")
    try:
        result = demo(
            cloud, "server", "create", "--image", image["id"], "--flavor", flavor,
            "--network", "private", _name("conflict"), check=False,
        )  # fmt: skip
        assert result.returncode != 0 and "400" in result.stderr
        assert (
            "Conflicting values for secure_boot found in the flavor (required) and the image "
            "(disabled)."
        ) in result.stderr
        assert not demo(cloud, "server", "list", "--name", "conflict", "-f", "json")
    finally:
        cloud.openstack("flavor", "delete", flavor)
        cloud.openstack("image", "delete", image["id"])


def test_quota_exceeded_is_403_and_creates_nothing(cloud: CloudRunner, image: str):
    servers_before = demo(cloud, "server", "list", "-f", "json")
    cloud.openstack("quota", "set", "--instances", str(len(servers_before)), "demo")
    try:
        result = demo(
            cloud,
            "server",
            "create",
            "--image",
            image,
            "--flavor",
            "m1.tiny",
            "--network",
            "private",
            _name("over-quota"),
            check=False,
        )
        assert result.returncode != 0 and "403" in result.stderr
        assert "Quota exceeded for instances" in result.stderr
        assert demo(cloud, "server", "list", "-f", "json") == servers_before
    finally:
        cloud.openstack("quota", "set", "--instances", "10", "demo")


def test_boot_from_volume(cloud: CloudRunner, image: str):
    name = _name("bfv")
    server = demo(
        cloud,
        "server",
        "create",
        "--image",
        image,
        "--boot-from-volume",
        "1",
        "--flavor",
        "m1.tiny",
        "--network",
        "private",
        "--wait",
        name,
        "-f",
        "json",
    )
    assert server["status"] == "ACTIVE"
    assert server["image"] in ("", "N/A (booted from volume)") or not server["image"]
    [attached] = server["volumes_attached"]
    volume = demo(cloud, "volume", "show", attached["id"], "-f", "json")
    assert volume["status"] == "in-use" and volume["bootable"] in (True, "true")
    assert volume["attachments"][0]["server_id"] == server["id"]
    assert volume["volume_image_metadata"]["image_id"] == image
    demo(cloud, "server", "delete", "--wait", name)
    # Not delete_on_termination: the volume stays, detached.
    for _ in range(100):
        if demo(cloud, "volume", "show", attached["id"], "-f", "json")["status"] == "available":
            break
        time.sleep(0.2)
    assert demo(cloud, "volume", "show", attached["id"], "-f", "json")["attachments"] == []
    demo(cloud, "volume", "delete", attached["id"])


def test_boot_from_volume_needs_a_size(cloud: CloudRunner, image: str):
    network = cloud.openstack("network", "show", "private", "-f", "json", cloud="cumulo-demo")
    with cloud.http(cloud.token("demo", project="demo")) as client:
        r = client.post(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers",
            headers={"OpenStack-API-Version": "compute 2.79"},
            json={
                "server": {
                    "name": _name("bfv-bad"),
                    "flavorRef": "1",
                    "networks": [{"uuid": network["id"]}],
                    "block_device_mapping_v2": [
                        {
                            "source_type": "image",
                            "destination_type": "volume",
                            "uuid": image,
                            "boot_index": 0,
                        }
                    ],
                }
            },
        )
    assert r.status_code == 400 and "volume_size" in r.json()["badRequest"]["message"]


def test_a_mapping_asks_for_its_disk_bus_and_device_type(cloud: CloudRunner, image: str):
    """Nova's disk_bus and device_type: an unknown one is 400 before anything is made;
    a volume as a lun on the scsi bus is recorded and named as the guest sees SCSI disks."""
    network = cloud.openstack("network", "show", "private", "-f", "json", cloud="cumulo-demo")
    volume = demo(cloud, "volume", "create", "--size", "1", _name("lun"), "-f", "json")["id"]
    base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers"

    def boot(**mapping) -> httpx.Response:
        bdm = [
            {"source_type": "image", "destination_type": "local", "uuid": image, "boot_index": 0},
            {"source_type": "volume", "destination_type": "volume", "uuid": volume, **mapping},
        ]
        server = {"name": _name("lun"), "flavorRef": "1", "networks": [{"uuid": network["id"]}],
                  "block_device_mapping_v2": bdm}  # fmt: skip
        with cloud.http(cloud.token("demo", project="demo")) as client:
            return client.post(base, json={"server": server})

    for _ in range(100):
        if demo(cloud, "volume", "show", volume, "-f", "json")["status"] == "available":
            break
        time.sleep(0.2)
    refused = boot(device_type="tape")
    assert refused.status_code == 400
    assert refused.json()["badRequest"]["message"].startswith(
        "Invalid input for field/attribute device_type. Value: tape."
    )
    assert boot(disk_bus="parallel").status_code == 400
    made = boot(device_type="lun", disk_bus="scsi")
    assert made.status_code == 202, made.text
    server = made.json()["server"]["id"]
    for _ in range(150):
        shown = demo(cloud, "server", "show", server, "-f", "json")
        if shown["status"] != "BUILD":
            break
        time.sleep(0.2)
    assert shown["status"] == "ACTIVE"
    with cloud.http(cloud.token("demo", project="demo")) as client:
        [attachment] = client.get(f"{base}/{server}/os-volume_attachments").json()[
            "volumeAttachments"
        ]
    assert (attachment["volumeId"], attachment["device"]) == (volume, "/dev/sda")
    demo(cloud, "server", "delete", "--wait", server)
    for _ in range(100):
        if demo(cloud, "volume", "show", volume, "-f", "json")["status"] == "available":
            break
        time.sleep(0.2)
    demo(cloud, "volume", "delete", volume)


def test_delete_right_after_create_always_wins(cloud: CloudRunner, image: str):
    """A delete that lands while the build moves from one step to the next is 204."""
    network = cloud.openstack("network", "show", "private", "-f", "json", cloud="cumulo-demo")
    base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers"
    with cloud.http(cloud.token("demo", project="demo")) as client:
        ids = []
        for i in range(8):
            made = client.post(
                base,
                json={"server": {"name": _name(f"race{i}"), "flavorRef": "1", "imageRef": image,
                                 "networks": [{"uuid": network["id"]}]}},
            )  # fmt: skip
            assert made.status_code == 202
            ids.append(made.json()["server"]["id"])
            time.sleep(0.05 * i)  # each delete lands at another step of its build
            assert client.delete(f"{base}/{ids[-1]}").status_code == 204
        for server_id in ids:
            for _ in range(100):
                if client.get(f"{base}/{server_id}").status_code == 404:
                    break
                time.sleep(0.2)
            assert client.get(f"{base}/{server_id}").status_code == 404


def test_bad_block_device_mappings_are_400_and_make_nothing(cloud: CloudRunner, image: str):
    """A volume that is not bootable, and a mapping to an unknown destination."""
    plain = demo(cloud, "volume", "create", "--size", "1", _name("plain"), "-f", "json")
    for _ in range(100):
        if demo(cloud, "volume", "show", plain["id"], "-f", "json")["status"] == "available":
            break
        time.sleep(0.2)
    before = demo(cloud, "server", "list", "-f", "json")
    refused = demo(
        cloud, "server", "create", "--volume", plain["id"], "--flavor", "m1.tiny",
        "--network", "private", _name("nonboot"), check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "is not bootable" in refused.stderr
    network = cloud.openstack("network", "show", "private", "-f", "json", cloud="cumulo-demo")
    with cloud.http(cloud.token("demo", project="demo")) as client:
        r = client.post(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers",
            headers={"OpenStack-API-Version": "compute 2.79"},
            json={
                "server": {
                    "name": _name("bdm-bad"),
                    "flavorRef": "1",
                    "imageRef": image,
                    "networks": [{"uuid": network["id"]}],
                    "block_device_mapping_v2": [
                        {"source_type": "image", "destination_type": "local", "uuid": image,
                         "boot_index": 0, "delete_on_termination": True},
                        {"source_type": "volume", "uuid": plain["id"],
                         "destination_type": "invalid"},
                    ],
                }
            },
        )  # fmt: skip
    assert r.status_code == 400 and "destination_type" in r.json()["badRequest"]["message"]
    assert demo(cloud, "server", "list", "-f", "json") == before
    assert demo(cloud, "volume", "show", plain["id"], "-f", "json")["status"] == "available"
    demo(cloud, "volume", "delete", plain["id"])


def test_console_url_diagnostics_password_and_change_password(cloud: CloudRunner, image: str):
    name = _name("extras")
    server = boot(cloud, image, name, "-f", "json")
    url = demo(cloud, "console", "url", "show", "--novnc", name, "-f", "json")
    assert url["type"] == "novnc" and "vnc_lite.html?path=%3Ftoken%3D" in url["url"]
    # Diagnostics are for admins.
    refused = demo(cloud, "server", "show", "--diagnostics", name, check=False)
    assert refused.returncode != 0 and "not authorized" in refused.stderr
    diag = cloud.openstack("server", "show", "--diagnostics", server["id"], "-f", "json")
    assert diag["state"] == "running" and diag["num_cpus"] == 1 and diag["num_nics"] == 1
    assert diag["memory_details"]["maximum"] == 512
    # No password posted by the guest yet; the fake hypervisor takes a new one.
    with cloud.http(cloud.token("demo", project="demo")) as client:
        base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}"
        assert client.get(f"{base}/os-server-password").json() == {"password": ""}
        assert client.delete(f"{base}/os-server-password").status_code == 204
        r = client.post(f"{base}/action", json={"changePassword": {"adminPass": "n3w-pass"}})
        assert r.status_code == 202, r.text
        r = client.post(f"{base}/action", json={"changePassword": {}})
        assert r.status_code == 400
    events = [e["Action"] for e in demo(cloud, "server", "event", "list", name, "-f", "json")]
    assert "changePassword" in events
    demo(cloud, "server", "delete", "--wait", name)


def test_add_and_remove_a_network_interface(cloud: CloudRunner, image: str):
    name = _name("nics")
    server = boot(cloud, image, name, "-f", "json")
    net = demo(cloud, "network", "create", _name("second"), "-f", "json")
    demo(
        cloud,
        "subnet",
        "create",
        "--network",
        net["id"],
        "--subnet-range",
        "192.168.77.0/24",
        _name("second-subnet"),
    )
    demo(cloud, "server", "add", "network", name, net["id"])
    shown = demo(cloud, "server", "show", name, "-f", "json")
    [second] = shown["addresses"][net["name"]]
    assert second.startswith("192.168.77.")
    ports = demo(cloud, "port", "list", "--device-id", server["id"], "-f", "json")
    assert len(ports) == 2
    with cloud.http(cloud.token("demo", project="demo")) as client:
        url = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}"
        attachments = client.get(f"{url}/os-interface").json()["interfaceAttachments"]
    assert len(attachments) == 2 and net["id"] in {a["net_id"] for a in attachments}
    assert "hot-plugged" in demo(cloud, "console", "log", "show", name)
    demo(cloud, "server", "remove", "network", name, net["id"])
    for _ in range(100):
        if len(demo(cloud, "port", "list", "--device-id", server["id"], "-f", "json")) == 1:
            break
        time.sleep(0.2)
    assert net["name"] not in demo(cloud, "server", "show", name, "-f", "json")["addresses"]
    demo(cloud, "server", "delete", "--wait", name)
    demo(cloud, "network", "delete", net["id"])


def test_add_and_remove_a_security_group(cloud: CloudRunner, image: str):
    """`server add/remove security group` change the groups on the server's ports."""
    name = _name("groups")
    server = boot(cloud, image, name, "-f", "json")
    group = demo(cloud, "security", "group", "create", _name("web"), "-f", "json")

    def port_groups() -> list[str]:
        [port] = demo(cloud, "port", "list", "--device-id", server["id"], "-f", "json", "--long")
        return port["Security Groups"]

    demo(cloud, "server", "add", "security", "group", name, group["name"])
    assert group["id"] in port_groups()
    shown = demo(cloud, "server", "show", name, "-f", "json")
    assert {"name": group["name"]} in shown["security_groups"]
    with cloud.http(cloud.token("demo", project="demo")) as client:
        url = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}"
        listed = client.get(f"{url}/os-security-groups").json()["security_groups"]
        assert {g["name"] for g in listed} == {"default", group["name"]}
        # Adding it again is 400; an unknown group is 404 — and nothing changes.
        again = client.post(f"{url}/action", json={"addSecurityGroup": {"name": group["name"]}})
        assert again.status_code == 400, again.text
        assert "already associated" in again.json()["badRequest"]["message"]
        unknown = client.post(f"{url}/action", json={"addSecurityGroup": {"name": "nope"}})
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["itemNotFound"]["message"].startswith("Security group nope")

    demo(cloud, "server", "remove", "security", "group", name, group["name"])
    assert group["id"] not in port_groups()
    shown = demo(cloud, "server", "show", name, "-f", "json")
    assert {"name": group["name"]} not in shown["security_groups"]
    with cloud.http(cloud.token("demo", project="demo")) as client:
        gone = client.post(f"{url}/action", json={"removeSecurityGroup": {"name": group["name"]}})
        assert gone.status_code == 400 and "not associated" in gone.text
    demo(cloud, "server", "delete", "--wait", name)
    demo(cloud, "security", "group", "delete", group["id"])


def test_admin_resets_a_server_state(cloud: CloudRunner, image: str):
    name = _name("reset")
    server = boot(cloud, image, name, "-f", "json")
    refused = demo(cloud, "server", "set", "--auto-approve", "--state", "error", name, check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    cloud.openstack("server", "set", "--auto-approve", "--state", "error", server["id"])
    shown = demo(cloud, "server", "show", name, "-f", "json")
    assert shown["status"] == "ERROR" and shown["OS-EXT-STS:task_state"] is None
    cloud.openstack("server", "set", "--auto-approve", "--state", "active", server["id"])
    assert demo(cloud, "server", "show", name, "-f", "json")["status"] == "ACTIVE"
    events = demo(cloud, "server", "event", "list", name, "-f", "json")
    assert "resetState" in {e["Action"] for e in events}
    with cloud.http(cloud.token("admin", project="admin")) as client:
        url = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}"
        bad = client.post(f"{url}/action", json={"os-resetState": {"state": "paused"}})
        assert bad.status_code == 400, bad.text
    demo(cloud, "server", "delete", "--wait", name)


def test_server_backups_rotate(cloud: CloudRunner, image: str):
    """createBackup: backup images of a type, older ones beyond --rotate deleted."""
    name = _name("backups")
    server = boot(cloud, image, name, "-f", "json")

    def backups() -> list[str]:
        listed = demo(
            cloud, "image", "list", "--property", f"instance_uuid={server['id']}",
            "--property", "image_type=backup", "--long", "-f", "json",
        )  # fmt: skip
        return sorted(i["ID"] for i in listed)

    made = []
    for i in range(2):
        backup = demo(
            cloud, "server", "backup", "create", "--name", f"{name}-{i}", "--type", "daily",
            "--rotate", "1", "--wait", name, "-f", "json",
        )  # fmt: skip
        made.append(backup["id"])
        wait_status(cloud, name, "ACTIVE")
    deadline = time.monotonic() + 30
    while backups() != sorted(made[1:]):  # the oldest goes once the newest is active
        assert time.monotonic() < deadline, f"backups {backups()} are not {made[1:]}"
        time.sleep(0.3)
    shown = demo(cloud, "image", "show", made[-1], "-f", "json")
    assert shown["properties"]["image_type"] == "backup"
    assert shown["properties"]["backup_type"] == "daily"
    with cloud.http(cloud.token("demo", project="demo")) as client:
        url = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}/action"
        bad = client.post(url, json={"createBackup": {"name": "x", "backup_type": "daily"}})
        assert bad.status_code == 400 and "rotation" in bad.text
        # rotation 0: no new image, every backup of the type rotated out.
        none = client.post(
            url, json={"createBackup": {"name": "x", "backup_type": "daily", "rotation": 0}}
        )
        assert none.status_code == 202, none.text
    assert backups() == []
    demo(cloud, "server", "delete", "--wait", name)
