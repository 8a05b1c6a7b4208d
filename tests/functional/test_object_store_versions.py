"""Object versioning with version ids (`X-Versions-Enabled`), as a user drives it with the
`swift` CLI and plain HTTP: every overwrite kept, `?versions` listings, reading and
deleting one version, delete markers, suspending, and the errors Swift answers."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.cloudrunner import CloudRunner
from tests.functional.object_store_helpers import (
    account_client,
    policy_cloud_fixture,
    swift,
    unique,
)

cloud = policy_cloud_fixture("object-versions")


def put(http: httpx.Client, path: str, data: bytes) -> str:
    answer = http.put(path, content=data)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Object-Version-Id"]


def test_every_version_is_kept_listed_and_readable(cloud: CloudRunner, tmp_path: Path):
    name = unique("vers")
    swift(cloud, "post", name, "-H", "X-Versions-Enabled: true")
    with account_client(cloud, cloud.token("admin")) as http:
        assert http.head(name).headers["X-Versions-Enabled"] == "True"
        first = put(http, f"{name}/doc", b"one")
        second = put(http, f"{name}/doc", b"two")
        assert first != second
        current = http.get(f"{name}/doc")
        assert current.content == b"two" and current.headers["X-Object-Version-Id"] == second
        old = http.get(f"{name}/doc", params={"version-id": first})
        assert old.content == b"one" and old.headers["X-Object-Version-Id"] == first
        assert http.head(f"{name}/doc", params={"version-id": "1.00000"}).status_code == 404

        listed = http.get(name, params={"versions": "", "format": "json"}).json()
        assert [(e["name"], e["version_id"], e["is_latest"]) for e in listed] == [
            ("doc", second, True),
            ("doc", first, False),
        ]
        # The plain listing shows the current object only; the hidden container stays hidden.
        assert [e["name"] for e in http.get(name, params={"format": "json"}).json()] == ["doc"]
        assert all("\x00" not in c["name"] for c in http.get("", params={"format": "json"}).json())

        # A DELETE writes a delete marker: the object is gone, its versions are not.
        gone = http.delete(f"{name}/doc")
        assert gone.status_code == 204
        marker = gone.headers["X-Object-Version-Id"]
        assert http.get(f"{name}/doc").status_code == 404
        assert http.get(f"{name}/doc", params={"version-id": second}).content == b"two"
        assert http.get(f"{name}/doc", params={"version-id": marker}).status_code == 404
        listed = http.get(name, params={"versions": "", "format": "json"}).json()
        assert [(e["version_id"], e["is_latest"], e["content_type"]) for e in listed] == [
            (marker, True, "application/x-deleted;swift_versions_deleted=1"),
            (second, False, "application/octet-stream"),
            (first, False, "application/octet-stream"),
        ]

        # Versions go one by one; the container goes once none is left.
        assert http.delete(name).status_code == 409
        for version in (marker, second, first):
            assert http.delete(f"{name}/doc", params={"version-id": version}).status_code == 204
        assert http.delete(f"{name}/doc", params={"version-id": first}).status_code == 404
        assert http.get(name, params={"versions": "", "format": "json"}).status_code in (200, 204)
        assert http.delete(name).status_code == 204


def test_swift_cli_lists_downloads_and_deletes_versions(cloud: CloudRunner, tmp_path: Path):
    name = unique("verscli")
    swift(cloud, "post", name, "-H", "X-Versions-Enabled: true")
    (tmp_path / "notes").write_bytes(b"first draft")
    swift(cloud, "upload", name, "notes", cwd=tmp_path)
    (tmp_path / "notes").write_bytes(b"second draft")
    swift(cloud, "upload", name, "notes", cwd=tmp_path)
    versions = swift(cloud, "list", "--versions", name, "--long")
    # <bytes> <date> <time> <version id> <content type> <name>, newest first
    ids = [line.split()[3] for line in versions.splitlines() if line.rstrip().endswith("notes")]
    assert len(ids) == 2, versions
    older = ids[1]
    swift(cloud, "download", name, "notes", "--version-id", older, "-o", str(tmp_path / "got"))
    assert (tmp_path / "got").read_bytes() == b"first draft"
    swift(cloud, "delete", name, "notes", "--version-id", older)
    with account_client(cloud, cloud.token("admin")) as http:
        left = http.get(name, params={"versions": "", "format": "json"}).json()
        assert [e["version_id"] for e in left] == [ids[0]]


def test_suspended_versioning_overwrites_null_versions(cloud: CloudRunner):
    name = unique("verssusp")
    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(name, headers={"X-Versions-Enabled": "true"}).status_code == 201
        kept = put(http, f"{name}/o", b"v1")
        assert http.post(name, headers={"X-Versions-Enabled": "false"}).status_code == 204
        assert http.head(name).headers["X-Versions-Enabled"] == "False"
        assert put(http, f"{name}/o", b"v2") == "null"
        assert put(http, f"{name}/o", b"v3") == "null"  # a null version is overwritten
        listed = http.get(name, params={"versions": "", "format": "json"}).json()
        assert [(e["version_id"], e["is_latest"]) for e in listed] == [
            ("null", True),
            (kept, False),
        ]
        assert http.get(f"{name}/o", params={"version-id": kept}).content == b"v1"
        # Enabled again: the null version is kept as it is, still with the id `null`.
        http.post(name, headers={"X-Versions-Enabled": "true"})
        newest = put(http, f"{name}/o", b"v4")
        listed = http.get(name, params={"versions": "", "format": "json"}).json()
        assert [e["version_id"] for e in listed] == [newest, "null", kept]
        assert http.get(f"{name}/o", params={"version-id": "null"}).content == b"v3"
        assert {http.get(f"{name}/o", params={"version-id": e["version_id"]}).content
                for e in listed} == {b"v1", b"v3", b"v4"}  # fmt: skip


def test_versioning_errors_are_swifts(cloud: CloudRunner):
    name, legacy = unique("verserr"), unique("versarch")
    with account_client(cloud, cloud.token("admin")) as http:
        http.put(legacy)
        http.put(name, headers={"X-Versions-Location": legacy})
        both = http.post(name, headers={"X-Versions-Enabled": "true"})
        assert both.status_code == 400 and "X-Versions-Location" in both.text
        other = unique("versok")
        http.put(other, headers={"X-Versions-Enabled": "true"})
        put(http, f"{other}/o", b"x")
        refused = http.put(f"{other}/o", params={"version-id": "1.00000"}, content=b"y")
        assert refused.status_code == 400
        assert http.post(f"{other}/o", params={"version-id": "1.00000"}).status_code == 400
        # A container name with NUL (the hidden containers' form) is refused.
        assert http.get("%00versions%00" + other).status_code == 412
