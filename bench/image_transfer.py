"""Image data throughput: upload and download of a 512 MiB image, against the limits
measured in the same run.

Not a test: it prints figures. The cloud runs in its own process
(`cumulo up --state-dir <tmp>`) as a user starts it, and curl is the client;
the image is random data (incompressible) declared raw. Anchors: `cp` of the same file
into the same directory tree, md5 and sha512 of the same bytes on two threads (what an
upload must compute: the ceiling of any upload that hashes as Glance does), and a bare
HTTP server sending the same file with sendfile(2) to the same curl.
Targets (issue 13): upload >= 90 % of the hash ceiling, download >= 100 % of the bare
server; for the filesystem store and (`--store object_store`) the Object Storage store.

    .venv/bin/python bench/image_transfer.py [--size-mib 512] [--dir /var/tmp]
        [--store file|object_store]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cumulo.cloud import prepare_state_dir
from cumulo.common.config import ImageStoreConfig, load_config, write_config

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20
UPLOAD_TARGET = 0.90  # of the hash ceiling
DOWNLOAD_TARGET = 1.00  # of the bare sendfile server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_cloud(state_dir: Path, store: str = "file", object_workers: int = 1) -> subprocess.Popen:
    """`cumulo up` on free ports; object_workers: processes serving the object-store port."""
    config = prepare_state_dir(state_dir)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    config.identity.bcrypt_rounds = 4
    config.network.driver = "noop"  # no namespaces or dnsmasqs left behind (none measured)
    config.object_store.workers = object_workers
    if store == "object_store":
        config.image.stores = [ImageStoreConfig(id="swift", type="object_store")]
    write_config(state_dir, config)
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # A machine shared with test suites (load 25-30) took over 60 s to start it.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{config.ports.image}/versions", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("cumulo up did not start")


def admin_token(state_dir: Path) -> str:
    config = load_config(state_dir)
    r = httpx.post(
        f"http://{HOST}:{config.ports.identity}/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"id": "default"},
                            "password": config.identity.admin_password,
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        },
    )
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def write_random(path: Path, size: int) -> None:
    block = os.urandom(4 * MIB)
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            # Vary each block so nothing below us can deduplicate it.
            f.write(i.to_bytes(8, "little") + block[8:])


def curl(token: str, *args: object) -> None:
    """curl as the client: its own cost is small, so the figures are the server's."""
    subprocess.run(
        ["curl", "-sS", "-f", "-H", f"X-Auth-Token: {token}", "-H", "Expect:", *map(str, args)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def timed_cp(src: Path, dst: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    elapsed = time.perf_counter() - started
    dst.unlink()
    return elapsed


class BareHttp:
    """The least an HTTP server can do with the same curl and disk: GET is one
    sendfile(2), PUT writes what it receives, nothing checked or hashed. The second
    anchor: what moving the bytes through loopback TCP and curl costs by itself."""

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.sock = socket.create_server((HOST, 0))
        self.url = f"http://{HOST}:{self.sock.getsockname()[1]}/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                head, body = head.split(b"\r\n\r\n", 1)
                if head.startswith(b"GET"):
                    size = self.src.stat().st_size
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    with open(self.src, "rb") as f:
                        conn.sendfile(f)
                    continue
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                buf = memoryview(bytearray(4 * MIB))
                with open(self.dst, "wb", buffering=0) as out:
                    out.write(body)
                    left = length - len(body)
                    while left > 0:
                        n = conn.recv_into(buf, min(len(buf), left))
                        out.write(buf[:n])
                        left -= n
                self.dst.unlink()
                conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")


def timed_curl(token: str, *args: object) -> float:
    started = time.perf_counter()
    curl(token, *args)
    return time.perf_counter() - started


def timed_hashes(src: Path) -> float:
    """md5 and sha512 of the file (from the page cache), each in its own thread, as the
    server computes them: what an upload cannot beat whatever the HTTP path costs."""
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    with open(src, "rb", buffering=0) as f:
        blocks = [f.read(4 * MIB) for _ in range(16)]  # 64 MiB, cycled
    size = src.stat().st_size

    def feed(h) -> None:
        for i in range(size // (4 * MIB)):
            h.update(blocks[i % len(blocks)])

    started = time.perf_counter()
    threads = [threading.Thread(target=feed, args=(h,)) for h in (md5, sha512)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--dir", default=None, help="where the state dir and data go")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=("file", "object_store"), default="file")
    args = parser.parse_args()
    size = args.size_mib * MIB

    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-image-", dir=args.dir))
    state_dir = work / "state"
    src = work / "image.raw"
    write_random(src, size)
    proc = start_cloud(state_dir, args.store)
    try:
        token = admin_token(state_dir)
        port = load_config(state_dir).ports.image
        client = httpx.Client(
            base_url=f"http://{HOST}:{port}", headers={"X-Auth-Token": token}, timeout=600
        )
        # cp into the state dir's tree: same disk, same page cache as the store.
        # Anchors and transfers alternate round by round, so that whatever else runs
        # on the machine weighs on both alike; the best round of each counts.
        bare = BareHttp(src, state_dir / "bare-put.raw")
        cp_times, hash_times, up_times, down_times = [], [], [], []
        bare_up, bare_down = [], []
        for i in range(args.rounds):
            cp_times.append(timed_cp(src, state_dir / "cp-anchor.raw"))
            hash_times.append(timed_hashes(src))
            bare_up.append(timed_curl("-", "-X", "PUT", "-T", src, bare.url))
            bare_down.append(timed_curl("-", "-o", work / "bare-get.raw", bare.url))
            (work / "bare-get.raw").unlink()
            image = client.post(
                "/v2/images",
                json={"name": f"bench-{i}", "disk_format": "raw", "container_format": "bare"},
            ).json()
            url = f"http://{HOST}:{port}/v2/images/{image['id']}/file"
            started = time.perf_counter()
            curl(token, "-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", src, url)
            up_times.append(time.perf_counter() - started)
            out = work / "download.raw"
            started = time.perf_counter()
            curl(token, "-o", out, url)
            down_times.append(time.perf_counter() - started)
            assert out.stat().st_size == size
            out.unlink()
            client.delete(f"/v2/images/{image['id']}").raise_for_status()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    def rate(seconds: list[float]) -> float:
        return size / MIB / min(seconds)

    cp_rate = rate(cp_times)
    hash_rate = rate(hash_times)
    print(
        f"image transfer, {args.size_mib} MiB of random data, {args.store} store "
        f"(best of {args.rounds} alternating rounds), on {work.parent}"
    )
    print(f"  cp (anchor)          {cp_rate:8.0f} MiB/s")
    print(
        f"  md5 || sha512 alone  {hash_rate:8.0f} MiB/s  {hash_rate / cp_rate:5.0%} of cp"
        "  (the ceiling of any upload that hashes as Glance does)"
    )
    for label, bare_times in (("upload", bare_up), ("download", bare_down)):
        print(
            f"  bare HTTP {label:<10} {rate(bare_times):8.0f} MiB/s"
            f"  {rate(bare_times) / cp_rate:5.0%} of cp  (curl + loopback, no server work)"
        )
    for label, times, limit, limit_name, target in (
        ("upload", up_times, hash_rate, "the hash ceiling", UPLOAD_TARGET),
        ("download", down_times, rate(bare_down), "bare HTTP", DOWNLOAD_TARGET),
    ):
        share = rate(times) / limit
        verdict = "met" if share >= target else "NOT MET"
        print(
            f"  {label:<20} {rate(times):8.0f} MiB/s  {share:5.0%} of {limit_name}"
            f"  (target {target:.0%}: {verdict}; {rate(times) / cp_rate:4.0%} of cp)"
        )


if __name__ == "__main__":
    main()
