"""Container sync with realms (Swift's container_sync middleware and container-sync
daemon): the `swift` CLI sets X-Container-Sync-To/-Key, the daemon sends objects and
deletions signed with X-Container-Sync-Auth, the destination checks the signature.
Every replica of a container sends its share of the rows, and the others' on its second
pass; large objects go as manifests, symlinks as links."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import httpx
import pytest

from cumulo.object_store import container_sync
from cumulo.object_store.daemons.container_sync import share_of
from cumulo.object_store.daemons.runner import run_once
from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.object_store_helpers import account_client, swift, unique


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    def configure(config) -> None:
        # Passes run when a test asks, not behind its back.
        for daemon in ("replicator", "auditor", "updater", "expirer", "container_sync"):
            setattr(config.object_store, f"{daemon}_interval", 0)

    with running_cloud(tmp_path_factory.mktemp("container-sync"), configure) as runner:
        yield runner


@pytest.fixture(scope="module")
def admin(cloud: CloudRunner):
    with account_client(cloud, cloud.token("admin")) as client:
        yield client


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner):
    with account_client(cloud, cloud.token("demo", project="demo")) as client:
        yield client


def run_once_daemon(cloud: CloudRunner, name: str):
    return cloud.run_async(run_once(cloud.cloud.object_store, name))


def sync_pass(cloud: CloudRunner):
    return run_once_daemon(cloud, "container_sync")


def account_of(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/").rsplit("/", 1)[1]


def names(client: httpx.Client, container: str) -> list[str]:
    return [o["name"] for o in client.get(f"/{container}", params={"format": "json"}).json()]


def test_info_lists_the_realm_and_this_cluster(cloud: CloudRunner):
    info = httpx.get(f"http://127.0.0.1:{cloud.config.ports.object_store}/info").json()
    assert info["container_sync"] == {
        "realms": {"CUMULO": {"clusters": {"LOCAL": {"current": True}}}}
    }
    # `cumulo init` made the realm's key: secret, in the 0600 config.
    realm = cloud.config.object_store.container_sync_realms[0]
    assert len(realm.key) == 64
    assert (cloud.state_dir / "cumulo.toml").stat().st_mode & 0o777 == 0o600


def test_two_projects_containers_sync_both_ways(cloud: CloudRunner, admin, demo, tmp_path):
    mine, theirs = unique("sync-a"), unique("sync-b")
    mine_to = f"//cumulo/local/{account_of(demo)}/{theirs}"
    theirs_to = f"//cumulo/local/{account_of(admin)}/{mine}"
    # The swift CLI's own options for it (-t/--sync-to, -k/--sync-key).
    swift(cloud, "post", "-t", mine_to, "-k", "shared-secret", mine)
    swift(cloud, "post", "-t", theirs_to, "-k", "shared-secret", theirs, user="demo")
    (tmp_path / "from-admin.txt").write_text("made by admin")
    swift(cloud, "upload", "--object-name", "from-admin.txt", mine, "from-admin.txt", cwd=tmp_path)
    assert (
        admin.post(f"/{mine}/from-admin.txt", headers={"X-Object-Meta-Color": "blue"}).status_code
        == 202
    )
    put = demo.put(
        f"/{theirs}/dir/from demo.bin",
        content=b"\x00demo bytes",
        headers={"Content-Type": "application/x-demo", "X-Object-Meta-Origin": "demo"},
    )
    assert put.status_code == 201
    source_ts = demo.head(f"/{theirs}/dir/from demo.bin").headers["X-Timestamp"]

    stats = sync_pass(cloud)
    assert stats.puts == 2 and stats.failures == 0
    expected = ["dir/from demo.bin", "from-admin.txt"]
    assert names(admin, mine) == expected
    assert names(demo, theirs) == expected
    # The objects as they were: bytes, type, metadata and the source's timestamp.
    copy = admin.get(f"/{mine}/dir/from demo.bin")
    assert copy.content == b"\x00demo bytes"
    assert copy.headers["Content-Type"] == "application/x-demo"
    assert copy.headers["X-Object-Meta-Origin"] == "demo"
    assert copy.headers["X-Timestamp"] == source_ts
    other = demo.get(f"/{theirs}/from-admin.txt")
    assert other.text == "made by admin"
    assert other.headers["X-Object-Meta-Color"] == "blue"

    # Sync points: a pass with nothing new sends nothing again (the rows the other
    # side's sync wrote are already there, as new: HEAD says so). Each replica's second
    # stage looks once more at the rows its first stage passed (the backstop for the
    # other replicas' shares); then there is nothing left to look at.
    for _ in range(2):
        again = sync_pass(cloud)
        assert again.puts == 0 and again.deletes == 0 and again.failures == 0
    quiet = sync_pass(cloud)
    assert (quiet.puts, quiet.deletes, quiet.skipped) == (0, 0, 0)

    # Deletions travel too.
    swift(cloud, "delete", mine, "from-admin.txt")
    assert sync_pass(cloud).deletes >= 1
    assert names(demo, theirs) == ["dir/from demo.bin"]
    assert demo.get(f"/{theirs}/from-admin.txt").status_code == 404


def test_the_sync_key_is_shown_to_owners_only(cloud: CloudRunner, admin, demo):
    name = unique("keyed")
    created = admin.put(
        f"/{name}",
        headers={
            "X-Container-Sync-To": f"//cumulo/local/{account_of(demo)}/{name}",
            "X-Container-Sync-Key": "owner-only",
            "X-Container-Read": ".r:*,.rlistings",
        },
    )
    assert created.status_code == 201
    head = admin.head(f"/{name}").headers
    assert head["X-Container-Sync-Key"] == "owner-only"
    assert head["X-Container-Sync-To"].startswith("//cumulo/local/")
    seen = demo.head(f"{str(admin.base_url).rstrip('/')}/{name}")
    assert seen.status_code == 204
    seen = seen.headers
    assert "X-Container-Sync-Key" not in seen and "X-Container-Sync-To" not in seen


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("//nope/local/AUTH_x/c", "No realm key for 'nope'"),
        ("//cumulo/elsewhere/AUTH_x/c", "No cluster endpoint for 'cumulo' 'elsewhere'"),
        ("//cumulo/local/AUTH_x", "Invalid X-Container-Sync-To format '//cumulo/local/AUTH_x'"),
        ("ftp://127.0.0.1/v1/AUTH_x/c", "Invalid scheme 'ftp' in X-Container-Sync-To"),
        ("http://example.com/v1/AUTH_x/c", "Invalid host 'example.com' in X-Container-Sync-To"),
    ],
)
def test_bad_sync_to_values_are_refused_with_swifts_messages(admin, value, message):
    name = unique("refused")
    put = admin.put(f"/{name}", headers={"X-Container-Sync-To": value})
    assert put.status_code == 400
    assert put.text.startswith(message)
    assert admin.head(f"/{name}").status_code == 404  # nothing made
    assert admin.put(f"/{name}").status_code == 201
    post = admin.post(f"/{name}", headers={"X-Container-Sync-To": value, "X-Container-Meta-A": "1"})
    assert post.status_code == 400
    head = admin.head(f"/{name}").headers
    assert "X-Container-Sync-To" not in head and "X-Container-Meta-A" not in head


def test_a_wrong_key_is_refused_and_nothing_is_written(cloud: CloudRunner, admin, demo):
    source, dest = unique("wrong-a"), unique("wrong-b")
    assert demo.put(f"/{dest}", headers={"X-Container-Sync-Key": "right"}).status_code == 201
    headers = {
        "X-Container-Sync-To": f"//cumulo/local/{account_of(demo)}/{dest}",
        "X-Container-Sync-Key": "wrong",
    }
    assert admin.put(f"/{source}", headers=headers).status_code == 201
    assert admin.put(f"/{source}/obj", content=b"data").status_code == 201
    stats = sync_pass(cloud)
    assert stats.failures >= 1
    assert names(demo, dest) == []
    # The row is tried again once the keys agree (the sync point stayed before it).
    assert demo.post(f"/{dest}", headers={"X-Container-Sync-Key": "wrong"}).status_code == 204
    cloud.cloud.object_store.proxy.forget_container(account_of(demo), dest)
    time.sleep(0.1)
    assert sync_pass(cloud).puts >= 1
    assert names(demo, dest) == ["obj"]


def test_requests_signed_badly_get_401(cloud: CloudRunner, demo):
    dest = unique("signed")
    assert demo.put(f"/{dest}", headers={"X-Container-Sync-Key": "k"}).status_code == 201
    url = f"{str(demo.base_url).rstrip('/')}/{dest}/obj"
    path = httpx.URL(url).raw_path.decode()
    realm = cloud.config.object_store.container_sync_realms[0]
    ts = "1700000000.00000"
    nonce = uuid.uuid4().hex
    good = container_sync.signature("PUT", path, ts, nonce, realm.key, "k")
    for auth in (
        f"CUMULO {nonce} {container_sync.signature('PUT', path, ts, nonce, realm.key, 'x')}",
        f"CUMULO {nonce} {container_sync.signature('PUT', path, ts, nonce, 'other', 'k')}",
        f"ELSEWHERE {nonce} {good}",
        f"CUMULO {good}",
    ):
        refused = httpx.put(
            url, content=b"x", headers={"X-Container-Sync-Auth": auth, "X-Timestamp": ts}
        )
        assert refused.status_code == 401
        assert refused.text.startswith("X-Container-Sync-Auth header not valid")
        assert refused.headers["WWW-Authenticate"].startswith("SwiftContainerSync")
    assert names(demo, dest) == []
    # Signed right, no token: written, with the timestamp given.
    ok = httpx.put(url, content=b"x", headers={"X-Container-Sync-Auth": f"CUMULO {nonce} {good}",
                                               "X-Timestamp": ts})  # fmt: skip
    assert ok.status_code == 201
    assert demo.head(f"/{dest}/obj").headers["X-Timestamp"] == ts
    # Only for the container whose key signed it: not a POST (metadata) or a listing.
    post = httpx.post(url, headers={"X-Container-Sync-Auth": f"CUMULO {nonce} {good}"})
    assert post.status_code in (401, 405)


def test_a_versioned_container_is_not_synced(admin, demo):
    name = unique("versioned")
    assert admin.put(f"/{name}", headers={"X-Versions-Enabled": "true"}).status_code == 201
    refused = admin.post(
        f"/{name}",
        headers={"X-Container-Sync-To": f"//cumulo/local/{account_of(demo)}/{name}"},
    )
    assert refused.status_code == 400
    assert refused.text == (
        "Cannot configure container sync on a container with object versioning configured."
    )


def test_old_style_full_urls_sync_with_the_key_alone(cloud: CloudRunner, admin, demo):
    source, dest = unique("full-a"), unique("full-b")
    assert demo.put(f"/{dest}", headers={"X-Container-Sync-Key": "plain"}).status_code == 201
    dest_url = f"{str(demo.base_url).rstrip('/')}/{dest}"  # on 127.0.0.1, an allowed host
    headers = {"X-Container-Sync-To": dest_url, "X-Container-Sync-Key": "plain"}
    assert admin.put(f"/{source}", headers=headers).status_code == 201
    assert admin.put(f"/{source}/one", content=b"1").status_code == 201
    assert sync_pass(cloud).puts >= 1
    assert demo.get(f"/{dest}/one").content == b"1"
    # Without the container's key (or a token), an object write is refused.
    wrong = httpx.put(
        f"{dest_url}/two",
        content=b"2",
        headers={"X-Container-Sync-Key": "guess", "X-Timestamp": "1700000000.00000"},
    )
    assert wrong.status_code == 401
    assert names(demo, dest) == ["one"]


def test_a_failing_row_does_not_hold_back_the_rows_after_it(cloud: CloudRunner, admin, demo):
    source, dest = unique("quota-a"), unique("quota-b")
    # The destination takes 5 bytes at most: the first object is refused there (413).
    dest_headers = {"X-Container-Sync-Key": "q", "X-Container-Meta-Quota-Bytes": "5"}
    assert demo.put(f"/{dest}", headers=dest_headers).status_code == 201
    sync_to = {"X-Container-Sync-To": f"//cumulo/local/{account_of(demo)}/{dest}"}
    assert (
        admin.put(f"/{source}", headers={**sync_to, "X-Container-Sync-Key": "q"}).status_code == 201
    )
    assert admin.put(f"/{source}/big", content=b"0123456789").status_code == 201
    assert admin.put(f"/{source}/small", content=b"1").status_code == 201
    stats = sync_pass(cloud)
    assert stats.failures == 1 and stats.puts >= 1
    assert names(demo, dest) == ["small"]
    # The failed row is tried again on the next pass.
    assert (
        demo.post(f"/{dest}", headers={"X-Remove-Container-Meta-Quota-Bytes": "x"}).status_code
        == 204
    )
    cloud.cloud.object_store.proxy.forget_container(account_of(demo), dest)
    again = sync_pass(cloud)
    assert again.failures == 0
    assert names(demo, dest) == ["big", "small"]


def synced_pair(admin: httpx.Client, demo: httpx.Client, source: str, dest: str, key: str):
    """admin's `source` syncing to demo's `dest`, which takes the same key."""
    assert demo.put(f"/{dest}", headers={"X-Container-Sync-Key": key}).status_code == 201
    headers = {
        "X-Container-Sync-To": f"//cumulo/local/{account_of(demo)}/{dest}",
        "X-Container-Sync-Key": key,
    }
    assert admin.put(f"/{source}", headers=headers).status_code == 201


def test_every_replica_sends_its_share_and_the_others_cover_a_lost_one(
    cloud: CloudRunner, admin, demo
):
    source, dest = unique("shares-a"), unique("shares-b")
    synced_pair(admin, demo, source, dest, "shares")
    account = account_of(admin)
    ring = cloud.cloud.object_store.container_ring
    _part, primaries = ring.get_nodes(account, source)
    assert len({n.device for n in primaries}) == 3  # 3 replicas on 3 devices
    # Two objects of each replica's share (the rows whose name hashes to its place).
    shares: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for i in range(1000):
        name = f"obj-{i}"
        owner = share_of(ring.hash_of(account, source, name), 3)
        if len(shares[owner]) < 2:
            shares[owner].append(name)
    assert all(len(names_) == 2 for names_ in shares.values())
    everything = sorted(sum(shares.values(), []))
    for name in everything:
        assert admin.put(f"/{source}/{name}", content=name.encode()).status_code == 201

    # The third replica's device is gone before any pass.
    lost = cloud.state_dir / "object-store" / "devices" / primaries[2].device
    away = lost.with_name(f"{lost.name}.off")
    lost.rename(away)
    try:
        sync_pass(cloud)
        # The two replicas left sent their own shares only...
        assert names(demo, dest) == sorted(shares[0] + shares[1])
        # ...and, on their second pass, every row: the lost replica's share too.
        assert sync_pass(cloud).failures == 0
        assert names(demo, dest) == everything
        for name in everything:
            assert demo.get(f"/{dest}/{name}").content == name.encode()
    finally:
        away.rename(lost)
    run_once_daemon(cloud, "replicator")  # the device back gets what it missed
    # The replica back sends its share (already there: HEAD says so, nothing is sent),
    # and every replica keeps its own sync points for the container.
    back = sync_pass(cloud)
    assert back.puts == 0 and back.failures == 0
    points = json.loads((cloud.state_dir / "object-store" / "container-sync.json").read_text())
    mine = {key.split("/")[0]: value for key, value in points.items() if key.endswith(source)}
    assert sorted(mine) == sorted(n.device for n in primaries)
    assert all(p["point1"] >= len(everything) for p in mine.values())
    assert names(demo, dest) == everything


def test_a_large_object_and_symlinks_sync_as_what_they_are(cloud: CloudRunner, admin, demo):
    objects, segments = unique("slo"), unique("slo-segs")
    # The manifest names its segments' container: synced to one of the same name.
    synced_pair(admin, demo, objects, objects, "slo")
    synced_pair(admin, demo, segments, segments, "slo")
    one, two = b"first segment|", b"0123456789"
    for name, body in (("one", one), ("two", two)):
        assert admin.put(f"/{segments}/{name}", content=body).status_code == 201
    manifest = [
        {"path": f"/{segments}/one", "etag": hashlib.md5(one).hexdigest()},
        {"path": f"/{segments}/two", "range": "2-5"},
    ]
    put = admin.put(
        f"/{objects}/big",
        params={"multipart-manifest": "put"},
        json=manifest,
        headers={"Content-Type": "text/x-big", "X-Object-Meta-Kind": "slo"},
    )
    assert put.status_code == 201
    assert admin.put(f"/{objects}/plain", content=b"plain bytes").status_code == 201
    link = {"X-Symlink-Target": f"{objects}/plain"}
    assert admin.put(f"/{objects}/link", headers=link).status_code == 201
    pinned = {
        "X-Symlink-Target": f"{segments}/one",
        "X-Symlink-Target-Etag": hashlib.md5(one).hexdigest(),
    }
    assert admin.put(f"/{objects}/pinned", headers=pinned).status_code == 201

    stats = sync_pass(cloud)
    assert stats.failures == 0 and stats.puts >= 6
    # The large object: its manifest as it was, read whole through the synced segments.
    got = demo.get(f"/{objects}/big")
    assert got.status_code == 200
    assert got.content == one + two[2:6]
    source = admin.head(f"/{objects}/big").headers
    for header in ("ETag", "X-Timestamp", "Content-Type", "X-Object-Meta-Kind"):
        assert got.headers[header] == source[header]
    assert got.headers["X-Static-Large-Object"] == "True"
    kept = demo.get(f"/{objects}/big", params={"multipart-manifest": "get"}).json()
    assert kept == admin.get(f"/{objects}/big", params={"multipart-manifest": "get"}).json()
    # The links: links there too, read through to their (synced) targets.
    assert demo.get(f"/{objects}/link").content == b"plain bytes"
    itself = demo.head(f"/{objects}/link", params={"symlink": "get"}).headers
    assert itself["X-Symlink-Target"] == f"{objects}/plain"
    assert demo.get(f"/{objects}/pinned").content == one
    itself = demo.head(f"/{objects}/pinned", params={"symlink": "get"}).headers
    assert itself["X-Symlink-Target-Etag"] == hashlib.md5(one).hexdigest()
    source = admin.head(f"/{objects}/pinned", params={"symlink": "get"}).headers
    assert itself["X-Timestamp"] == source["X-Timestamp"]
    # As new there as here: the next passes send nothing again.
    for _ in range(2):
        again = sync_pass(cloud)
        assert again.puts == 0 and again.failures == 0


def test_a_sync_put_of_a_manifest_must_be_one(cloud: CloudRunner, demo):
    dest = unique("slo-bad")
    assert demo.put(f"/{dest}", headers={"X-Container-Sync-Key": "k"}).status_code == 201
    url = f"{str(demo.base_url).rstrip('/')}/{dest}/big"
    path = httpx.URL(url).raw_path.decode()
    realm = cloud.config.object_store.container_sync_realms[0]
    ts, nonce = "1700000000.00000", uuid.uuid4().hex
    sig = container_sync.signature("PUT", path, ts, nonce, realm.key, "k")
    headers = {
        "X-Container-Sync-Auth": f"CUMULO {nonce} {sig}",
        "X-Timestamp": ts,
        "X-Static-Large-Object": "True",
    }
    refused = httpx.put(url, content=b'{"not": "a list"}', headers=headers)
    assert refused.status_code == 400
    assert refused.text.startswith("Manifest must be a list.")
    entries = b'[{"name": "/segs/one", "hash": "abc", "bytes": 3}]'
    wrong = httpx.put(url, content=entries, headers={**headers, "ETag": "0" * 32})
    assert wrong.status_code == 422
    assert names(demo, dest) == []
    # Without the sync signature, the header stays reserved (Swift's SLO middleware).
    reserved = demo.put(f"/{dest}/big", content=entries, headers={"X-Static-Large-Object": "1"})
    assert reserved.status_code == 400
    assert reserved.text.startswith("X-Static-Large-Object is a reserved header.")
