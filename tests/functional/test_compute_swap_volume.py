"""Swapping a server's volume (Nova's swap volume) and moving attached volumes between
backends (Cinder's migration and retype of an in-use volume, which call it), on a
cloud of two file backends and fake compute hosts: `openstack volume migrate` and
`volume set --type … --retype-policy on-demand` of an attached volume copy every byte
to the other backend through the server's host, the server keeps the volume (same id,
a new attachment) and the volume is in-use again; the swap API is checked as Nova
checks it (service role, only during a migration, the volumes' states, the server's),
a failed swap leaves the old volume attached, and os-migrate_volume_completion outside
a migration moves the attachments as Cinder's."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import openstack
import pytest
from openstack import exceptions as sdk_exc

from cumulo.common.config import VolumeBackendConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.functional.test_compute_flavors import compute
from tests.functional.test_compute_microversions_2_8x import _boot, _status, _upload

MiB = 1 << 20
HOST = "storage1"
EAST, WEST = f"{HOST}@east#east", f"{HOST}@west#west"
VOLUME_344 = {"OpenStack-API-Version": "volume 3.44"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> CloudRunner:
    state = tmp_path_factory.mktemp("swap-volume")
    configure_state_dir(state)
    config = load_config(state)
    config.volume.host = HOST
    config.volume.backends = [
        VolumeBackendConfig(name="east", capacity_gb=100),
        VolumeBackendConfig(name="west", capacity_gb=50),
    ]
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    return _upload(cloud, tmp_path_factory)


@pytest.fixture(scope="module")
def admin(cloud: CloudRunner) -> str:
    return cloud.token("admin")


@pytest.fixture(scope="module")
def service_user(cloud: CloudRunner) -> tuple[str, str]:
    """A user with the admin and service roles, as the Block Storage service's user."""
    name, password = f"svc-{uuid.uuid4().hex[:6]}", "svc-secret-1"
    cloud.openstack("user", "create", "--password", password, name)
    for role in ("admin", "service"):
        cloud.openstack("role", "add", "--user", name, "--project", "admin", role)
    return name, password


def sdk(cloud: CloudRunner, user: str, password: str) -> openstack.connection.Connection:
    return openstack.connect(
        auth_url=cloud.auth_url,
        username=user,
        password=password,
        project_name="admin",
        user_domain_id="default",
        project_domain_id="default",
    )


def volumes(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": "volume 3.44"},
        timeout=60,
    )


def show(cloud: CloudRunner, token: str, volume_id: str) -> dict:
    with volumes(cloud, token) as http:
        r = http.get(f"/volumes/{volume_id}")
    return r.json()["volume"] if r.status_code == 200 else {"status": "missing"}


