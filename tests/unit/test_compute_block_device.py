"""Block device mappings in image properties (cumulo.compute.block_device): what a
volume-backed snapshot records and how a boot from it merges them, as Nova does."""

from __future__ import annotations

import json

from cumulo.compute.block_device import (
    image_defined_mappings,
    merge_image_mappings,
    snapshot_image_body,
    snapshot_mapping,
)

ROOT = {"disk_bus": "virtio", "device_type": "disk", "boot_index": 0,
        "delete_on_termination": True, "volume_size": 2, "device_name": "/dev/vda"}  # fmt: skip


def test_a_snapshot_mapping_names_the_snapshot_and_not_the_old_volume():
    mapping = snapshot_mapping({**ROOT, "volume_id": "old", "tag": "t"}, "snap-1")
    assert mapping["source_type"] == "snapshot" and mapping["snapshot_id"] == "snap-1"
    assert mapping["volume_id"] is None and mapping["tag"] is None
    assert {k: mapping[k] for k in ROOT} == ROOT
    assert mapping["guest_format"] is None and "connection_info" not in mapping


def test_the_image_body_keeps_the_volume_image_properties_as_nova_copies_them():
    meta = {"image_id": "base", "image_name": "cirros", "size": "123", "checksum": "c",
            "disk_format": "qcow2", "container_format": "bare", "min_ram": "64",
            "min_disk": "1", "hw_disk_bus": "scsi", "img_signature": "sig",
            "cinder_encryption_key_id": "k", "os_glance_importing": "x",
            "block_device_mapping": "[]", "image_type": "image"}  # fmt: skip
    body = snapshot_image_body(
        "snap", meta, {"image_type": "mine", "k": "v"}, [snapshot_mapping(ROOT, "s")], "/dev/vda"
    )
    assert (body["name"], body["visibility"]) == ("snap", "private")
    assert (body["disk_format"], body["container_format"]) == ("raw", "bare")
    assert (body["min_ram"], body["min_disk"]) == (64, 1)
    assert body["hw_disk_bus"] == "scsi" and body["k"] == "v"
    assert body["image_type"] == "mine"  # the user's metadata wins, as Nova's extra properties
    for dropped in ("image_id", "image_name", "size", "checksum", "img_signature",
                    "cinder_encryption_key_id", "os_glance_importing"):  # fmt: skip
        assert dropped not in body
    assert body["bdm_v2"] == "True" and body["root_device_name"] == "/dev/vda"
    assert json.loads(body["block_device_mapping"])[0]["snapshot_id"] == "s"


def test_an_image_without_bdm_v2_defines_no_mappings():
    assert image_defined_mappings({"block_device_mapping": "[{}]"}) == []
    assert image_defined_mappings({"bdm_v2": "True", "block_device_mapping": "not json"}) == []


def test_the_image_root_replaces_the_requests_image_root_and_names_override():
    image = {"bdm_v2": "True", "block_device_mapping": json.dumps([
        snapshot_mapping(ROOT, "s-root"),
        snapshot_mapping({**ROOT, "boot_index": None, "device_name": "/dev/vdb"}, "s-data"),
        {"source_type": "blank", "no_device": True, "device_name": "/dev/vdc"},
    ])}  # fmt: skip
    mappings = image_defined_mappings(image)
    assert [m["uuid"] for m in mappings] == ["s-root", "s-data"]
    assert "snapshot_id" not in mappings[0] and "volume_id" not in mappings[0]
    requested = [
        {"source_type": "image", "uuid": "snap-image", "boot_index": "0"},
        {"source_type": "volume", "uuid": "mine", "device_name": "/dev/vdb"},
    ]
    merged = merge_image_mappings(requested, mappings)
    assert [m["uuid"] for m in merged] == ["mine", "s-root"]
