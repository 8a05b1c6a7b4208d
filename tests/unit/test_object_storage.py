"""The object store's pieces without HTTP: replica files, databases, ranges, ACLs,
TempURL signatures."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import time

import pytest

from cumulo.common.context import RequestContext
from cumulo.object_store.acl import container_acl_allows
from cumulo.object_store.api import tempurl
from cumulo.object_store.api.responses import Unsatisfiable, parse_range
from cumulo.object_store.storage import diskfile, timestamps
from cumulo.object_store.storage.databases import ContainerBroker, forget
from cumulo.object_store.storage.node import ContainerUpdate, Location, StorageNode


def _write(device, datadir, body: bytes, ts: str | None = None):
    writer = diskfile.ObjectWriter(device, datadir)
    writer.write(body)
    writer.commit(
        {
            "X-Timestamp": ts or timestamps.now(),
            "Content-Length": str(len(body)),
            "ETag": hashlib.md5(body).hexdigest(),
            "name": "/a/c/o",
        }
    )


def test_newest_write_wins_and_a_tombstone_hides_the_object(tmp_path):
    device = tmp_path / "d0"
    device.mkdir()
    datadir = diskfile.hash_dir(device, "objects", 1, "abc123")
    _write(device, datadir, b"old", "0000000001.00000")
    _write(device, datadir, b"new", "0000000002.00000")
    stored = diskfile.open_object(datadir)
    assert stored.path.read_bytes() == b"new"
    assert [p.name for p in datadir.iterdir()] == ["0000000002.00000.data"]
    diskfile.write_marker(device, datadir, "0000000003.00000", ".ts", {})
    with pytest.raises(diskfile.ObjectMissing) as missing:
        diskfile.open_object(datadir)
    assert missing.value.timestamp == "0000000003.00000"
    assert not list((device / "tmp").iterdir())


def test_metadata_goes_to_a_sidecar_where_xattrs_are_refused(tmp_path, monkeypatch):
    def no_xattrs(*_args):
        raise OSError(errno.ENOTSUP, "no xattrs here")

    monkeypatch.setattr(os, "setxattr", no_xattrs)
    monkeypatch.setattr(os, "getxattr", no_xattrs)
    device = tmp_path / "d0"
    device.mkdir()
    datadir = diskfile.hash_dir(device, "objects", 1, "abc")
    _write(device, datadir, b"payload")
    names = sorted(p.name for p in datadir.iterdir())
    assert names[0].endswith(".data") and names[1] == names[0] + ".json"
    assert diskfile.open_object(datadir).metadata["ETag"] == hashlib.md5(b"payload").hexdigest()


def test_a_replica_shorter_than_its_metadata_is_quarantined(tmp_path):
    device = tmp_path / "d0"
    device.mkdir()
    datadir = diskfile.hash_dir(device, "objects", 1, "abc")
    _write(device, datadir, b"0123456789")
    data = next(datadir.iterdir())
    os.truncate(data, 3)
    with pytest.raises(diskfile.Quarantined):
        diskfile.open_object(datadir)
    moved = diskfile.quarantine(device, "objects", datadir)
    assert moved.parent == device / "quarantined" / "objects" and not datadir.exists()


def test_an_unmounted_device_refuses_writes(tmp_path):
    with pytest.raises(diskfile.DeviceUnavailable):
        diskfile.ObjectWriter(tmp_path / "gone", tmp_path / "gone" / "x")


def test_container_listing_with_delimiter_reverse_and_counts(tmp_path):
    broker = ContainerBroker(tmp_path / "c.db")
    assert broker.initialize("a", "c", timestamps.now(), 0) == "created"
    for i, name in enumerate(["a/1", "a/2", "b", "c/x/y"]):
        broker.put_object(
            {
                "name": name,
                "created_at": timestamps.normalize(10 + i),
                "size": 5,
                "content_type": "t",
                "etag": "e",
                "deleted": 0,
            }
        )
    # An older write of "b" loses; a newer delete removes it from counts.
    broker.put_object(
        {
            "name": "b",
            "created_at": timestamps.normalize(1),
            "size": 99,
            "content_type": "t",
            "etag": "e",
            "deleted": 0,
        }
    )
    assert broker.info()["bytes_used"] == 20
    broker.put_object(
        {
            "name": "b",
            "created_at": timestamps.normalize(20),
            "size": 0,
            "content_type": "",
            "etag": "",
            "deleted": 1,
        }
    )
    info = broker.info()
    assert (info["object_count"], info["bytes_used"]) == (3, 15)
    rows = broker.list_objects(limit=10, delimiter="/")
    assert [r.get("subdir") or r["name"] for r in rows] == ["a/", "c/"]
    rows = broker.list_objects(limit=10, delimiter="/", prefix="c/")
    assert [r.get("subdir") or r["name"] for r in rows] == ["c/x/"]
    rows = broker.list_objects(limit=2, reverse=True)
    assert [r["name"] for r in rows] == ["c/x/y", "a/2"]
    assert broker.initialize("a", "c", timestamps.now(), 1) == "policy_conflict"
    assert broker.mark_deleted(timestamps.now()) is False


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", [(0, 10)]),
        ("bytes=-5", [(95, 100)]),
        ("bytes=90-", [(90, 100)]),
        ("bytes=0-0,50-59", [(0, 1), (50, 60)]),
        ("bytes=95-200", [(95, 100)]),
        ("bytes=9-2", None),  # malformed: ignored, the whole object
        ("items=0-1", None),
    ],
)
def test_ranges(header, expected):
    assert parse_range(header, 100) == expected


def test_unsatisfiable_ranges():
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=100-", 100)


def _ctx(project="p1", user="u1", roles=("member",), domain="default"):
    return RequestContext(
        auth_token="t",
        user_id=user,
        user_name=f"{user}-name",
        user_domain_id=domain,
        user_domain_name="Default",
        roles=frozenset(roles),
        expires_at="",
        project_id=project,
        project_name=f"{project}-name",
        project_domain_id=domain,
    )


def test_container_acls():
    assert container_acl_allows(".r:*", None, "")
    assert not container_acl_allows(".r:*", None, "", listing=True)
    assert container_acl_allows(".r:*,.rlistings", None, "", listing=True)
    assert not container_acl_allows(".r:*", None, "", write=True)
    assert container_acl_allows(".r:.example.com", None, "http://www.example.com/x")
    assert not container_acl_allows(".r:*,.r:-bad.com", None, "http://bad.com/")
    assert container_acl_allows("p1:u1", _ctx(), "")
    assert container_acl_allows("p1-name:u1-name", _ctx(), "")
    # Names only name the default domain's project and user (as Swift's keystoneauth).
    assert not container_acl_allows("p1-name:u1-name", _ctx(domain="d2"), "")
    assert container_acl_allows("p1:u1", _ctx(domain="d2"), "")
    assert container_acl_allows("p1:*", _ctx(user="other"), "")
    assert not container_acl_allows("p1:u1", _ctx(project="p2"), "")
    assert not container_acl_allows("p1:u1", None, "")


def test_tempurl_signatures_in_every_digest_and_form():
    expires = int(time.time()) + 60
    path = "/v1/AUTH_p/c/o"
    body = f"GET\n{expires}\n{path}".encode()
    sha1 = hmac.new(b"k", body, hashlib.sha1).hexdigest()
    assert tempurl._signature(sha1)[0] == "sha1"
    assert tempurl._signature(hmac.new(b"k", body, hashlib.sha512).hexdigest())[0] == "sha512"
    assert tempurl._signature("sha256:" + "A" * 43)[0] == "sha256"
    assert tempurl._signature("md5:abc") is None
    assert tempurl.parse_expires("2030-01-01T00:00:00Z") == 1893456000
    assert tempurl.parse_expires("tomorrow") is None


def _object_row(name: str, size: int, at: float) -> dict:
    return {"name": name, "created_at": timestamps.normalize(at), "size": size,
            "content_type": "t", "etag": "e", "deleted": 0, "storage_policy_index": 0}  # fmt: skip


def test_object_updates_reach_the_account_in_one_batch_after_the_fact(tmp_path):
    """As Swift's container-updater: an object update changes the container at once and
    its account only when the batch is reported, which records what it reported."""
    for device in ("d0", "d1"):
        (tmp_path / device).mkdir()
    node = StorageNode(tmp_path, "prefix", "suffix")
    node.account_updates.delay = 3600  # reported by flush() below, not by the thread
    container_at, account_at = Location("d0", 3), Location("d1", 7)
    for container in ("c1", "c2"):
        node.container_put(container_at, "AUTH_a", container, timestamps.normalize(1), 0, {},
                           account_at)  # fmt: skip
    for i in range(5):
        update = ContainerUpdate(container_at, account_at, "AUTH_a", f"c{i % 2 + 1}",
                                 _object_row(f"o{i}", 10, 2 + i))  # fmt: skip
        node.container_put_object(update)
    account = node.account_broker(account_at, "AUTH_a")
    assert (account.info()["objects"], account.info()["bytes"]) == (0, 0)
    c1 = node.container_broker(container_at, "AUTH_a", "c1")
    assert c1.info()["object_count"] == 3 and c1.unreported() is not None
    assert node.account_updates.pending() == 2
    assert node.account_updates.flush() == 2
    info = account.info()
    assert (info["containers"], info["objects"], info["bytes"]) == (2, 5, 50)
    assert c1.unreported() is None and node.account_updates.pending() == 0
    assert {c["name"]: c["object_count"] for c in account.list_containers(limit=10)} == {
        "c1": 3,
        "c2": 2,
    }


def test_a_container_database_of_version_1_gains_the_reported_columns(tmp_path):
    import sqlite3

    path = tmp_path / "c.db"
    broker = ContainerBroker(path)
    broker.initialize("a", "c", timestamps.normalize(1), 0)
    forget(path)
    conn = sqlite3.connect(path)
    for column in ("reported_put_timestamp", "reported_delete_timestamp",
                   "reported_object_count", "reported_bytes_used"):  # fmt: skip
        conn.execute(f"ALTER TABLE container_stat DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    broker.put_object(_object_row("o", 4, 2))
    assert broker.unreported()["bytes_used"] == 4
    broker.mark_reported(broker.info())
    assert broker.unreported() is None
