"""Container replicas that disagree about the storage policy, made for real through the
Swift API: a container in `gold` loses a replica's device, is deleted and re-created in
`bronze` on the others and filled; the device comes back still saying `gold`, and the
proxy, reading that replica first, writes and deletes objects in `gold`. The replicator
settles every replica on `bronze` (Swift's rules: the re-created container wins) and
queues the rows written in `gold`; the reconciler moves them into `bronze` (newest
version wins) and removes them from `gold`; running it again changes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from cumulo.common.config import StoragePolicyConfig, load_config, write_config
from cumulo.object_store.daemons.misplaced import MISPLACED_ACCOUNT
from cumulo.object_store.daemons.runner import run_once
from cumulo.object_store.proxy import ErrorLimiter
from cumulo.object_store.storage.diskfile import read_metadata
from cumulo.object_store.storage.node import Location
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.functional.object_store_helpers import admin_http_fixture, replica_files, unique

GOLD, BRONZE = 0, 1

http = admin_http_fixture()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """Two policies on three devices: `gold` (3 replicas, the default), `bronze` (2);
    every daemon runs only when the test asks."""
    state = tmp_path_factory.mktemp("object-reconciler")
    configure_state_dir(state)
    config = load_config(state)
    config.object_store.policies = [
        StoragePolicyConfig(index=GOLD, name="gold", default=True, replicas=3),
        StoragePolicyConfig(index=BRONZE, name="bronze", replicas=2),
    ]
    for daemon in ("replicator", "auditor", "updater", "expirer", "reconciler"):
        setattr(config.object_store, f"{daemon}_interval", 0)
    write_config(state, config)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


def daemon(cloud: CloudRunner, name: str):
    return cloud.run_async(run_once(cloud.cloud.object_store, name))


def data_files(cloud: CloudRunner, policy: int, container: str) -> dict[str, list[str]]:
    """The devices holding a .data file of each object of the container, per name."""
    found: dict[str, list[str]] = {}
    for path in replica_files(cloud, policy):
        account_container_obj = read_metadata(path)["name"]
        if account_container_obj.split("/")[2] == container:
            found.setdefault(account_container_obj.split("/", 3)[3], []).append(path.parts[-6])
    return {name: sorted(devices) for name, devices in found.items()}


def test_a_container_recreated_in_another_policy_while_a_replica_was_away_converges(cloud, http):
    store = cloud.cloud.object_store
    account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]
    # The device that goes away holds the container replica the proxy reads first, and
    # the account replica that replica reports to (the others' reports must land).
    away = store.account_ring.get_nodes(account)[1][0].device
    name = next(
        n
        for n in (unique("split") for _ in range(1000))
        if store.container_ring.get_nodes(account, n)[1][0].device == away
    )
    part, container_nodes = store.container_ring.get_nodes(account, name)
    devices = cloud.state_dir / "object-store" / "devices"

    def replica_policies() -> list[int]:
        return [
            store.node.container_broker(Location(n.device, part), account, name).info()[
                "storage_policy_index"
            ]
            for n in container_nodes
        ]

    def stale_view() -> None:
        """The proxy forgets the errors of the away device and the container's info:
        its next request reads the replica on that device first."""
        store.proxy.errors = ErrorLimiter()
        store.proxy.forget_container(account, name)

    assert http.put(f"/{name}", headers={"X-Storage-Policy": "gold"}).status_code == 201
    device = devices / away
    device.rename(device.with_name(f"{away}.off"))
    try:
        assert http.delete(f"/{name}").status_code == 204
        assert http.put(f"/{name}", headers={"X-Storage-Policy": "bronze"}).status_code == 201
        for obj in ("kept", "shared", "gone"):
            assert (
                http.put(f"/{name}/{obj}", content=f"{obj} in bronze".encode()).status_code == 201
            )
    finally:
        device.with_name(f"{away}.off").rename(device)
    assert sorted(replica_policies()) == [GOLD, BRONZE, BRONZE]

    # Through the replica that missed the delete and the re-create, the container is gold.
    stale_view()
    assert http.head(f"/{name}").headers["X-Storage-Policy"] == "gold"
    stale_body = b"written through the stale view " * 100
    r = http.put(f"/{name}/stale", content=stale_body, headers={"X-Object-Meta-Color": "blue"})
    assert r.status_code == 201
    stale_view()
    written = http.head(f"/{name}/stale").headers
    stale_view()
    assert http.put(f"/{name}/shared", content=b"shared, newer, in gold").status_code == 201
    stale_view()
    assert http.put(f"/{name}/fresh", content=b"fresh, older, in gold").status_code == 201
    stale_view()
    assert http.delete(f"/{name}/gone").status_code == 404  # no gold replica had it
    assert set(data_files(cloud, GOLD, name)) == {"stale", "shared", "fresh"}

    stats = daemon(cloud, "replicator")
    assert stats.failures == 0 and stats.policies_settled >= 1 and stats.misplaced_queued >= 4
    assert replica_policies() == [BRONZE] * 3
    daemon(cloud, "updater")
    store.proxy.forget_container(account, name)
    assert http.head(f"/{name}").headers["X-Storage-Policy"] == "bronze"
    # Written in the right policy after the gold one: this version must win.
    assert http.put(f"/{name}/fresh", content=b"fresh, newest, in bronze").status_code == 201

    stats = daemon(cloud, "reconciler")
    assert (stats.moved, stats.replayed, stats.removed) == (2, 1, 3)  # stale, shared; gone
    assert (stats.done, stats.left) == (4, 0)
    # The removals' own rows (deletes in gold) come to the queue under the pops of the
    # entries they finished (as in Swift): not replayed, nothing left to do.
    assert daemon(cloud, "replicator").failures == 0
    stats = daemon(cloud, "reconciler")
    assert (stats.moved, stats.replayed, stats.removed, stats.done, stats.left) == (0,) * 5

    bodies = {
        "fresh": b"fresh, newest, in bronze",
        "kept": b"kept in bronze",
        "shared": b"shared, newer, in gold",
        "stale": stale_body,
    }
    assert replica_policies() == [BRONZE] * 3
    for obj, body in bodies.items():
        assert http.get(f"/{name}/{obj}").content == body
    assert http.get(f"/{name}/gone").status_code == 404
    moved = http.head(f"/{name}/stale").headers
    for header in ("X-Timestamp", "ETag", "Last-Modified", "X-Object-Meta-Color"):
        assert moved[header] == written[header]
    listing = json.loads(http.get(f"/{name}", params={"format": "json"}).text)
    assert [(o["name"], o["bytes"], o["hash"]) for o in listing] == [
        (obj, len(body), hashlib.md5(body).hexdigest()) for obj, body in sorted(bodies.items())
    ]
    head = http.head(f"/{name}").headers
    assert int(head["X-Container-Object-Count"]) == len(bodies)
    assert int(head["X-Container-Bytes-Used"]) == sum(map(len, bodies.values()))

    # On disk: each object's bytes on its two bronze primaries, nothing left in gold.
    bronze = store.policies.by_index[BRONZE].ring
    held = data_files(cloud, BRONZE, name)
    assert held == {
        obj: sorted(n.device for n in bronze.get_nodes(account, name, obj)[1]) for obj in bodies
    }
    assert data_files(cloud, GOLD, name) == {}
    queue = cloud.run_async(store.proxy.account_listing(MISPLACED_ACCOUNT, {"limit": 100}))[1]
    for queue_container in queue:
        listed = cloud.run_async(
            store.proxy.container_listing(MISPLACED_ACCOUNT, queue_container["name"], {"limit": 10})
        )
        assert listed is None or listed[1] == []

    # Again, from the command line beside the running cloud: nothing left to do.
    done = subprocess.run(
        [str(VENV_BIN / "cumulo"), "object-store", "run-once", "--state-dir",
         str(cloud.state_dir), "reconciler"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "moved=0, replayed=0, removed=0, done=0, left=0" in done.stdout
    assert data_files(cloud, BRONZE, name) == held and data_files(cloud, GOLD, name) == {}
    for obj, body in bodies.items():
        assert http.get(f"/{name}/{obj}").content == body
