"""Durability on 3 device directories: a wiped device is refilled by the replicator, a
damaged replica is quarantined by the auditor and restored while reads stay right, a
down device's writes go to a handoff and move home, pending container updates are
replayed, expired objects are removed."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from cumulo.object_store.daemons.runner import run_once
from cumulo.object_store.storage.diskfile import read_metadata
from tests.cloudrunner import CloudRunner
from tests.functional.object_store_helpers import (
    admin_http_fixture,
    policy_cloud_fixture,
    replica_files,
    unique,
)

cloud = policy_cloud_fixture("object-durability")
http = admin_http_fixture()


def daemon(cloud: CloudRunner, name: str):
    return cloud.run_async(run_once(cloud.cloud.object_store, name))


def devices(cloud: CloudRunner) -> Path:
    return cloud.state_dir / "object-store" / "devices"


def good_replicas(cloud: CloudRunner, name_suffix: str, etag: str, index: int = 0) -> int:
    """Replica files of the object whose stored name ends with name_suffix, with bytes
    matching the ETag."""
    count = 0
    for path in replica_files(cloud, index):
        meta = read_metadata(path)
        if meta["name"].endswith(name_suffix):
            assert hashlib.md5(path.read_bytes()).hexdigest() == etag
            count += 1
    return count


def test_a_wiped_device_gets_every_object_back_from_the_replicator(cloud, http):
    name = unique("wipe")
    http.put(f"/{name}")
    bodies = {f"o{i}": bytes([i]) * (1000 + i) for i in range(20)}
    for obj, body in bodies.items():
        assert http.put(f"/{name}/{obj}", content=body).status_code == 201
    d1 = devices(cloud) / "d1"
    for child in d1.iterdir():
        shutil.rmtree(child)
    assert not any(d1.iterdir())
    stats = daemon(cloud, "replicator")
    assert stats.pushed > 0 and stats.failures == 0
    for obj, body in bodies.items():
        etag = hashlib.md5(body).hexdigest()
        assert good_replicas(cloud, f"/{name}/{obj}", etag) == 3
    # The container's and account's databases came back too.
    assert list(d1.glob("containers/*/*/*/*.db")) and list(d1.glob("accounts/*/*/*/*.db"))
    assert http.get(f"/{name}").text.split() == sorted(bodies)


def test_a_damaged_replica_is_quarantined_then_restored_and_reads_stay_right(cloud, http):
    name = unique("rot")
    http.put(f"/{name}")
    body = b"precious bytes " * 1000
    etag = http.put(f"/{name}/doc", content=body).headers["ETag"]
    victim = next(
        p for p in replica_files(cloud) if read_metadata(p)["name"].endswith(f"/{name}/doc")
    )
    raw = bytearray(victim.read_bytes())
    raw[100:110] = b"XXXXXXXXXX"
    victim.write_bytes(bytes(raw))
    stats = daemon(cloud, "auditor")
    assert stats.quarantined == 1
    assert list(victim.parents[4].glob("quarantined/objects/*"))
    assert good_replicas(cloud, f"/{name}/doc", etag) == 2
    for _ in range(3):  # every read, whichever replica it tries first
        assert http.get(f"/{name}/doc").content == body
    daemon(cloud, "replicator")
    assert good_replicas(cloud, f"/{name}/doc", etag) == 3


def test_a_down_device_gets_its_writes_through_a_handoff_and_they_move_home(cloud, http):
    name = unique("handoff")
    assert http.put(f"/{name}", headers={"X-Storage-Policy": "bronze"}).status_code == 201
    store = cloud.cloud.object_store
    ring = store.policies.by_name("bronze").ring
    account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]
    # An object whose two primaries include d0, which goes down.
    obj = next(
        f"o{i}"
        for i in range(100)
        if "d0" in {n.device for n in ring.get_nodes(account, name, f"o{i}")[1]}
    )
    d0 = devices(cloud) / "d0"
    d0.rename(d0.with_name("d0.off"))
    try:
        r = http.put(f"/{name}/{obj}", content=b"written while d0 was down")
        assert r.status_code == 201
        assert http.get(f"/{name}/{obj}").content == b"written while d0 was down"
        held = {p.parts[-6] for p in replica_files(cloud, 1)}
        assert held == {"d1", "d2"}  # the other primary and the handoff
    finally:
        d0.with_name("d0.off").rename(d0)
    daemon(cloud, "replicator")
    part, primaries = ring.get_nodes(account, name, obj)
    held = {p.parts[-6] for p in replica_files(cloud, 1) if read_metadata(p)["name"].endswith(obj)}
    assert held == {n.device for n in primaries}
    daemon(cloud, "updater")
    assert not list(devices(cloud).glob("*/async_pending/*"))
    assert http.get(f"/{name}").text.split() == [obj]


def test_container_updates_wait_as_async_pendings_until_the_updater_replays_them(cloud, http):
    name = unique("pending")
    http.put(f"/{name}")
    store = cloud.cloud.object_store
    account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]
    part, nodes = store.container_ring.get_nodes(account, name)
    # The proxy knows the container (it caches its info a few seconds, as Swift's
    # memcache), then every replica of its database goes missing: updates cannot land.
    assert http.head(f"/{name}").status_code == 204
    dbs = [devices(cloud) / n.device / "containers" / str(part) for n in nodes]
    for db in dbs:
        db.rename(db.with_name(f"{part}.away"))
    try:
        assert http.put(f"/{name}/late", content=b"x").status_code == 201
        assert len(list(devices(cloud).glob("*/async_pending/*"))) == 3
        assert daemon(cloud, "updater").left == 3
    finally:
        for db in dbs:
            db.with_name(f"{part}.away").rename(db)
    stats = daemon(cloud, "updater")
    assert stats.done == 3
    listing = json.loads(http.get(f"/{name}", params={"format": "json"}).text)
    assert [o["name"] for o in listing] == ["late"]


def _account_usage(http) -> tuple[int, int]:
    head = http.head("")
    return int(head.headers["X-Account-Object-Count"]), int(head.headers["X-Account-Bytes-Used"])


def test_the_account_shows_object_uploads_once_their_batch_is_reported(cloud, http):
    """The container counts an object at once; the account within a moment (the batched
    account update), or at once when the updater's pass has run."""
    name = unique("usage")
    http.put(f"/{name}")
    objects, used = _account_usage(http)
    for i in range(4):
        assert http.put(f"/{name}/o{i}", content=b"x" * 100).status_code == 201
    head = http.head(f"/{name}")
    assert head.headers["X-Container-Object-Count"] == "4"
    deadline = time.monotonic() + 10
    while _account_usage(http) != (objects + 4, used + 400) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _account_usage(http) == (objects + 4, used + 400)
    assert http.put(f"/{name}/big", content=b"y" * 1000).status_code == 201
    daemon(cloud, "updater")
    assert _account_usage(http) == (objects + 5, used + 1400)
    listed = http.get("", params={"format": "json", "prefix": name}).json()
    assert (listed[0]["count"], listed[0]["bytes"]) == (5, 1400)


