"""The config drive is an ISO9660 labelled config-2 that gives back exactly the files put in."""

from __future__ import annotations

import json

import pytest

from cumulo.compute.configdrive import (
    ConfigDriveError,
    build_config_drive,
    read_config_drive,
    volume_label,
)
from cumulo.metadata import InstanceMetadata, config_drive_files


def test_files_come_back_byte_for_byte_under_their_own_names(tmp_path):
    files = {
        "openstack/latest/meta_data.json": b'{"uuid": "u1"}',
        "openstack/latest/user_data": b"#!/bin/sh\necho hi\n" + bytes(range(256)),
        "ec2/latest/meta-data.json": b"{}",
        # Names that differ only by '-' and '_' stay distinct files.
        "ec2/latest/meta_data.json": b"[]",
        "openstack/content/0000": b"",
    }
    iso = tmp_path / "disk.config"
    build_config_drive(files, iso)
    assert volume_label(iso) == "config-2"
    assert read_config_drive(iso) == files


def test_a_whole_instance_drive_is_laid_out_as_nova_does(tmp_path):
    inst = InstanceMetadata(
        uuid="8d1c6a2e-0b3f-4a55-9e0d-5a1c2b3d4e5f",
        name="web 1",
        hostname="web-1",
        project_id="p1",
        public_keys={"k": "ssh-ed25519 AAAA k@host"},
        user_data=b"#cloud-config\n",
    )
    iso = tmp_path / "disk.config"
    build_config_drive(config_drive_files(inst), iso)
    found = read_config_drive(iso)
    meta = json.loads(found["openstack/latest/meta_data.json"])
    assert meta["uuid"] == inst.uuid and meta["public_keys"] == {"k": "ssh-ed25519 AAAA k@host"}
    assert found["openstack/2012-08-10/user_data"] == b"#cloud-config\n"
    assert "network_data.json" not in str([p for p in found if p.startswith("openstack/2012")])
    assert "openstack/latest/network_data.json" in found
    assert json.loads(found["ec2/latest/meta-data.json"])["hostname"] == "web-1"
    assert found["ec2/2009-04-04/user-data"] == b"#cloud-config\n"


@pytest.mark.parametrize("name", ["", "/", "a/../b", "a//b", "./x"])
def test_paths_that_escape_or_are_empty_are_refused(tmp_path, name):
    with pytest.raises(ConfigDriveError):
        build_config_drive({name: b"x"}, tmp_path / "bad.iso")
    assert not (tmp_path / "bad.iso").exists()
