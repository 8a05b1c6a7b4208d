"""Personality files as Nova handles them: the quota checks and their messages, what the
instance keeps, and how the guest finds them (meta_data.json `files`, the config drive's
and the metadata service's openstack/content/NNNN); the hostnames made from names; the
QEMU driver's refusal to live-migrate guests with volumes."""

from __future__ import annotations

import base64
import json

import pytest

from cumulo.common.faults import BadRequest
from cumulo.compute import personality
from cumulo.compute.api import wire
from cumulo.compute.configdrive import build_config_drive, read_config_drive
from cumulo.compute.quotas import DEFAULTS
from cumulo.compute.service import sanitize_hostname
from cumulo.metadata import InstanceMetadata, config_drive_files, meta_data
from cumulo.metadata.documents import resolve

FILES = [("/etc/motd", base64.b64encode(b"hello\n").decode()), ("/etc/b", "YQ==")]


def test_files_within_the_default_quota_pass():
    personality.check_quota(DEFAULTS, FILES)
    personality.check_quota(DEFAULTS, [])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("/f", "YQ==")] * 6, "Personality file limit exceeded"),
        ([("/" + "p" * 255, "YQ==")], "Personality file path exceeds maximum 255"),
        ([("/f", "YQ==" * 2561)], "Personality file content exceeds maximum 10240"),
        # Nova reports the path first when both are over.
        ([("/" + "p" * 255, "YQ==" * 2561)], "Personality file path exceeds maximum 255"),
    ],
)
def test_over_quota_gives_novas_message(files, message):
    with pytest.raises(personality.PersonalityLimitExceeded, match=message):
        personality.check_quota(DEFAULTS, files)


def test_unlimited_quotas_take_anything():
    unlimited = {k: -1 for k in DEFAULTS}
    personality.check_quota(unlimited, [("/" + "p" * 999, "YQ==" * 9999)] * 99)


def test_the_instance_keeps_the_files_and_a_rebuild_replaces_them():
    sysmeta = personality.with_files({"boot_roles": "member"}, FILES)
    assert json.loads(sysmeta[personality.SYSMETA_KEY]) == [list(f) for f in FILES]
    assert personality.files_of(sysmeta) == (("/etc/motd", b"hello\n"), ("/etc/b", b"a"))
    assert personality.with_files(sysmeta, []) == {"boot_roles": "member"}
    assert personality.files_of({}) == () and personality.files_of(None) == ()


def test_the_wire_form_is_checked_as_novas_schema():
    body = [{"path": p, "contents": c} for p, c in FILES]
    assert wire.personality(body, (2, 56)) == FILES
    with pytest.raises(BadRequest, match="'personality' was unexpected"):
        wire.personality(body, (2, 57))
    with pytest.raises(BadRequest, match="is not a 'base64'"):
        wire.personality([{"path": "/a", "contents": "This is a test file."}], (2, 1))
    with pytest.raises(BadRequest, match="'mode' was unexpected"):
        wire.personality([{"path": "/a", "contents": "YQ==", "mode": "1"}], (2, 1))
    with pytest.raises(BadRequest, match="not of type 'string'"):
        wire.personality([{"path": 1, "contents": "YQ=="}], (2, 1))


GUEST = InstanceMetadata(
    uuid="8d1c6a2e-0b3f-4a55-9e0d-5a1c2b3d4e5f",
    name="web",
    hostname="web",
    project_id="a" * 32,
    files=(("/etc/motd", b"hello\n"), ("/root/b", b"\x00\xff")),
)


def test_meta_data_lists_the_files_by_content_path():
    assert meta_data(GUEST)["files"] == [
        {"path": "/etc/motd", "content_path": "/content/0000"},
        {"path": "/root/b", "content_path": "/content/0001"},
    ]
    no_files = InstanceMetadata(uuid="u", name="n", hostname="h", project_id="p")
    assert "files" not in meta_data(no_files)


def test_the_config_drive_iso_holds_the_contents(tmp_path):
    build_config_drive(config_drive_files(GUEST), tmp_path / "disk.config")
    read = read_config_drive(tmp_path / "disk.config")
    assert read["openstack/content/0000"] == b"hello\n"
    assert read["openstack/content/0001"] == b"\x00\xff"


def test_the_config_drive_and_the_service_serve_the_contents():
    drive = config_drive_files(GUEST)
    assert drive["openstack/content/0000"] == b"hello\n"
    assert drive["openstack/content/0001"] == b"\x00\xff"
    assert json.loads(drive["openstack/2012-08-10/meta_data.json"])["files"][1]["path"] == (
        "/root/b"
    )
    assert resolve(GUEST, "openstack/content/0001").body == b"\x00\xff"
    assert resolve(GUEST, "openstack/content").body.decode().split("\n") == ["0000", "0001"]
    assert resolve(GUEST, "openstack/content/0002") is None
    assert resolve(GUEST, "openstack/content/0000/x") is None


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("guest-instance-1.domain.com", "guest-instance-1-domain-com"),
        ("My Server_1", "my-server-1"),
        ("a$b!c", "abc"),
        ("-.web.-", "web"),
        ("x" * 80, "x" * 63),
        ("Ünïcode", "ncode"),
    ],
)
def test_hostnames_are_made_from_names_as_nova_sanitizes_them(name, hostname):
    assert sanitize_hostname(name) == hostname


def test_a_name_without_hostname_characters_gets_the_default():
    assert sanitize_hostname("___", "Server-abc") == "Server-abc"
