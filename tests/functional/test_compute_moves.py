"""Moving servers with the real `openstack` CLI, on a cloud of its own with three fake
compute hosts: shelve / offload / unshelve, rescue, cold migrate and resize to another
host (confirm, revert), live migration, evacuate, and the migration records
(`server migration list`, GET /os-migrations) they leave."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir

MAIN = "moves-main"
HOSTS = {MAIN, f"{MAIN}-fake1", f"{MAIN}-fake2"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("moves")
    configure_state_dir(state)
    config = load_config(state)
    config.compute.host = MAIN
    config.compute.fake_hosts = 2
    config.compute.report_interval = 0.5
    config.compute.service_down_time = 3
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)
    created = cloud.openstack(
        "image", "create", "moves-img", "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    return created["id"]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def boot(cloud: CloudRunner, image: str, *extra: str) -> dict:
    return cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.nano", "--nic", "none",
        *extra, "--wait", _name("mv"), "-f", "json",
    )  # fmt: skip


def wait_status(cloud: CloudRunner, server: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = cloud.openstack("server", "show", server, "-f", "json")
        if shown["status"] == status and shown["OS-EXT-STS:task_state"] is None:
            return shown
        if shown["status"] == "ERROR" or time.monotonic() > deadline:
            raise AssertionError(f"{server} is {shown['status']}/{shown['OS-EXT-STS:task_state']}")
        time.sleep(0.2)


def wait_volume(cloud: CloudRunner, volume: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (shown := cloud.openstack("volume", "show", volume, "-f", "json"))["status"] != status:
        assert time.monotonic() < deadline, f"volume {volume} is {shown['status']}, not {status}"
        time.sleep(0.3)


def actions(cloud: CloudRunner, server: str) -> list[str]:
    rows = cloud.openstack("server", "event", "list", server, "-f", "json")
    return [row["Action"] for row in rows]


def test_shelve_offloads_and_unshelve_schedules_it_again(cloud, image):
    server = boot(cloud, image)
    cloud.openstack("server", "shelve", "--wait", server["id"])
    shelved = wait_status(cloud, server["id"], "SHELVED_OFFLOADED")
    assert shelved["OS-EXT-SRV-ATTR:host"] is None
    assert shelved["OS-EXT-STS:power_state"] in (0, "NOSTATE")
    snapshot = cloud.openstack("image", "show", f"{server['name']}-shelved", "-f", "json")
    assert snapshot["status"] == "active"
    assert snapshot["properties"]["instance_uuid"] == server["id"]

    # 2.77: into a zone (the only one here); a shelved-only server would refuse it.
    cloud.openstack(
        "--os-compute-api-version", "2.77", "server", "unshelve", "--availability-zone",
        "nova", "--wait", server["id"],
    )  # fmt: skip
    active = wait_status(cloud, server["id"], "ACTIVE")
    assert active["OS-EXT-SRV-ATTR:host"] in HOSTS
    images = cloud.openstack("image", "list", "--name", f"{server['name']}-shelved", "-f", "json")
    assert images == []  # the snapshot goes once the server is back
    assert actions(cloud, server["id"])[:2] == ["unshelve", "shelve"]
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_rescue_boots_another_image_and_unrescue_comes_back(cloud, image):
    server = boot(cloud, image)
    cloud.openstack("server", "rescue", "--image", image, "--password", "s3cret", server["id"])
    rescued = wait_status(cloud, server["id"], "RESCUE")
    assert rescued["OS-EXT-STS:vm_state"] == "rescued"
    console = cloud.openstack("console", "log", "show", server["id"])
    assert f"rescue: booted image {image}" in console
    refused = cloud.openstack("server", "stop", server["id"], check=False)
    assert refused.returncode != 0 and "409" in refused.stderr
    cloud.openstack("server", "unrescue", server["id"])
    wait_status(cloud, server["id"], "ACTIVE")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_a_stable_device_rescue_keeps_the_disks_in_place(cloud, image, tmp_path):
    """A rescue image naming hw_rescue_bus/hw_rescue_device (Nova's stable device rescue)
    is attached last on that bus; what no guest could attach is refused up front (400)."""
    path = tmp_path / "rescue.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)

    def rescue_image(name: str, *properties: str) -> str:
        return cloud.openstack(
            "image", "create", _name(name), "--file", str(path), "--disk-format", "qcow2",
            "--container-format", "bare", *properties, "-f", "json",
        )["id"]  # fmt: skip

    server = boot(cloud, image)
    cdrom = rescue_image("cd", "--property", "hw_rescue_device=cdrom")
    cloud.openstack("server", "rescue", "--image", cdrom, server["id"])
    wait_status(cloud, server["id"], "RESCUE")
    console = cloud.openstack("console", "log", "show", server["id"])
    assert f"rescue: booted image {cdrom} as a cdrom on ide, own disks in place" in console
    cloud.openstack("server", "unrescue", server["id"])
    wait_status(cloud, server["id"], "ACTIVE")
    for bad in (["hw_rescue_bus=floppy"], ["hw_rescue_bus=virtio", "hw_rescue_device=cdrom"]):
        properties = [arg for prop in bad for arg in ("--property", prop)]
        refused_image = rescue_image("bad", *properties)
        refused = cloud.openstack(
            "server", "rescue", "--image", refused_image, server["id"], check=False
        )
        assert refused.returncode != 0 and "400" in refused.stderr, bad
    assert wait_status(cloud, server["id"], "ACTIVE")["OS-EXT-STS:vm_state"] == "active"
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_cold_migrate_moves_the_server_and_confirm_keeps_it_there(cloud, image):
    server = boot(cloud, image)
    source = server["OS-EXT-SRV-ATTR:host"]
    cloud.openstack("server", "migrate", "--wait", server["id"])
    moved = wait_status(cloud, server["id"], "VERIFY_RESIZE")
    assert moved["OS-EXT-SRV-ATTR:host"] not in (source, None)
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server["id"], "-f", "json"
    )
    assert migration["Status"] == "finished" and migration["Type"] == "migration"
    assert migration["Source Compute"] == source
    assert migration["Dest Compute"] == moved["OS-EXT-SRV-ATTR:host"]
    cloud.openstack("server", "migrate", "confirm", server["id"])
    confirmed = wait_status(cloud, server["id"], "ACTIVE")
    assert confirmed["OS-EXT-SRV-ATTR:host"] == moved["OS-EXT-SRV-ATTR:host"]
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server["id"], "-f", "json"
    )
    assert migration["Status"] == "confirmed"
    # The source gave its claim back: three hosts, one server, one running VM in all.
    hypervisors = cloud.openstack(  # (the usage columns are gone from 2.88)
        "hypervisor", "list", "--long", "--os-compute-api-version", "2.87", "-f", "json"
    )
    assert sum(h.get("vCPUs Used", 0) for h in hypervisors) == 1
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_resize_to_another_host_and_revert_goes_back(cloud, image):
    server = boot(cloud, image, "--availability-zone", f"nova:{MAIN}-fake1")
    cloud.openstack(
        "--os-compute-api-version", "2.56", "server", "migrate", "--host", f"{MAIN}-fake2",
        "--wait", server["id"],
    )  # fmt: skip
    moved = wait_status(cloud, server["id"], "VERIFY_RESIZE")
    assert moved["OS-EXT-SRV-ATTR:host"] == f"{MAIN}-fake2"
    cloud.openstack("server", "resize", "revert", server["id"])
    back = wait_status(cloud, server["id"], "ACTIVE")
    assert back["OS-EXT-SRV-ATTR:host"] == f"{MAIN}-fake1"
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server["id"], "-f", "json"
    )
    assert migration["Status"] == "reverted"
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_live_migration_moves_a_running_server(cloud, image):
    server = boot(cloud, image, "--availability-zone", f"nova:{MAIN}-fake1")
    cloud.openstack(
        "server", "migrate", "--live-migration", "--host", f"{MAIN}-fake2", "--block-migration",
        "--wait", server["id"],
    )  # fmt: skip
    moved = wait_status(cloud, server["id"], "ACTIVE")
    assert moved["OS-EXT-SRV-ATTR:host"] == f"{MAIN}-fake2"
    assert moved["OS-EXT-STS:power_state"] in (1, "Running")
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server["id"], "--type", "live-migration",
        "-f", "json",
    )  # fmt: skip
    assert migration["Status"] == "completed"
    # Nothing in progress any more: the server's own migrations list is empty.
    assert (
        cloud.openstack(
            "--os-compute-api-version",
            "2.23",
            "server",
            "migration",
            "list",
            "--server",
            server["id"],
            "--status",
            "running",
            "-f",
            "json",
        )  # fmt: skip
        == []
    )
    same = cloud.openstack(
        "server", "migrate", "--live-migration", "--host", f"{MAIN}-fake2", server["id"],
        check=False,
    )  # fmt: skip
    assert same.returncode != 0 and "400" in same.stderr
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_evacuate_rebuilds_a_server_of_a_dead_host_elsewhere(cloud, image):
    dead = f"{MAIN}-fake1"
    server = boot(cloud, image, "--availability-zone", f"nova:{dead}")
    refused = cloud.openstack("server", "evacuate", server["id"], check=False)
    assert refused.returncode != 0 and "still in use" in refused.stderr
    cloud.openstack(
        "--os-compute-api-version", "2.53", "compute", "service", "set", "--down", dead,
        "cumulo-compute",
    )  # fmt: skip
    try:
        # (not --wait: OSC 10.5 compares the lowered status with 'ACTIVE' and never ends)
        # 2.94: the last version before evacuate leaves servers stopped (2.95).
        cloud.openstack("--os-compute-api-version", "2.94", "server", "evacuate", server["id"])
        evacuated = wait_status(cloud, server["id"], "ACTIVE")
        assert evacuated["OS-EXT-SRV-ATTR:host"] not in (dead, None)
        [migration] = cloud.openstack(
            "server", "migration", "list", "--server", server["id"], "-f", "json"
        )
        assert migration["Type"] == "evacuation" and migration["Status"] == "done"
    finally:
        cloud.openstack(
            "--os-compute-api-version", "2.53", "compute", "service", "set", "--up", dead,
            "cumulo-compute",
        )  # fmt: skip
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_moves_are_for_admins_and_migrations_follow_microversions(cloud, image):
    server = boot(cloud, image)
    for args in (("migrate",), ("migrate", "--live-migration"), ("evacuate",)):
        refused = cloud.openstack("server", *args, server["id"], cloud="cumulo-demo", check=False)
        assert refused.returncode != 0
    base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1"
    with cloud.http(cloud.token()) as client:
        cloud.openstack("server", "migrate", "--wait", server["id"])
        wait_status(cloud, server["id"], "VERIFY_RESIZE")
        old = client.get(f"{base}/os-migrations").json()["migrations"]
        assert old and "migration_type" not in old[0] and "uuid" not in old[0]
        new = client.get(
            f"{base}/os-migrations",
            params={"instance_uuid": server["id"]},
            headers={"OpenStack-API-Version": "compute 2.59"},
        ).json()["migrations"]
        assert [m["migration_type"] for m in new] == ["migration"]
        assert "uuid" in new[0] and "links" not in new[0]
        assert isinstance(new[0]["old_instance_type_id"], int)
        # No live migration in progress: show is 404, force_complete 400 or 409.
        mid = new[0]["id"]
        headers = {"OpenStack-API-Version": "compute 2.24"}
        shown = client.get(f"{base}/servers/{server['id']}/migrations/{mid}", headers=headers)
        assert shown.status_code == 404
        abort = client.delete(f"{base}/servers/{server['id']}/migrations/{mid}", headers=headers)
        assert abort.status_code in (400, 409)
        assert client.get(f"{base}/servers/{server['id']}/migrations").status_code == 404
        paged = client.get(
            f"{base}/os-migrations",
            params={"limit": 1},
            headers={"OpenStack-API-Version": "compute 2.59"},
        ).json()
        assert len(paged["migrations"]) == 1
    cloud.openstack("server", "resize", "confirm", server["id"])
    wait_status(cloud, server["id"], "ACTIVE")
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_a_volume_attached_while_offloaded_is_connected_where_it_is_unshelved(cloud, image):
    server = boot(cloud, image)
    volume = cloud.openstack("volume", "create", "--size", "1", _name("vol"), "-f", "json")
    wait_volume(cloud, volume["id"], "available")
    cloud.openstack("server", "shelve", server["id"])
    wait_status(cloud, server["id"], "SHELVED_OFFLOADED")
    cloud.openstack("server", "add", "volume", server["id"], volume["id"])
    assert cloud.openstack("volume", "show", volume["id"], "-f", "json")["status"] == "in-use"
    cloud.openstack("server", "unshelve", server["id"])
    active = wait_status(cloud, server["id"], "ACTIVE")
    assert [v["id"] for v in active["volumes_attached"]] == [volume["id"]]
    attachment = cloud.openstack("volume", "show", volume["id"], "-f", "json")["attachments"][0]
    assert attachment["host_name"] == active["OS-EXT-SRV-ATTR:host"]
    cloud.openstack("server", "shelve", server["id"])
    wait_status(cloud, server["id"], "SHELVED_OFFLOADED")
    cloud.openstack("server", "remove", "volume", server["id"], volume["id"])
    assert cloud.openstack("volume", "show", volume["id"], "-f", "json")["status"] == "available"
    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("volume", "delete", volume["id"])


def test_same_host_and_different_host_hints_place_servers(cloud, image):
    first = boot(cloud, image)
    apart = boot(cloud, image, "--hint", f"different_host={first['id']}")
    beside = boot(cloud, image, "--hint", f"same_host={first['id']}")
    assert apart["OS-EXT-SRV-ATTR:host"] != first["OS-EXT-SRV-ATTR:host"]
    assert beside["OS-EXT-SRV-ATTR:host"] == first["OS-EXT-SRV-ATTR:host"]
    for server in (first, apart, beside):
        cloud.openstack("server", "delete", "--wait", server["id"])


def test_rebuild_keeps_the_attached_volume_connected(cloud, image):
    server = boot(cloud, image)
    volume = cloud.openstack("volume", "create", "--size", "1", _name("vol"), "-f", "json")
    wait_volume(cloud, volume["id"], "available")
    cloud.openstack("server", "add", "volume", server["id"], volume["id"])
    cloud.openstack("server", "rebuild", "--image", image, "--wait", server["id"])
    cloud.openstack("server", "remove", "volume", server["id"], volume["id"])
    wait_volume(cloud, volume["id"], "available")  # detached after the rebuild
    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("volume", "delete", volume["id"])


def _attachments(cloud: CloudRunner, volume: str) -> list[dict]:
    return cloud.openstack("volume", "show", volume, "-f", "json")["attachments"]


def _all_attachments(cloud: CloudRunner, volume: str) -> list[dict]:
    """Every attachment of the volume, also those not attached yet (Block Storage 3.27)."""
    return cloud.openstack(
        "--os-volume-api-version", "3.27", "volume", "attachment", "list", "--volume-id", volume,
        "-f", "json",
    )  # fmt: skip


def _live_migrate_api(cloud: CloudRunner, server: str, host: str) -> None:
    """os-migrateLive as Tempest sends it for a volume-backed server (2.25: no block
    migration, the root disk is the volume)."""
    token = cloud.token("admin")
    with cloud.http(token) as client:
        r = client.post(
            f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server}/action",
            json={"os-migrateLive": {"host": host, "block_migration": False}},
            headers={"OpenStack-API-Version": "compute 2.25"},
        )
    assert r.status_code == 202, r.text


def _host_driver(cloud: CloudRunner, host: str):
    [manager] = [m for m in cloud.cloud.compute.managers if m.host == host]
    return manager.driver


def test_volume_backed_live_migration_moves_the_attachment_to_the_destination(cloud, image):
    volume = cloud.openstack(
        "volume", "create", "--image", image, "--size", "1", "--bootable", _name("root"),
        "-f", "json",
    )  # fmt: skip
    wait_volume(cloud, volume["id"], "available")
    server = cloud.openstack(
        "server", "create", "--volume", volume["id"], "--flavor", "m1.nano", "--nic", "none",
        "--availability-zone", f"nova:{MAIN}-fake1", "--wait", _name("bfv"), "-f", "json",
    )  # fmt: skip
    [before] = _attachments(cloud, volume["id"])
    assert before["host_name"] == f"{MAIN}-fake1"

    _live_migrate_api(cloud, server["id"], f"{MAIN}-fake2")
    moved = wait_status(cloud, server["id"], "ACTIVE")
    assert moved["OS-EXT-SRV-ATTR:host"] == f"{MAIN}-fake2"
    [migration] = cloud.openstack(
        "server", "migration", "list", "--server", server["id"], "--type", "live-migration",
        "-f", "json",
    )  # fmt: skip
    assert migration["Status"] == "completed"
    # A new attachment for the destination; the source's is gone; the volume in use.
    [after] = _attachments(cloud, volume["id"])
    assert after["attachment_id"] != before["attachment_id"]
    assert after["host_name"] == f"{MAIN}-fake2" and after["server_id"] == server["id"]
    assert cloud.openstack("volume", "show", volume["id"], "-f", "json")["status"] == "in-use"
    [shown] = cloud.openstack(
        "--os-compute-api-version", "2.89", "server", "volume", "list", server["id"], "-f", "json"
    )
    assert shown["Attachment ID"] == after["attachment_id"]
    guest = _host_driver(cloud, f"{MAIN}-fake2").guests[server["id"]]
    assert set(guest.volumes) == {volume["id"]}
    assert server["id"] not in _host_driver(cloud, f"{MAIN}-fake1").guests

    # A migration that fails (aborted) leaves the server and its attachment where it runs.
    driver = _host_driver(cloud, f"{MAIN}-fake2")
    driver.live_migration_delay = 30
    try:
        _live_migrate_api(cloud, server["id"], f"{MAIN}-fake1")
        token = cloud.token("admin")
        base = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1/servers/{server['id']}"
        headers = {"OpenStack-API-Version": "compute 2.24", "X-Auth-Token": token}
        deadline = time.monotonic() + 30
        while (
            not (running := httpx.get(f"{base}/migrations", headers=headers).json()["migrations"])
            or running[0]["status"] != "running"
        ):
            assert time.monotonic() < deadline, running
            time.sleep(0.1)
        # The destination holds a second attachment while the guest is copied.
        assert len(_all_attachments(cloud, volume["id"])) == 2
        aborted = httpx.delete(f"{base}/migrations/{running[0]['id']}", headers=headers)
        assert aborted.status_code == 202, aborted.text
        back = wait_status(cloud, server["id"], "ACTIVE")
    finally:
        driver.live_migration_delay = 0.0
    assert back["OS-EXT-SRV-ATTR:host"] == f"{MAIN}-fake2"
    assert _attachments(cloud, volume["id"]) == [after]
    assert [a["ID"] for a in _all_attachments(cloud, volume["id"])] == [after["attachment_id"]]
    [shown] = cloud.openstack(
        "--os-compute-api-version", "2.89", "server", "volume", "list", server["id"], "-f", "json"
    )
    assert shown["Attachment ID"] == after["attachment_id"]
    cloud.openstack("server", "delete", "--wait", server["id"])
    wait_volume(cloud, volume["id"], "available")
    cloud.openstack("volume", "delete", volume["id"])


def test_a_project_manager_moves_its_servers_without_seeing_hosts(cloud, image):
    """Keystone's `manager` role (admin implies manager implies member) and Nova's
    manager defaults: a project's manager live-migrates and cold-migrates the project's
    servers where the scheduler picks, follows the moves with host fields null, and may
    neither name a host nor list other projects' migrations; a member moves nothing."""
    project = cloud.openstack("project", "create", _name("mgr"), "-f", "json")
    users = {}
    for role in ("manager", "member"):
        name = _name(role)
        cloud.openstack("user", "create", "--password", "pw-" + name, name)
        cloud.openstack("role", "add", "--user", name, "--project", project["id"], role)
        users[role] = cloud.token(name, "pw-" + name, project["name"])
    api = {"OpenStack-API-Version": "compute 2.80"}
    with (
        cloud.api("compute", users["manager"], "/v2.1", api) as manager,
        cloud.api("compute", users["member"], "/v2.1", api) as member,
        cloud.api("compute", path="/v2.1", headers=api) as admin,
    ):
        body = {"name": _name("mgr"), "imageRef": image, "flavorRef": "1", "networks": "none"}
        created = manager.post("/servers", json={"server": body})
        assert created.status_code == 202, created.text
        server = created.json()["server"]["id"]
        source = wait_status(cloud, server, "ACTIVE")["OS-EXT-SRV-ATTR:host"]

        def live(client: httpx.Client, host: str | None) -> httpx.Response:
            move = {"host": host, "block_migration": "auto"}
            return client.post(f"/servers/{server}/action", json={"os-migrateLive": move})

        assert live(member, None).status_code == 403
        other = sorted(HOSTS - {source})[0]
        assert live(manager, other).status_code == 403  # naming a host is for admins
        assert live(manager, None).status_code == 202
        moved = wait_status(cloud, server, "ACTIVE")["OS-EXT-SRV-ATTR:host"]
        assert moved != source

        mine = manager.get("/os-migrations", params={"project_id": project["id"]})
        assert mine.status_code == 200, mine.text
        [migration] = mine.json()["migrations"]
        assert migration["migration_type"] == "live-migration"
        assert migration["instance_uuid"] == server and migration["status"] == "completed"
        places = ("source_compute", "source_node", "dest_compute", "dest_node", "dest_host")
        assert all(migration[key] is None for key in places), migration
        seen = admin.get("/os-migrations", params={"instance_uuid": server}).json()
        assert seen["migrations"][0]["source_compute"] == source  # admins see the hosts
        assert manager.get("/os-migrations").status_code == 403  # every project's
        admins = cloud.openstack("project", "show", "admin", "-f", "json")["id"]
        assert manager.get("/os-migrations", params={"project_id": admins}).status_code == 403
        assert manager.get(f"/servers/{server}/migrations").json() == {"migrations": []}
        shown = manager.get(f"/servers/{server}/migrations/{migration['id']}")
        assert shown.status_code == 403  # show is for admins

        cold = manager.post(f"/servers/{server}/action", json={"migrate": None})
        assert cold.status_code == 202, cold.text
        wait_status(cloud, server, "VERIFY_RESIZE")
        confirmed = manager.post(f"/servers/{server}/action", json={"confirmResize": None})
        assert confirmed.status_code == 204
        assert wait_status(cloud, server, "ACTIVE")["OS-EXT-SRV-ATTR:host"] != moved
        assert manager.delete(f"/servers/{server}").status_code == 204
