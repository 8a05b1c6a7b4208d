"""Object Storage across hosts: the proxy of `cumulo up` and two storage hosts, each a
`cumulo object-server` process serving its own device directories on its own address,
found through the ring (HTTP between the proxy and the nodes, as Swift). A storage host
stopped: uploads still succeed on handoff devices, downloads and listings still answer;
back again: its replicator-run moves the data home and the handoffs let go.

The hosts are processes on loopback with their own ports and device directories: what
differs from separate machines is only the network."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from cumulo.object_store.policies import object_ring_name
from cumulo.object_store.ring.builder import RingBuilder
from cumulo.object_store.ring.setup import devices_dir, ring_names, rings_dir
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir, free_port, wait_for_port
from tests.functional.object_store_helpers import swift, unique


def _data_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.data"))


class StorageHost:
    """A `cumulo object-server` process and its device directories."""

    def __init__(self, state: Path, root: Path, devices: list[str]) -> None:
        self.state, self.root, self.port = state, root, free_port()
        for device in devices:
            (root / device).mkdir(parents=True)
        self.proc: subprocess.Popen | None = None

    @property
    def bind(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "cumulo"), "object-server", "--state-dir", str(self.state),
             "--devices", str(self.root), "--bind", self.bind, "--no-daemons"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for_port(self.port, 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def replicate(self) -> str:
        """One replicator pass over this host's devices (pushes to the other hosts)."""
        done = subprocess.run(
            [str(VENV_BIN / "cumulo"), "object-store", "run-once", "--state-dir",
             str(self.state), "--devices", str(self.root), "--bind", self.bind, "replicator"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The proxy host with d0; host A with d1 (zone 2) and d3 (zone 2, where handoffs
    go); host B with d2 (zone 3). Three replicas: one per zone, so d0 and d2 hold one
    of every partition and d1 or d3 the third."""
    state = tmp_path_factory.mktemp("object-hosts")
    configure_state_dir(state)
    config = load_config(state)
    config.object_store.replicator_interval = 0
    config.object_store.updater_interval = 0
    config.object_store.auditor_interval = 0
    config.object_store.storage_port = free_port()  # d0, for the other hosts
    write_config(state, config)
    base = tmp_path_factory.mktemp("storage-hosts")
    a = StorageHost(state, base / "a", ["d1", "d3"])
    b = StorageHost(state, base / "b", ["d2"])
    proxy_devices = devices_dir(config, state)
    (proxy_devices / "d0").mkdir(parents=True)
    here = (config.catalog_host, config.object_store.storage_port)
    layout = [(1, *here, "d0"), (2, "127.0.0.1", a.port, "d1"), (3, "127.0.0.1", b.port, "d2"),
              (2, "127.0.0.1", a.port, "d3")]  # fmt: skip
    replicas = {object_ring_name(p.index): p.replicas for p in config.object_store.policies}
    rings = rings_dir(config, state)
    rings.mkdir(parents=True, exist_ok=True)
    for name in ring_names(config):
        builder = RingBuilder(4, min(replicas.get(name, 3), 3), 0)
        for zone, ip, port, device in layout:
            builder.add_device(region=1, zone=zone, ip=ip, port=port, device=device, weight=100)
        builder.rebalance(seed=0)
        builder.save(rings / f"{name}.builder.json")
        builder.write_ring(rings / f"{name}.ring.json")
    a.start()
    b.start()
    cloud = CloudRunner(state).start()
    try:
        yield cloud, proxy_devices, a, b
    finally:
        cloud.stop()
        a.stop()
        b.stop()


def test_objects_live_on_the_storage_hosts_and_survive_one_going_away(cluster, tmp_path):
    cloud, proxy_devices, a, b = cluster
    name = unique("hosts")
    blobs = {f"obj{i}": os.urandom(50_000 + i) for i in range(10)}
    for key in list(blobs)[:5]:
        (tmp_path / key).write_bytes(blobs[key])
        swift(cloud, "upload", name, key, cwd=tmp_path)
    # Three replicas each: one on the proxy host's d0, one on host B, one on host A.
    assert (_data_files(proxy_devices), _data_files(b.root), _data_files(a.root)) == (5, 5, 5)
    assert sorted(swift(cloud, "list", name).split()) == sorted(list(blobs)[:5])

    # Host B goes away: uploads still succeed (a handoff on host A takes B's replica).
    b.stop()
    for key in list(blobs)[5:]:
        (tmp_path / key).write_bytes(blobs[key])
        swift(cloud, "upload", name, key, cwd=tmp_path)
    assert _data_files(b.root) == 5
    assert _data_files(a.root) == 15  # its own 10 and the 5 handoffs for B
    assert sorted(swift(cloud, "list", name).split()) == sorted(blobs)
    for key, data in blobs.items():
        swift(cloud, "download", name, key, "-o", str(tmp_path / f"{key}.got"))
        assert (tmp_path / f"{key}.got").read_bytes() == data

    # Back again: host A's replicator sends B what it missed and drops the handoffs.
    b.start()
    a.replicate()
    assert _data_files(b.root) == 10
    assert _data_files(a.root) == 10
    for data in blobs.values():
        on_b = [p for p in b.root.rglob("*.data") if p.stat().st_size == len(data)]
        assert len(on_b) == 1 and hashlib.md5(on_b[0].read_bytes()).digest() == (
            hashlib.md5(data).digest()
        )
    stat = swift(cloud, "stat", name)
    assert "Objects: 10" in stat


def test_admin_info_is_refused_without_an_admin_key(cluster):
    cloud = cluster[0]
    url = f"http://127.0.0.1:{cloud.config.ports.object_store}/info"
    asked = httpx.get(url, params={"swiftinfo_sig": "x", "swiftinfo_expires": "1"})
    assert asked.status_code == 403