def test_the_updater_reports_containers_whose_batch_never_reached_the_account(cloud, http):
    """An account update lost (the account's devices away when the batch went): the
    container remembers it was not reported, and the updater's pass reports it."""
    name = unique("unreported")
    http.put(f"/{name}")
    objects, used = _account_usage(http)
    store = cloud.cloud.object_store
    account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]
    part, nodes = store.account_ring.get_nodes(account)
    dbs = [devices(cloud) / n.device / "accounts" / str(part) for n in nodes]
    for db in dbs:
        db.rename(db.with_name(f"{part}.away"))
        db.write_bytes(b"")  # a file: no account database can be made here meanwhile
    try:
        assert http.put(f"/{name}/o", content=b"z" * 7).status_code == 201
        store.node.account_updates.flush()
    finally:
        for db in dbs:
            db.unlink()
            db.with_name(f"{part}.away").rename(db)
    time.sleep(0.5)  # the batch thread has nothing left to send
    assert _account_usage(http) == (objects, used)
    assert daemon(cloud, "updater").containers_reported >= 1
    assert _account_usage(http) == (objects + 1, used + 7)


def test_the_expirer_removes_expired_objects_from_disk_and_listings(cloud, http):
    name = unique("expire")
    http.put(f"/{name}")
    http.put(f"/{name}/brief", content=b"x", headers={"X-Delete-After": "1"})
    http.put(f"/{name}/lasting", content=b"y")
    time.sleep(2.1)
    assert daemon(cloud, "expirer").expired == 1
    assert http.get(f"/{name}").text.split() == ["lasting"]
    names = [read_metadata(p)["name"] for p in replica_files(cloud)]
    assert not any(n.endswith(f"/{name}/brief") for n in names)
