"""Snapshots of volume-backed servers, as Nova makes them (compute API
snapshot_volume_backed): a Block Storage snapshot per volume and an active image with
no data whose `block_device_mapping` names them; a server booted from that image gets
new volumes from the snapshots, as a `snapshot` mapping given in a create does.
openstacksdk and the `openstack` CLI against the shared cloud (fake driver)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from openstack import exceptions

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_device_tagging import _eventually, _name


def _gone(find: Callable[[], Any]) -> bool:
    try:
        find()
    except exceptions.NotFoundException:
        return True
    return False


@pytest.fixture(scope="module")
def base_image(conn) -> str:
    """A tiny public raw image with a property a snapshot keeps."""
    image = conn.image.create_image(
        name=_name("vbs-base"),
        disk_format="raw",
        container_format="bare",
        visibility="public",
        data=io.BytesIO(b"\0" * 65536),
        os_distro="cumulo-test",
        wait=True,
    )
    yield image.id
    conn.image.delete_image(image.id, ignore_missing=True)


def _boot(demo, name: str, **fields: Any):
    network = demo.network.find_network("private")
    server = demo.compute.create_server(
        name=name, flavor_id="1", networks=[{"uuid": network.id}], **fields
    )
    return demo.compute.wait_for_server(server, wait=60, interval=0.1)


def _volume_of(demo, server) -> Any:
    [attached] = demo.compute.get_server(server.id).attached_volumes
    return demo.block_storage.get_volume(attached["id"])


def test_volume_backed_snapshot_then_boot_from_it(
    cloud: CloudRunner, conn, demo, base_image, monkeypatch
):
    root_mapping = {"source_type": "image", "destination_type": "volume", "uuid": base_image,
                    "boot_index": 0, "volume_size": 1, "delete_on_termination": True}  # fmt: skip
    source = _boot(demo, _name("vbs-src"), block_device_mapping=[root_mapping])
    root = _volume_of(demo, source)
    # Block Storage's snapshot quota is asked first: a refusal makes nothing (Nova's 403).
    used = len(list(demo.block_storage.snapshots()))
    conn.set_volume_quotas("demo", snapshots=used)
    try:
        refused = cloud.openstack(
            "server", "image", "create", "--name", _name("vbs-over"), source.id,
            cloud="cumulo-demo", check=False,
        )  # fmt: skip
    finally:
        conn.set_volume_quotas("demo", snapshots=10)
    assert refused.returncode != 0 and "Quota exceeded for resources: snapshots" in refused.stderr
    assert len(list(demo.block_storage.snapshots())) == used
    _a_failed_snapshot_leaves_a_fault_and_nothing_else(cloud, conn, demo, source, monkeypatch)

    made = cloud.openstack(
        "server", "image", "create", "--name", _name("vbs-snap"), "--wait", source.id,
        "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    image = demo.image.get_image(made["id"])
    assert (image.status, image.size, image.disk_format) == ("active", 0, "raw")
    properties = image.properties
    [mapping] = json.loads(properties["block_device_mapping"])
    assert properties["bdm_v2"] == "True" and properties["image_type"] == "snapshot"
    assert properties["root_device_name"] == "/dev/vda"
    assert image.os_distro == "cumulo-test"  # from the root volume's image metadata
    assert mapping["source_type"] == "snapshot" and mapping["destination_type"] == "volume"
    assert (mapping["boot_index"], mapping["volume_size"]) == (0, 1)
    assert mapping["delete_on_termination"] is True and mapping["volume_id"] is None
    snapshot = demo.block_storage.get_snapshot(mapping["snapshot_id"])
    assert (snapshot.volume_id, snapshot.status) == (root.id, "available")
    _eventually(lambda: demo.compute.get_server(source.id).task_state is None, "the task cleared")

    # Booting from the image: the mapping merged in, a new root volume from the snapshot.
    copy = _boot(demo, _name("vbs-copy"), image_id=image.id)
    assert copy.status == "ACTIVE" and not copy.image.get("id")  # volume-backed
    new_root = _volume_of(demo, copy)
    assert new_root.snapshot_id == snapshot.id and new_root.id != root.id
    demo.compute.delete_server(copy)
    demo.compute.wait_for_delete(copy, wait=30, interval=0.1)
    _eventually(lambda: _gone(lambda: demo.block_storage.get_volume(new_root.id)), "deletion")

    demo.compute.delete_server(source)
    demo.compute.wait_for_delete(source, wait=30, interval=0.1)
    demo.image.delete_image(image)
    demo.block_storage.delete_snapshot(snapshot)
    _eventually(lambda: _gone(lambda: demo.block_storage.get_snapshot(snapshot.id)), "snapshot")


def _a_failed_snapshot_leaves_a_fault_and_nothing_else(cloud, conn, demo, server, monkeypatch):
    """Block Storage fails the volume's snapshot: the image goes, and so does the
    snapshot; the server's task is cleared and the action's event has the error."""

    async def fails(*args: Any) -> None:
        raise RuntimeError("the snapshot could not be written (injected)")

    for manager in cloud.cloud.volume.managers:
        monkeypatch.setattr(manager.driver, "create_snapshot", fails)
    snapshots = list(demo.block_storage.snapshots())
    image = demo.compute.create_server_image(server, _name("vbs-fails"))
    _eventually(lambda: _gone(lambda: demo.image.get_image(image.id)), "the image deleted")
    monkeypatch.undo()
    _eventually(lambda: list(demo.block_storage.snapshots()) == snapshots, "snapshot deleted")
    _eventually(lambda: demo.compute.get_server(server.id).task_state is None, "task cleared")
    action = next(a for a in conn.compute.server_actions(server.id) if a.action == "createImage")
    [event] = conn.compute.get_server_action(action.request_id, server.id).events
    assert event["event"] == "api_snapshot_instance" and event["result"] == "Error"


def test_snapshot_mapping_in_a_create(cloud: CloudRunner, conn, demo, monkeypatch):
    volume = demo.block_storage.create_volume(size=1, name=_name("vbs-vol"))
    demo.block_storage.wait_for_status(volume, "available", wait=30, interval=0.1)
    snapshot = demo.block_storage.create_snapshot(volume_id=volume.id, name=_name("vbs"))
    demo.block_storage.wait_for_status(snapshot, "available", wait=30, interval=0.1)
    # Another project's snapshot is one the caller cannot read: refused as unknown.
    theirs = conn.block_storage.create_volume(size=1, name=_name("vbs-admin"))
    conn.block_storage.wait_for_status(theirs, "available", wait=30, interval=0.1)
    their_snapshot = conn.block_storage.create_snapshot(volume_id=theirs.id)
    servers, volumes = list(demo.compute.servers()), list(demo.block_storage.volumes())
    for snapshot_id in (str(uuid.uuid4()), their_snapshot.id):
        mapping = {"source_type": "snapshot", "destination_type": "volume", "uuid": snapshot_id,
                   "boot_index": 0}  # fmt: skip
        with pytest.raises(exceptions.BadRequestException) as refused:
            _boot(demo, _name("vbs-bad"), block_device_mapping=[mapping])
        assert f"Block Device Mapping is Invalid: failed to get snapshot {snapshot_id}." in str(
            refused.value
        )
    assert list(demo.compute.servers()) == servers
    assert list(demo.block_storage.volumes()) == volumes

    mapping = {"source_type": "snapshot", "destination_type": "volume", "uuid": snapshot.id,
               "boot_index": 0, "delete_on_termination": True}  # fmt: skip
    server = _boot(demo, _name("vbs-direct"), block_device_mapping=[mapping])
    assert server.status == "ACTIVE"
    made = _volume_of(demo, server)
    assert (made.snapshot_id, made.size) == (snapshot.id, 1)
    demo.compute.delete_server(server)
    demo.compute.wait_for_delete(server, wait=30, interval=0.1)
    _eventually(lambda: _gone(lambda: demo.block_storage.get_volume(made.id)), "deletion")
    _a_volume_block_storage_cannot_make_aborts_the_build(cloud, demo, mapping, monkeypatch)
    demo.block_storage.delete_snapshot(snapshot)
    conn.block_storage.delete_snapshot(their_snapshot)
    for bs, snap, vol in ((demo.block_storage, snapshot, volume),
                          (conn.block_storage, their_snapshot, theirs)):  # fmt: skip
        _eventually(lambda bs=bs, snap=snap: _gone(lambda: bs.get_snapshot(snap.id)), "snapshot")
        bs.delete_volume(vol)


def _a_volume_block_storage_cannot_make_aborts_the_build(cloud, demo, mapping, monkeypatch):
    """Nova's BuildAbortException: ERROR at once with the fault, no other host tried, and
    the volume the build made (delete_on_termination) deleted."""

    async def fails(*args: Any) -> None:
        raise RuntimeError("the volume could not be written (injected)")

    for manager in cloud.cloud.volume.managers:
        monkeypatch.setattr(manager.driver, "create_from_snapshot", fails)
    volumes = list(demo.block_storage.volumes())
    with pytest.raises(exceptions.ResourceFailure):
        _boot(demo, _name("vbs-abort"), block_device_mapping=[mapping])
    monkeypatch.undo()
    [server] = [s for s in demo.compute.servers() if s.name.startswith("vbs-abort")]
    assert server.status == "ERROR"
    assert "Failure prepping block device" in server.fault["message"]
    _eventually(lambda: list(demo.block_storage.volumes()) == volumes, "the volume deleted")
    demo.compute.delete_server(server)
    demo.compute.wait_for_delete(server, wait=30, interval=0.1)