def wait(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def volume_file(cloud: CloudRunner, backend: str, volume_id: str) -> Path:
    return cloud.state_dir / "volumes" / backend / f"volume-{volume_id}"


def new_volume(cloud: CloudRunner, token: str, *args: str) -> str:
    made = cloud.openstack(
        "volume", "create", "--size", "1", *args, f"v-{uuid.uuid4().hex[:6]}", "-f", "json"
    )
    wait(lambda: show(cloud, token, made["id"])["status"] == "available", "the volume")
    return made["id"]


def filled_volume(cloud: CloudRunner, token: str, *args: str) -> tuple[str, bytes]:
    """A volume on east with data at its start, middle and end."""
    vid = new_volume(cloud, token, *args)
    assert show(cloud, token, vid)["os-vol-host-attr:host"] == EAST
    path = volume_file(cloud, "east", vid)
    with path.open("r+b") as f:
        f.write(os.urandom(MiB))
        f.seek(512 * MiB)
        f.write(b"middle of the volume")
        f.seek(1024 * MiB - 4)
        f.write(b"tail")
    return vid, path.read_bytes()


def attach(cloud: CloudRunner, token: str, server: str, vid: str) -> None:
    cloud.openstack("server", "add", "volume", server, vid)
    wait(lambda: show(cloud, token, vid)["status"] == "in-use", "the attachment")


def attachments(cloud: CloudRunner, token: str, server: str) -> list[dict]:
    with compute(cloud, token, "2.89") as api:
        return api.get(f"/servers/{server}/os-volume_attachments").json()["volumeAttachments"]


def swap_events(cloud: CloudRunner, token: str, server: str) -> list[dict]:
    with compute(cloud, token, "2.51") as api:
        actions = api.get(f"/servers/{server}/os-instance-actions").json()["instanceActions"]
        swaps = [a for a in actions if a["action"] == "swap_volume"]
        if not swaps:
            return []
        path = f"/servers/{server}/os-instance-actions/{swaps[0]['request_id']}"
        return api.get(path).json()["instanceAction"]["events"]


@pytest.fixture
def server(cloud: CloudRunner, admin: str, image: str):
    with compute(cloud, admin, "2.79") as api:
        made = _boot(api, image)
        yield made["id"]
        api.delete(f"/servers/{made['id']}")
        wait(lambda: api.get(f"/servers/{made['id']}").status_code == 404, "the delete")


def test_openstack_volume_migrate_moves_an_attached_volume_under_its_server(
    cloud: CloudRunner, admin: str, server: str
) -> None:
    vid, data = filled_volume(cloud, admin)
    attach(cloud, admin, server, vid)
    [before] = attachments(cloud, admin, server)
    east = next(m for m in cloud.cloud.volume.managers if m.backend.name == "east")
    assert before["attachment_id"] in east.driver.exports.active()  # the host reads it so
    cloud.openstack("volume", "migrate", "--host", f"{HOST}@west", vid)
    moved = wait(
        lambda: (v := show(cloud, admin, vid))["migration_status"] in ("success", "error") and v,
        "the migration",
    )
    assert moved["migration_status"] == "success"
    assert (moved["status"], moved["os-vol-host-attr:host"]) == ("in-use", WEST)
    finished_swap(cloud, admin, server)  # the host records the swap last
    [after] = attachments(cloud, admin, server)
    # The server keeps the volume (its id) on a new attachment of its new data.
    assert after["volumeId"] == vid and after["device"] == before["device"]
    assert after["attachment_id"] != before["attachment_id"]
    assert [a["attachment_id"] for a in moved["attachments"]] == [after["attachment_id"]]
    # The data took the volume's name there (Cinder's update_migrated_volume renaming
    # it): the volume's name on the backend is based on its own id, name_id is null.
    assert volume_file(cloud, "west", vid).read_bytes() == data
    assert moved["os-vol-mig-status-attr:name_id"] is None
    assert not volume_file(cloud, "east", vid).exists()
    # The completion detached the volume on east (its old attachment's export stopped).
    assert before["attachment_id"] not in east.driver.exports.active()
    events = swap_events(cloud, admin, server)
    assert [(e["event"], e["result"]) for e in events] == [("compute_swap_volume", "Success")]
    # Only the volume is left: the migration's new volume is gone.
    with volumes(cloud, admin) as http:
        listed = http.get("/volumes", params={"all_tenants": 1, "name": moved["name"]})
        assert [v["id"] for v in listed.json()["volumes"]] == [vid]
    cloud.openstack("server", "remove", "volume", server, vid)
    wait(lambda: show(cloud, admin, vid)["status"] == "available", "the detach")
    assert volume_file(cloud, "west", vid).read_bytes() == data
    cloud.openstack("volume", "delete", vid)


def test_retype_on_demand_moves_an_attached_volume_to_the_new_types_backend(
    cloud: CloudRunner, admin: str, server: str
) -> None:
    types = {}
    for backend in ("east", "west"):
        types[backend] = f"{backend}-{uuid.uuid4().hex[:6]}"
        cloud.openstack(
            "volume", "type", "create", "--property", f"volume_backend_name={backend}",
            types[backend],
        )  # fmt: skip
    vid, data = filled_volume(cloud, admin, "--type", types["east"])
    attach(cloud, admin, server, vid)
    cloud.openstack("volume", "set", "--type", types["west"], "--retype-policy", "on-demand", vid)
    retyped = wait(
        lambda: (v := show(cloud, admin, vid))["migration_status"] in ("success", "error") and v,
        "the retype",
    )
    assert retyped["migration_status"] == "success"
    assert (retyped["status"], retyped["volume_type"]) == ("in-use", types["west"])
    assert retyped["os-vol-host-attr:host"] == WEST
    assert [a["volumeId"] for a in attachments(cloud, admin, server)] == [vid]
    assert volume_file(cloud, "west", vid).read_bytes() == data
    cloud.openstack("server", "remove", "volume", server, vid)
    wait(lambda: show(cloud, admin, vid)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", vid)


def test_swap_volume_is_checked_as_nova_checks_it(
    cloud: CloudRunner, admin: str, server: str, service_user
) -> None:
    old, data = filled_volume(cloud, admin)
    new = new_volume(cloud, admin)
    attach(cloud, admin, server, old)
    conn = sdk(cloud, *service_user)
    # Nova's policy: the service role (an admin alone is refused).
    admin_conn = cloud.sdk()
    with pytest.raises(sdk_exc.ForbiddenException):
        admin_conn.compute.update_volume_attachment(server, old, volume_id=new)
    with pytest.raises(sdk_exc.NotFoundException):
        conn.compute.update_volume_attachment(server, str(uuid.uuid4()), volume_id=new)
    # Only while Block Storage migrates the volume (Nova since bug 2112187).
    with pytest.raises(sdk_exc.ConflictException, match="should only be called by Cinder"):
        conn.compute.update_volume_attachment(server, old, volume_id=new)
    # A volume whose last migration ended has a migration status: Nova lets it swap.
    with volumes(cloud, admin) as http:
        reset = {"os-reset_status": {"migration_status": "success"}}
        assert http.post(f"/volumes/{old}/action", json=reset).status_code == 202
    with pytest.raises(sdk_exc.BadRequestException):  # an unknown new volume: 400
        conn.compute.update_volume_attachment(server, old, volume_id=str(uuid.uuid4()))
    other = new_volume(cloud, admin)
    attach(cloud, admin, server, other)
    with pytest.raises(sdk_exc.BadRequestException, match="must be detached"):
        conn.compute.update_volume_attachment(server, old, volume_id=other)
    cloud.openstack("server", "remove", "volume", server, other)
    wait(lambda: show(cloud, admin, other)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", other)
    with compute(cloud, admin, "2.1") as api:
        assert api.post(f"/servers/{server}/action", json={"os-stop": None}).status_code == 202
        _status(api, server, "SHUTOFF")
        with pytest.raises(sdk_exc.ConflictException, match="swap_volume"):
            conn.compute.update_volume_attachment(server, old, volume_id=new)
        assert api.post(f"/servers/{server}/action", json={"os-start": None}).status_code == 202
        _status(api, server, "ACTIVE")
    assert show(cloud, admin, old)["status"] == "in-use"
    assert show(cloud, admin, new)["status"] == "available"

    conn.compute.update_volume_attachment(server, old, volume_id=new)
    wait(lambda: [a["volumeId"] for a in attachments(cloud, admin, server)] == [new], "the swap")
    wait(lambda: show(cloud, admin, old)["status"] == "available", "the old volume's detach")
    assert show(cloud, admin, new)["status"] == "in-use"
    assert volume_file(cloud, "east", new).read_bytes() == data
    assert swap_events(cloud, admin, server)[0]["result"] == "Success"
    cloud.openstack("server", "remove", "volume", server, new)
    wait(lambda: show(cloud, admin, new)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", old, new)


def test_a_failed_swap_leaves_the_old_volume_attached(
    cloud: CloudRunner, admin: str, server: str, service_user
) -> None:
    old = new_volume(cloud, admin)
    new = new_volume(cloud, admin)
    attach(cloud, admin, server, old)
    with volumes(cloud, admin) as http:
        reset = {"os-reset_status": {"migration_status": "success"}}
        assert http.post(f"/volumes/{old}/action", json=reset).status_code == 202
    volume_file(cloud, "east", new).unlink()  # the host cannot connect to it
    sdk(cloud, *service_user).compute.update_volume_attachment(server, old, volume_id=new)
    events = wait(lambda: swap_events(cloud, admin, server), "the swap's event")
    events = wait(lambda: events if events[0]["result"] else swap_events(cloud, admin, server), "")
    assert events[0]["result"] == "Error" and "no data" in (events[0]["traceback"] or "")
    assert [a["volumeId"] for a in attachments(cloud, admin, server)] == [old]
    wait(lambda: show(cloud, admin, new)["status"] == "available", "the new volume's release")
    assert show(cloud, admin, old)["status"] == "in-use"
    cloud.openstack("server", "remove", "volume", server, old)
    wait(lambda: show(cloud, admin, old)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", old, new)


def test_migrate_volume_completion_outside_a_migration_moves_the_attachments(
    cloud: CloudRunner, admin: str
) -> None:
    old, new = new_volume(cloud, admin), new_volume(cloud, admin)
    instance = str(uuid.uuid4())
    with volumes(cloud, admin) as http:
        made = http.post(
            "/attachments",
            json={"attachment": {"volume_uuid": old, "instance_uuid": instance,
                                 "connector": {"host": HOST, "mountpoint": "/dev/vdb"}}},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        http.post(f"/attachments/{made.json()['attachment']['id']}/action",
                  json={"os-complete": None})  # fmt: skip
        body = {"os-migrate_volume_completion": {"new_volume": new, "error": False}}
        done = http.post(f"/volumes/{old}/action", json=body)
        assert done.status_code == 200 and done.json() == {"save_volume_id": new}
    assert show(cloud, admin, old)["status"] == "available"
    moved = show(cloud, admin, new)
    assert moved["status"] == "in-use"
    assert [(a["server_id"], a["device"]) for a in moved["attachments"]] == [(instance, "/dev/vdb")]
    with volumes(cloud, admin) as http:
        [attachment] = http.get("/attachments", params={"volume_id": new}).json()["attachments"]
        http.delete(f"/attachments/{attachment['id']}")
    cloud.openstack("volume", "delete", old, new)


def host_manager(cloud: CloudRunner, server: str):
    """The compute manager (fake driver) the server runs on."""
    [manager] = [m for m in cloud.cloud.compute.managers if server in m.driver.guests]
    return manager


def mapping(cloud: CloudRunner, server: str) -> list[tuple[str, str, int | None]]:
    """The server's volume mappings: (volume id, attachment id, volume_size)."""
    bdms = cloud.run_async(cloud.cloud.compute.service.block_devices(server))
    return [(b.volume_id, b.attachment_id, b.volume_size) for b in bdms]


def cinder_attachments(cloud: CloudRunner, token: str, volume_id: str) -> list[str]:
    with volumes(cloud, token) as http:
        found = http.get("/attachments", params={"all_tenants": 1, "volume_id": volume_id})
    return [a["id"] for a in found.json()["attachments"]]


def begin_swap(cloud: CloudRunner, admin: str, service_user, server: str, old: str, new: str):
    """Block Storage's call (its migration status set as a finished migration leaves it)."""
    with volumes(cloud, admin) as http:
        reset = {"os-reset_status": {"migration_status": "success"}}
        assert http.post(f"/volumes/{old}/action", json=reset).status_code == 202
    sdk(cloud, *service_user).compute.update_volume_attachment(server, old, volume_id=new)


def finished_swap(cloud: CloudRunner, token: str, server: str) -> dict:
    def done():
        events = swap_events(cloud, token, server)
        return events[0] if events and events[0]["result"] else None

    return wait(done, "the swap's end")


def test_a_swap_to_a_larger_volume_grows_the_mapping_and_the_guests_device(
    cloud: CloudRunner, admin: str, server: str, service_user
) -> None:
    old, data = filled_volume(cloud, admin)
    made = cloud.openstack("volume", "create", "--size", "2", f"v-{uuid.uuid4().hex[:6]}",
                           "-f", "json")  # fmt: skip
    new = made["id"]
    wait(lambda: show(cloud, admin, new)["status"] == "available", "the new volume")
    attach(cloud, admin, server, old)
    begin_swap(cloud, admin, service_user, server, old, new)
    assert finished_swap(cloud, admin, server)["result"] == "Success"
    [(volume_id, attachment_id, size)] = mapping(cloud, server)
    # Nova's resize_to: the mapping says the new size, the guest's device grew to it.
    assert (volume_id, size) == (new, 2)
    assert cinder_attachments(cloud, admin, new) == [attachment_id]
    console = host_manager(cloud, server).driver.guests[server].console
    assert any("capacity change to 2 GiB" in line for line in console), console[-3:]
    copied = volume_file(cloud, "east", new).read_bytes()
    assert len(copied) == 2 * 1024 * MiB and copied[: len(data)] == data
    wait(lambda: show(cloud, admin, old)["status"] == "available", "the old volume's detach")
    cloud.openstack("server", "remove", "volume", server, new)
    wait(lambda: show(cloud, admin, new)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", old, new)


def test_an_attach_to_a_server_waits_for_its_running_swap(
    cloud: CloudRunner, admin: str, server: str, service_user
) -> None:
    old, new, other = (new_volume(cloud, admin) for _ in range(3))
    attach(cloud, admin, server, old)
    driver = host_manager(cloud, server).driver
    driver.swap_delay = 3.0
    try:
        begin_swap(cloud, admin, service_user, server, old, new)
        wait(lambda: swap_events(cloud, admin, server), "the swap's start")
        # Nova's API accepts it; the host attaches it once the swap let the server go.
        cloud.openstack("server", "add", "volume", server, other)
        time.sleep(1)
        assert other not in driver.guests[server].volumes
        assert not swap_events(cloud, admin, server)[0]["result"]
        wait(lambda: show(cloud, admin, other)["status"] == "in-use", "the attachment", 30)
    finally:
        driver.swap_delay = 0.0
    assert finished_swap(cloud, admin, server)["result"] == "Success"
    console = driver.guests[server].console
    swapped = next(n for n, line in enumerate(console) if f"now reads volume {new}" in line)
    attached = max(n for n, line in enumerate(console) if "attached at" in line)
    assert swapped < attached
    assert sorted(v for v, _, _ in mapping(cloud, server)) == sorted([new, other])
    for vid in (new, other):
        cloud.openstack("server", "remove", "volume", server, vid)
        wait(lambda v=vid: show(cloud, admin, v)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", old, new, other)


async def _attachment_not_completed(token: str, attachment_id: str) -> None:
    raise RuntimeError(f"attachment {attachment_id} could not be completed (injected)")


def test_a_swap_failing_after_the_guest_moved_moves_it_back(
    cloud: CloudRunner, admin: str, server: str, service_user, monkeypatch
) -> None:
    old, data = filled_volume(cloud, admin)
    new = new_volume(cloud, admin)
    attach(cloud, admin, server, old)
    [before] = mapping(cloud, server)
    manager = host_manager(cloud, server)
    monkeypatch.setattr(manager, "_complete_attachment", _attachment_not_completed)
    begin_swap(cloud, admin, service_user, server, old, new)
    event = finished_swap(cloud, admin, server)
    assert event["result"] == "Error" and "injected" in (event["traceback"] or "")
    # The guest reads the old volume again; the records are as before the swap.
    guest = manager.driver.guests[server]
    assert set(guest.volumes) == {old}
    assert any(f"now reads volume {old}" in line for line in guest.console)
    assert mapping(cloud, server) == [before]
    assert cinder_attachments(cloud, admin, old) == [before[1]]
    wait(lambda: not cinder_attachments(cloud, admin, new), "the new attachment's delete")
    assert show(cloud, admin, new)["status"] == "available"
    assert show(cloud, admin, old)["status"] == "in-use"
    assert volume_file(cloud, "east", old).read_bytes() == data
    monkeypatch.undo()
    cloud.openstack("server", "remove", "volume", server, old)
    wait(lambda: show(cloud, admin, old)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", old, new)


def test_a_grown_device_that_cannot_move_back_keeps_the_new_volume_in_the_records(
    cloud: CloudRunner, admin: str, server: str, service_user, monkeypatch
) -> None:
    old = new_volume(cloud, admin)
    made = cloud.openstack("volume", "create", "--size", "2", f"v-{uuid.uuid4().hex[:6]}",
                           "-f", "json")  # fmt: skip
    new = made["id"]
    wait(lambda: show(cloud, admin, new)["status"] == "available", "the new volume")
    attach(cloud, admin, server, old)
    manager = host_manager(cloud, server)
    monkeypatch.setattr(manager, "_complete_attachment", _attachment_not_completed)
    begin_swap(cloud, admin, service_user, server, old, new)
    event = finished_swap(cloud, admin, server)
    assert event["result"] == "Error"
    assert "the new attachment was not completed" in (event["traceback"] or "")
    # The guest saw the larger device: it stays on the new volume, and so do the records.
    assert set(manager.driver.guests[server].volumes) == {new}
    [(volume_id, attachment_id, size)] = mapping(cloud, server)
    assert (volume_id, size) == (new, 2)
    assert cinder_attachments(cloud, admin, new) == [attachment_id]
    wait(lambda: show(cloud, admin, old)["status"] == "available", "the old volume's detach")
    assert cinder_attachments(cloud, admin, old) == []
    monkeypatch.undo()
    cloud.openstack("server", "remove", "volume", server, new)
    wait(lambda: show(cloud, admin, new)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", old, new)


def test_a_migration_block_storage_cannot_complete_moves_the_guest_back(
    cloud: CloudRunner, admin: str, server: str, monkeypatch
) -> None:
    vid, data = filled_volume(cloud, admin)
    attach(cloud, admin, server, vid)
    [before] = mapping(cloud, server)
    west = next(m for m in cloud.cloud.volume.managers if m.backend.name == "west")
    west_files = set(os.listdir(volume_file(cloud, "west", vid).parent))
    written = b"written by the guest after it moved"

    async def rename_fails(new_volume_id: str, original_id: str) -> None:
        # The guest wrote to the new volume since it moved onto it: that must not be lost.
        with west.driver.path(new_volume_id).open("r+b") as f:
            f.seek(2 * MiB)
            f.write(written)
        raise RuntimeError("the data could not be renamed (injected)")

    monkeypatch.setattr(west.driver, "rename_migrated_volume", rename_fails)
    cloud.openstack("volume", "migrate", "--host", f"{HOST}@west", vid)
    event = finished_swap(cloud, admin, server)
    # Block Storage answered its failure: the swap rolled back.
    assert event["result"] == "Error" and "injected" in (event["traceback"] or "")
    assert "the migration of volume" in event["traceback"]
    ended = show(cloud, admin, vid)
    assert (ended["migration_status"], ended["os-vol-host-attr:host"]) == ("error", EAST)
    guest = host_manager(cloud, server).driver.guests[server]
    assert set(guest.volumes) == {vid}
    assert f"now reads volume {vid}" in guest.console[-1]
    assert mapping(cloud, server) == [before]
    assert cinder_attachments(cloud, admin, vid) == [before[1]]
    east = next(m for m in cloud.cloud.volume.managers if m.backend.name == "east")
    assert before[1] in east.driver.exports.active()  # still serving the guest
    wait(lambda: show(cloud, admin, vid)["status"] == "in-use", "the volume back in use")
    # The new volume is deleted, nothing of it is left on west; the data is on east.
    with volumes(cloud, admin) as http:
        listed = http.get("/volumes", params={"all_tenants": 1, "name": ended["name"]})
        assert [v["id"] for v in listed.json()["volumes"]] == [vid]
    wait(lambda: set(os.listdir(volume_file(cloud, "west", vid).parent)) == west_files, "west")
    expected = bytearray(data)
    expected[2 * MiB : 2 * MiB + len(written)] = written
    assert volume_file(cloud, "east", vid).read_bytes() == bytes(expected)
    monkeypatch.undo()
    cloud.openstack("server", "remove", "volume", server, vid)
    wait(lambda: show(cloud, admin, vid)["status"] == "available", "the detach")
    cloud.openstack("volume", "delete", vid)
