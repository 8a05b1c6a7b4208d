"""Object Storage across hosts: the proxy of `cumulo up` and two storage hosts, each a
`cumulo object-server` process serving its own device directories on its own address,
found through the ring (HTTP between the proxy and the nodes, as Swift). A storage host
stopped: uploads still succeed on handoff devices, downloads and listings still answer;
back again: its replicator-run moves the data home and the handoffs let go.

Between the hosts: every request signed with the cloud's backend key (others refused and
logged), rotated without a restart; a replica on another host streamed through to the
client (no local copy), the next replica taking over when its host fails half way; an
upload streamed to the other hosts as it arrives (no local copy), a host dying half way
through it dropped (quorum decides), a wrong ETag leaving nothing; a new host fetching
its rings from the proxy host and following a rebalance.

The hosts are processes on loopback with their own ports and device directories: what
differs from separate machines is only the network."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import socket
import subprocess
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cumulo.common.config import load_config, write_config
from cumulo.image.app import RECEIVE_WINDOW
from cumulo.object_store.cli import object_server
from cumulo.object_store.policies import object_ring_name
from cumulo.object_store.proxy import ErrorLimiter
from cumulo.object_store.ring.builder import RingBuilder
from cumulo.object_store.ring.setup import devices_dir, ring_names, rings_dir
from cumulo.object_store.storage import backend_auth
from cumulo.object_store.storage.diskfile import DeviceUnavailable
from cumulo.object_store.storage.node import Location
from cumulo.object_store.storage.remote import RemoteBody, RemoteNode
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir, free_port, wait_for_port
from tests.functional.object_store_helpers import account_client, storage_url, swift, unique


def _data_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.data"))


class StorageHost:
    """A `cumulo object-server` process and its device directories; its log in
    `<root>.log`."""

    def __init__(self, state: Path, root: Path, devices: list[str], *extra: str) -> None:
        self.state, self.root, self.port = state, root, free_port()
        self.extra = extra
        self.log = root.with_suffix(".log")
        for device in devices:
            (root / device).mkdir(parents=True)
        self.proc: subprocess.Popen | None = None

    @property
    def bind(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "cumulo"), "object-server", "--state-dir", str(self.state),
                 "--devices", str(self.root), "--bind", self.bind, "--no-daemons", *self.extra],
                stdout=log, stderr=log,
            )  # fmt: skip
        if wait:
            self.wait()

    def wait(self) -> None:
        assert self.proc is not None
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
    write_config(state, config)  # with the backend key `cumulo init` made
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
    try:
        a.start()
        b.start()
        cloud = CloudRunner(state).start()
        try:
            yield cloud, proxy_devices, a, b
        finally:
            cloud.stop()
    finally:  # the storage hosts go also when the cloud did not start
        a.stop()
        b.stop()


BIG = 32 << 20  # more than the sockets between the processes buffer


@pytest.fixture(scope="module")
def remote_object(cluster):
    """A 32 MiB object whose replica on the proxy host is gone: reads come from A or B.
    (container, object, bytes)."""
    cloud, proxy_devices, a, b = cluster
    # Host B was stopped by an earlier test: the proxy's error limiting would still put
    # it last, and both replicas on A. A fresh count, as after the limiting interval.
    cloud.cloud.object_store.proxy.errors = ErrorLimiter()
    container = unique("stream")
    data = os.urandom(BIG)
    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(container).status_code == 201
        assert http.put(f"{container}/big", content=data).status_code == 201
    here = [p for p in proxy_devices.rglob("*.data") if p.stat().st_size == BIG]
    assert len(here) == 1
    here[0].unlink()
    for host in (a, b):
        assert [p for p in host.root.rglob("*.data") if p.stat().st_size == BIG]
    return container, "big", data


def _slow_reader(cloud) -> httpx.Client:
    """A client with a small receive buffer: what it has not read yet stays on the
    storage host, not in flight (so a test can act while the host is still sending)."""
    token = cloud.token("admin")
    small = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)]
    transport = httpx.HTTPTransport(socket_options=small)
    return httpx.Client(base_url=storage_url(cloud, token), headers={"X-Auth-Token": token},
                        transport=transport, timeout=60)  # fmt: skip


def _open_files(pid: int | str) -> list[str]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.append(os.readlink(fd))
        except OSError:
            continue
    return found


def _serving(hosts, size: int):
    """The storage host holding a replica of `size` bytes open (the one sending it)."""
    for host in hosts:
        for target in _open_files(host.proc.pid):
            if target.endswith(".data") and os.path.getsize(target) == size:
                return host
    return None


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


def test_storage_hosts_refuse_unsigned_and_wrongly_signed_requests(cluster):
    cloud, proxy_devices, a, _ = cluster
    key = load_config(cloud.state_dir).object_store.backend_secret.encode()
    url = f"http://{a.bind}/device/d1"
    assert httpx.get(url).status_code == 401
    wrong_key = backend_auth.signed_headers(b"0" * 64, "GET", "/device/d1")
    assert httpx.get(url, headers=wrong_key).status_code == 403
    other_path = backend_auth.signed_headers(key, "GET", "/device/d3")
    assert httpx.get(url, headers=other_path).status_code == 403
    then = f"{time.time() - 600:.6f}"  # a signature ten minutes old
    stale = {
        backend_auth.TIMESTAMP_HEADER: then,
        backend_auth.SIGNATURE_HEADER: backend_auth.signature(key, "GET", "/device/d1", then),
    }
    assert httpx.get(url, headers=stale).status_code == 403
    assert httpx.get(url, headers=backend_auth.signed_headers(key, "GET", "/device/d1")).is_success

    # An unsigned write changes nothing; the proxy host's storage port refuses it too.
    for address, device, root in ((a.bind, "d1", a.root),
                                  (f"127.0.0.1:{cloud.config.object_store.storage_port}", "d0",
                                   proxy_devices)):  # fmt: skip
        pushed = httpx.put(f"http://{address}/replicate/file/{device}", content=b"evil",
                           headers={"x-cumulo-path": "objects/1/abc/intruder.data",
                                    "x-cumulo-metadata": "{}"})  # fmt: skip
        assert pushed.status_code == 401
        assert not list(root.rglob("intruder*"))
    log = a.log.read_text()
    assert "refused GET /device/d1 from 127.0.0.1: unsigned backend request" in log
    assert "wrong backend signature" in log and "away from this host's clock" in log


def test_a_remote_replica_streams_straight_through(cluster, remote_object):
    cloud, _, a, b = cluster
    container, name, data = remote_object
    state, tmp = str(cloud.state_dir), str(cloud.state_dir / "object-store" / "tmp")
    digest, got, serving = hashlib.md5(), 0, None
    with _slow_reader(cloud) as http:
        tracemalloc.start()
        try:
            with http.stream("GET", f"{container}/{name}") as answer:
                assert answer.status_code == 200
                assert answer.headers["content-length"] == str(BIG)
                for chunk in answer.iter_bytes():
                    if serving is None:
                        # The storage host is sending it; nothing of it is kept here.
                        serving = _serving((a, b), BIG)
                        kept = [f for f in _open_files("self") if f.startswith(tmp) or (
                                f.startswith(state) and f.endswith(" (deleted)"))]  # fmt: skip
                        assert not kept
                    digest.update(chunk)
                    got += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert serving is not None
    assert got == BIG and digest.digest() == hashlib.md5(data).digest()
    assert peak < BIG // 8, f"{peak} bytes held while streaming {BIG}"

    # A range of it, from the storage host too.
    with account_client(cloud, cloud.token("admin")) as http:
        part = http.get(f"{container}/{name}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]


def test_a_host_failing_half_way_hands_over_to_the_next_replica(cluster, remote_object, caplog):
    cloud, _, a, b = cluster
    container, name, data = remote_object
    digest, got = hashlib.md5(), 0
    with _slow_reader(cloud) as http:
        with http.stream("GET", f"{container}/{name}") as answer:
            for chunk in answer.iter_bytes(1 << 20):
                if got == 0:
                    first = _serving((a, b), BIG)
                    assert first is not None
                    first.stop()  # killed while it sends
                digest.update(chunk)
                got += len(chunk)
    assert got == BIG and digest.digest() == hashlib.md5(data).digest()
    assert "failed at byte" in caplog.text  # the proxy's note of the hand-over

    # The other one fails half way too: no replica left, the answer is cut short (fewer
    # bytes than announced).
    got = 0
    try:
        with _slow_reader(cloud) as http, http.stream("GET", f"{container}/{name}") as answer:
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in answer.iter_bytes(1 << 20):
                    if got == 0:
                        (b if first is a else a).stop()
                    got += len(chunk)
    finally:
        for host in (a, b):
            host.start(wait=False)
        for host in (a, b):
            host.wait()
    assert 0 < got < BIG


def test_a_replica_failing_before_its_first_byte_is_read_from_the_next(cluster, remote_object):
    cloud, _, a, b = cluster
    container, name, data = remote_object
    store = cloud.cloud.object_store
    with account_client(cloud, cloud.token("admin")) as http:
        head = http.head(f"{container}/{name}")
        account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]
    policy = store.policies.default
    name_hash = policy.ring.hash_of(account, container, name)
    part = policy.ring.partition_of_hash(name_hash)
    locations = [store.router.location(n, part) for n in policy.ring.get_part_nodes(part)]
    holders = [(store.router.node_for(at), at) for at in locations]
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    down = (RemoteNode(dead, store.backend_keys), Location("d1", part, dead))

    async def read(timestamp: str) -> bytes:
        body = RemoteBody(policy.index, name_hash, timestamp, [down])
        body.add_fallbacks(holders)
        return b"".join([chunk async for chunk in body.iter_range(10, 2 << 20)])

    assert asyncio.run(read(head.headers["x-timestamp"])) == data[10 : 2 << 20]
    # Another version than the one opened is no replica of it.
    with pytest.raises(DeviceUnavailable):
        asyncio.run(read("0000000001.00000"))


def test_a_large_object_on_other_hosts_is_read_from_them(cluster):
    """An SLO whose manifest and segments have no replica on the proxy host: the
    manifest is read from a storage host, the segments streamed from theirs."""
    cloud, proxy_devices = cluster[:2]
    container = unique("slo-remote")
    segments = [os.urandom(300_000), os.urandom(200_000)]
    before = set(proxy_devices.rglob("*.data"))
    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(container).status_code == 201
        manifest = []
        for i, seg in enumerate(segments):
            assert http.put(f"{container}/seg{i}", content=seg).status_code == 201
            etag = hashlib.md5(seg).hexdigest()
            manifest.append({"path": f"/{container}/seg{i}", "etag": etag, "size_bytes": len(seg)})
        put = http.put(f"{container}/big", params={"multipart-manifest": "put"}, json=manifest)
        assert put.status_code == 201
        for path in set(proxy_devices.rglob("*.data")) - before:
            path.unlink()
        whole = b"".join(segments)
        assert http.get(f"{container}/big").content == whole
        ranged = http.get(f"{container}/big", headers={"Range": "bytes=299990-300009"})
        assert ranged.status_code == 206 and ranged.content == whole[299990:300010]
        stored = http.get(f"{container}/big", params={"multipart-manifest": "get"}).json()
        assert [s["name"] for s in stored] == [f"/{container}/seg0", f"/{container}/seg1"]


STEP = 256 << 10  # what the uploading client sends at a time


@contextlib.contextmanager
def _proxy_host_device_away(cloud, proxy_devices):
    """d0, the proxy host's device, unmounted: its replicas go to handoffs on the other
    hosts, so every replica of an upload is another host's."""
    away = proxy_devices.parent / "d0-away"
    (proxy_devices / "d0").rename(away)
    try:
        yield
    finally:
        away.rename(proxy_devices / "d0")
        cloud.cloud.object_store.proxy.errors = ErrorLimiter()  # d0's errors forgotten


def _name_hash(cloud, http: httpx.Client, container: str, name: str) -> str:
    account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]
    return cloud.cloud.object_store.policies.default.ring.hash_of(account, container, name)


def _replicas(roots, name_hash: str) -> list[Path]:
    return [p for root in roots for p in root.rglob(f"{name_hash}/*.data")]


def _temp_files(roots) -> set[Path]:
    return {p for root in roots for p in root.glob("*/tmp/*")}


def _settled(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_an_upload_to_other_hosts_streams_straight_through(cluster):
    """32 MiB whose three replicas are all on the storage hosts: each chunk goes on to
    them as it arrives (they are writing it while the client is still sending), with no
    temp file on the proxy host and a few chunks in memory at most."""
    cloud, proxy_devices, a, b = cluster
    container = unique("upload")
    data = os.urandom(BIG)
    state = str(cloud.state_dir)
    seen: dict[str, object] = {}

    def body():
        for offset in range(0, BIG, STEP):
            if offset == BIG // 2:
                # No temp file (an object's, spooled or unlinked) open on the proxy host.
                seen["kept"] = [f for f in _open_files("self") if f.startswith(state) and (
                    "/tmp/" in f[len(state):] or f.endswith(" (deleted)"))]  # fmt: skip
                seen["writing"] = [host.root.name for host in (a, b) if any(
                    f.startswith(f"{host.root}/") and "/tmp/" in f
                    for f in _open_files(host.proc.pid))]  # fmt: skip
            yield data[offset : offset + STEP]

    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(container).status_code == 201
        with _proxy_host_device_away(cloud, proxy_devices):
            tracemalloc.start()
            try:
                put = http.put(f"{container}/big", content=body(), timeout=120)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert put.status_code == 201, put.text
            assert put.headers["etag"] == hashlib.md5(data).hexdigest()
            assert seen["kept"] == []
            assert seen["writing"] == ["a", "b"]
            # uvicorn lets up to RECEIVE_WINDOW of a request body in at a time and hands
            # it over as one chunk: the proxy holds a few of those (the chunk it sends,
            # the next one arriving, its copy), whatever the size of the object.
            assert peak < 5 * RECEIVE_WINDOW < BIG, f"{peak} bytes held while uploading {BIG}"
            name_hash = _name_hash(cloud, http, container, "big")
            assert len(_replicas([a.root], name_hash)) == 2
            assert len(_replicas([b.root], name_hash)) == 1
            assert not _replicas([proxy_devices.parent / "d0-away"], name_hash)
            digest = hashlib.md5()
            with http.stream("GET", f"{container}/big") as got:
                for chunk in got.iter_bytes(1 << 20):
                    digest.update(chunk)
            assert digest.digest() == hashlib.md5(data).digest()
            listed = http.get(container, params={"format": "json"}).json()
            assert [(o["name"], o["bytes"]) for o in listed] == [("big", BIG)]
        assert http.delete(f"{container}/big").status_code == 204


def _upload_killing(http, path: str, data: bytes, host: StorageHost):
    """PUT `data`, `host` killed once half of it is sent: the answer, or the error the
    client saw when the proxy answered before the end of the body."""

    def body():
        for offset in range(0, len(data), STEP):
            if offset == len(data) // 2:
                host.stop()
            yield data[offset : offset + STEP]

    try:
        return http.put(path, content=body(), timeout=120)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return exc


def test_a_host_dying_half_way_through_an_upload_is_dropped_and_quorum_decides(cluster):
    cloud, proxy_devices, a, b = cluster
    container = unique("dying")
    data = os.urandom(BIG)
    hosts = [proxy_devices, a.root, b.root]
    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(container).status_code == 201
        try:
            # Replicas on the proxy host, A and B; B dies: two are left, a quorum.
            put = _upload_killing(http, f"{container}/kept", data, b)
            assert not isinstance(put, Exception) and put.status_code == 201, put
            kept = _name_hash(cloud, http, container, "kept")
            assert len(_replicas([proxy_devices], kept)) == len(_replicas([a.root], kept)) == 1
            assert http.get(f"{container}/kept").content == data
        finally:
            b.start()
        assert http.delete(f"{container}/kept").status_code == 204

        # Replicas on A (two) and B; A dies: one is left, no quorum. The upload fails
        # (503, or the connection closed on the client still sending) and nothing shows.
        before = _temp_files([b.root])
        with _proxy_host_device_away(cloud, proxy_devices):
            try:
                put = _upload_killing(http, f"{container}/lost", data, a)
            finally:
                a.start()
        assert isinstance(put, Exception) or put.status_code == 503, put
        assert http.get(f"{container}/lost").status_code == 404
        assert http.get(container, params={"format": "json"}).json() == []
        assert not _replicas(hosts, _name_hash(cloud, http, container, "lost"))
        assert _settled(lambda: _temp_files([b.root]) <= before)  # B threw its part away


def test_an_upload_with_a_wrong_etag_leaves_no_replica_anywhere(cluster):
    cloud, proxy_devices, a, b = cluster
    container = unique("etag")
    data = os.urandom(3 << 20)
    hosts = [proxy_devices, a.root, b.root]
    before = _temp_files(hosts)
    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(container).status_code == 201
        for name, content in (("whole", data), ("streamed", iter([data[:1 << 20],
                                                                  data[1 << 20:]]))):  # fmt: skip
            put = http.put(f"{container}/{name}", content=content,
                           headers={"ETag": hashlib.md5(b"other").hexdigest()})  # fmt: skip
            assert put.status_code == 422
            assert http.get(f"{container}/{name}").status_code == 404
            assert not _replicas(hosts, _name_hash(cloud, http, container, name))
        assert http.get(container, params={"format": "json"}).json() == []
    assert _settled(lambda: _temp_files(hosts) <= before)

    # The storage host checks it too: a body whose ETag is not the one announced is
    # refused 422 and not kept; the right one is stored.
    key = load_config(cloud.state_dir).object_store.backend_secret.encode()
    name_hash = hashlib.md5(b"etag-check").hexdigest()
    path = f"/object/d1/0/0/{name_hash}"
    meta = {"name": "/AUTH_x/c/o", "X-Timestamp": "1700000000.00000", "Content-Type": "a/b"}
    for etag, status in ((hashlib.md5(b"other").hexdigest(), 422),
                         (hashlib.md5(data).hexdigest(), 201)):  # fmt: skip
        answer = httpx.put(f"http://{a.bind}{path}", content=data,
                           headers={**backend_auth.signed_headers(key, "PUT", path),
                                    "x-cumulo-metadata": json.dumps(meta),
                                    "x-cumulo-etag": etag})  # fmt: skip
        assert answer.status_code == status
        assert len(_replicas([a.root], name_hash)) == (status == 201)
    assert answer.json() == {"etag": hashlib.md5(data).hexdigest(), "size": len(data)}
    for stored in _replicas([a.root], name_hash):
        stored.unlink()


def test_a_storage_host_takes_its_rings_from_the_proxy_host(cluster, tmp_path_factory):
    """Host C has only the cloud's cumulo.toml (here one from before `[object_store]
    backend_secret`, with the key file beside it): it fetches the rings at start, and a
    rebalance on the proxy host that gives it a device reaches it too."""
    cloud, _, a, b = cluster
    state = cloud.state_dir
    config = load_config(state)
    rings = rings_dir(config, state)
    source = f"127.0.0.1:{config.object_store.storage_port}"
    c_state = tmp_path_factory.mktemp("host-c")
    secret = config.object_store.backend_secret
    config.object_store.backend_secret = ""
    write_config(c_state, config)
    c = StorageHost(c_state, tmp_path_factory.mktemp("c-devices") / "c", ["d4"],
                    "--rings-from", source, "--ring-interval", "0.3")  # fmt: skip
    refused = CliRunner().invoke(object_server, ["--state-dir", str(c_state), "--devices",
                                                 str(c.root), "--bind", c.bind,
                                                 "--rings-from", source])  # fmt: skip
    assert refused.exit_code == 1 and "no backend key" in refused.output
    assert "backend_secret" in refused.output  # says where it comes from
    key = backend_auth.key_path(c_state)
    key.parent.mkdir(parents=True)
    key.write_text(secret + "\n")
    c_rings = rings_dir(load_config(c_state), c_state)
    saved = {p.name: p.read_bytes() for p in rings.iterdir() if p.suffix == ".json"}
    c.start()
    try:
        for ring in ring_names(config):
            assert (c_rings / f"{ring}.ring.json").read_bytes() == saved[f"{ring}.ring.json"]

        for ring in ring_names(config):
            builder = RingBuilder.load(rings / f"{ring}.builder.json")
            builder.add_device(region=1, zone=4, ip="127.0.0.1", port=c.port, device="d4",
                               weight=100)  # fmt: skip
            builder.rebalance(seed=1)
            builder.save(rings / f"{ring}.builder.json")
            builder.write_ring(rings / f"{ring}.ring.json")
        wanted = {r: (rings / f"{r}.ring.json").read_bytes() for r in ring_names(config)}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all((c_rings / f"{r}.ring.json").read_bytes() == t for r, t in wanted.items()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("host C did not follow the rebalance")
        # The proxy (its ring reloaded too) writes to C's new device, which C serves.
        time.sleep(1.1)
        container = unique("rebalanced")
        ring = cloud.cloud.object_store.policies.default.ring
        with account_client(cloud, cloud.token("admin")) as http:
            account = str(http.base_url).rstrip("/").rsplit("/", 1)[-1]

            def devices(name: str) -> list[str]:
                return [n.device for n in ring.get_nodes(account, container, name)[1]]

            on_c = next(f"o{i}" for i in range(1000) if "d4" in devices(f"o{i}"))
            assert http.put(container).status_code == 201
            assert http.put(f"{container}/{on_c}", content=b"on c").status_code == 201
            assert http.get(f"{container}/{on_c}").content == b"on c"
        assert _data_files(c.root) == 1
    finally:
        c.stop()
        for file, text in saved.items():
            (rings / file).write_bytes(text)


def test_the_backend_key_is_rotated_without_a_restart(cluster):
    """The three steps of docs/object-store.md on the running hosts (the proxy host and
    both storage hosts read the same cumulo.toml here): every upload still lands on all
    three hosts at every step, and the old key is refused once removed."""
    cloud, proxy_devices, a, b = cluster
    state = cloud.state_dir
    config = load_config(state)
    old, new = config.object_store.backend_secret, secrets.token_hex(32)
    container = unique("rotation")

    def status_signed_with(key: str) -> int:
        headers = backend_auth.signed_headers(key.encode(), "GET", "/device/d1")
        return httpx.get(f"http://{a.bind}/device/d1", headers=headers).status_code

    with account_client(cloud, cloud.token("admin")) as http:
        assert http.put(container).status_code == 201
        for step, secret in enumerate(([old, new], [new, old], new)):
            config.object_store.backend_secret = secret
            write_config(state, config)
            time.sleep(backend_auth.RELOAD_INTERVAL + 0.5)
            data = os.urandom(100_000)
            assert http.put(f"{container}/o{step}", content=data).status_code == 201
            assert http.get(f"{container}/o{step}").content == data
            name_hash = _name_hash(cloud, http, container, f"o{step}")
            assert len(_replicas([proxy_devices, a.root, b.root], name_hash)) == 3
            assert status_signed_with(new) == 200
            assert status_signed_with(old) == (403 if secret == new else 200)
    assert "backend keys reloaded" in a.log.read_text()
