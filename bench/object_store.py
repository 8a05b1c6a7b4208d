"""Object Storage throughput: 16 concurrent clients, 3 replicas on one disk.

Not a test: it prints figures. The cloud runs in its own process (`cumulo up
--state-dir <tmp>`, devices d0..d2 under it, 3 replicas), driven by keep-alive
connections from a small asyncio HTTP/1.1 client on uvloop. Phases: PUT then GET of
4 KiB objects (objects/s) and of 16 MiB objects (MiB/s). Anchors: `dd conv=fdatasync`
of the same bytes on the same disk (a PUT writes them 3 times: the limit is dd / 3),
and a bare threaded HTTP server sending the same replica files with sendfile(2).
Targets (2 cores): >= 400 small PUTs/s, >= 1,700 small GETs/s, large PUTs >= 60 % of
dd / 3, large GETs >= 70 % of the bare server. Upstream Swift 2.38 on this kind of
machine: about 130 small PUTs/s and 570 small GETs/s.

With `--api s3` the same phases also run through the S3 API on the same cloud, signed
with SigV4 as boto3 signs over HTTP (the payload's SHA-256 in x-amz-content-sha256),
and each is printed beside its Swift figure. Target: S3 within 15 % of Swift. To be
fair to both, each phase runs twice per API in the order Swift, S3, S3, Swift, each API
on its own container (both start empty), every run after a sync(2) (no run pays for
another's writeback); the figures are over both runs, and each S3 run is also given
beside the Swift run next to it. Every line shows the server's CPU per request apart
from the client's (this process: the HTTP client and, for S3, the signing, also shown
apart), as both share the machine's cores.

    .venv/bin/python bench/object_store.py [--clients 16] [--duration 8] [--dir /var/tmp]
        [--api swift|s3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from identity_tokens import process_cpu  # noqa: E402
from image_transfer import HOST, admin_token, start_cloud  # noqa: E402

from cumulo.common.config import load_config  # noqa: E402
from cumulo.identity.ec2_signature import v4_signing_key  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
SMALL, LARGE = 4 * KIB, 16 * MIB
TARGET_SMALL_PUT, TARGET_SMALL_GET = 400, 1_700
TARGET_LARGE_PUT, TARGET_LARGE_GET = 0.60, 0.70
TARGET_S3_OVERHEAD = 0.15


class Connection(asyncio.Protocol):
    """One keep-alive connection; a response's body is counted, not kept."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.left = -1
        self.status = 0
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("closed"))

    def data_received(self, data: bytes) -> None:
        if self.left < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end]).lower()
            self.status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
            self.left = length - (len(self.head) - end - 4)
            self.head = bytearray()
        else:
            self.left -= len(data)
        if self.left <= 0 and self.waiter is not None:
            self.left = -1
            waiter, self.waiter = self.waiter, None
            waiter.set_result(self.status)

    async def request(self, head: bytes, body: bytes = b"") -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head)
        if body:
            self.transport.write(body)
        return await self.waiter


async def run_phase(port, clients, duration, make_request) -> tuple[int, list[float], float]:
    """Each client sends requests back to back for `duration` s; (done, [elapsed,
    *latencies], CPU seconds the client spent making the requests: signing them)."""
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(Connection, HOST, port))[1] for _ in range(clients)]
    latencies: list[float] = []
    deadline = time.perf_counter() + duration
    making = 0.0

    async def client(index: int, conn: Connection) -> None:
        nonlocal making
        i = 0
        while time.perf_counter() < deadline:
            cpu = time.thread_time()
            head, body = make_request(index, i)
            making += time.thread_time() - cpu
            started = time.perf_counter()
            status = await conn.request(head, body)
            if status >= 300:
                raise RuntimeError(f"status {status}")
            latencies.append(time.perf_counter() - started)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n, c) for n, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.transport.close()
    return len(latencies), [elapsed, *sorted(latencies)], making


def server_pids(pid: int) -> list[int]:
    """The cloud's process and its children (the object-store proxy processes)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the cloud's processes have used so far."""
    return sum(process_cpu(p) for p in server_pids(pid))


def server_system_cpu(pid: int) -> float:
    """CPU seconds the cloud's processes have spent in the kernel (system time) so far."""
    total = 0
    for p in server_pids(pid):
        total += int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[12])
    return total / os.sysconf("SC_CLK_TCK")


def request(method: str, path: str, port: int, token: str, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", f"X-Auth-Token: {token}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class S3Signer:
    """SigV4 heads as boto3 sends them over HTTP (payload hash signed)."""

    def __init__(self, access: str, secret: str, port: int) -> None:
        self.access, self.secret, self.port = access, secret, port
        self._keys: dict[str, bytes] = {}
        self._hashes: dict[int, str] = {}

    def head(self, method: str, path: str, body: bytes = b"") -> bytes:
        now = time.gmtime()
        stamp, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
        key = self._keys.get(day) or self._keys.setdefault(
            day, v4_signing_key(self.secret, day, "RegionOne", "s3")
        )
        payload = self._hashes.get(id(body)) or self._hashes.setdefault(
            id(body), hashlib.sha256(body).hexdigest()
        )
        host = f"{HOST}:{self.port}"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = "\n".join(
            (method, path, "", f"host:{host}\nx-amz-content-sha256:{payload}\n"
             f"x-amz-date:{stamp}\n", signed, payload)
        )  # fmt: skip
        scope = f"{day}/RegionOne/s3/aws4_request"
        to_sign = "\n".join(
            ("AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {host}",
            f"X-Amz-Date: {stamp}",
            f"X-Amz-Content-SHA256: {payload}",
            f"Authorization: AWS4-HMAC-SHA256 Credential={self.access}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}",
        ]
        if method == "PUT":
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ec2_keys(config, token: str) -> tuple[str, str]:
    """An EC2 credential of the token's user and project (what S3 signs with)."""
    identity = f"http://{HOST}:{config.ports.identity}"
    about = httpx.get(
        f"{identity}/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    ).json()["token"]
    made = httpx.post(
        f"{identity}/v3/users/{about['user']['id']}/credentials/OS-EC2",
        headers={"X-Auth-Token": token},
        json={"tenant_id": about["project"]["id"]},
    )
    made.raise_for_status()
    return made.json()["credential"]["access"], made.json()["credential"]["secret"]


def dd_rate(directory: Path, size_mib: int) -> float:
    target = directory / "dd-anchor"
    started = time.perf_counter()
    subprocess.run(
        [
            "dd",
            "if=/dev/urandom",
            f"of={target}",
            "bs=16M",
            f"count={size_mib // 16}",
            "conv=fdatasync",
            "status=none",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    # /dev/urandom's own cost is measured apart and taken out.
    started = time.perf_counter()
    subprocess.run(
        [
            "dd",
            "if=/dev/urandom",
            "of=/dev/null",
            "bs=16M",
            f"count={size_mib // 16}",
            "status=none",
        ],
        check=True,
    )
    elapsed -= time.perf_counter() - started
    target.unlink()
    return size_mib / elapsed


class BareServer(socketserver.ThreadingTCPServer):
    """GET /<n> sends file n with sendfile(2), keep-alive: the least a server can do."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, files: list[Path]) -> None:
        self.files = files

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner) -> None:
                conn = inner.request
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    path = self.files[int(head.split(b" ")[1][1:]) % len(self.files)]
                    size = path.stat().st_size
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    with path.open("rb") as f:
                        conn.sendfile(f)

        super().__init__((HOST, 0), Handler)


@dataclass
class Figures:
    """One phase of one API, over its runs."""

    done: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # seconds
    server_sys: float = 0.0
    client_cpu: float = 0.0  # the benchmark process's, all of it
    signing_cpu: float = 0.0  # the part making (signing) the requests
    rates: list[float] = field(default_factory=list)  # requests/s of each run

    def add(self, done, times, server, sys, client, signing) -> None:
        self.done += done
        self.elapsed += times[0]
        self.latencies = sorted(self.latencies + times[1:])
        self.server_cpu += server
        self.server_sys += sys
        self.client_cpu += client
        self.signing_cpu += signing
        self.rates.append(done / times[0])

    @property
    def rate(self) -> float:
        return self.done / self.elapsed

    def per_request(self, seconds: float) -> float:
        return seconds / self.done * 1000


PHASES = (("4 KiB PUT", "small", SMALL), ("4 KiB GET", "small", SMALL),
          ("16 MiB PUT", "large", LARGE), ("16 MiB GET", "large", LARGE))  # fmt: skip


async def benchmark(args, state_dir: Path, pid: int) -> None:
    token = admin_token(state_dir)
    config = load_config(state_dir)
    port = config.ports.object_store
    project = httpx.get(
        f"http://{HOST}:{config.ports.identity}/v3/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": token},
    ).json()["token"]["project"]["id"]
    base = f"/v1/AUTH_{project}/bench"
    httpx.put(f"http://{HOST}:{port}{base}", headers={"X-Auth-Token": token}).raise_for_status()
    bodies = {"small": os.urandom(SMALL), "large": os.urandom(LARGE)}
    # The names each client wrote, per API and size (what its GETs read back).
    written: dict[tuple[str, str, int], list[str]] = defaultdict(list)

    def swift_head(method: str, path: str, body: bytes = b"") -> bytes:
        return request(method, path, port, token, len(body) if method == "PUT" else None)

    heads = {"swift": (swift_head, base)}
    if args.api == "s3":
        signer = S3Signer(*ec2_keys(config, token), port)
        made = httpx.put(
            f"http://{HOST}:{port}/s3bench", headers=_s3_headers(signer, "PUT", "/s3bench")
        )
        made.raise_for_status()
        heads["s3"] = (signer.head, "/s3bench")

    def maker(api: str, label: str, size_name: str, run: int):
        head, prefix = heads[api]
        if label.endswith("PUT"):
            body = bodies[size_name]

            def put(index: int, i: int):
                path = f"{prefix}/{size_name}-{run}-{index}-{i}"
                written[api, size_name, index].append(path)
                return head("PUT", path, body), body

            return put

        def get(index: int, i: int):
            names = written[api, size_name, index]
            return head("GET", names[i % len(names)]), b""

        return get

    # Swift and S3 alternate, each phase run twice per API in the order A B B A, each
    # on its own container that both start empty, every run after a sync (no run pays
    # for the writeback of another's bytes).
    order = ("swift", "s3", "s3", "swift") if args.api == "s3" else ("swift",)
    figures = {api: {label: Figures() for label, _, _ in PHASES} for api in heads}
    for label, size_name, _size in PHASES:
        for run, api in enumerate(order):
            os.sync()
            make = maker(api, label, size_name, run)
            cpu, kernel, client = server_cpu(pid), server_system_cpu(pid), time.process_time()
            done, times, signing = await run_phase(port, args.clients, args.duration, make)
            figures[api][label].add(
                done, times, server_cpu(pid) - cpu, server_system_cpu(pid) - kernel,
                time.process_time() - client, signing,
            )  # fmt: skip

    dd = dd_rate(state_dir, 256)
    replicas = sorted((state_dir / "object-store" / "devices").glob("d0/objects/*/*/*/*.data"))
    large_files = [p for p in replicas if p.stat().st_size == LARGE]
    server = BareServer(large_files)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def bare(index: int, i: int):
        return f"GET /{index * 7 + i} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), b""

    done, times, _ = await run_phase(server.server_address[1], args.clients, args.duration, bare)
    bare_rate = done * LARGE / MIB / times[0]
    server.shutdown()

    def p(latencies: list[float], q: float) -> float:
        return latencies[min(int(len(latencies) * q), len(latencies) - 1)] * 1000

    def cpu_columns(f: Figures) -> str:
        return (
            f"  server CPU {f.per_request(f.server_cpu):5.2f} ms/obj"
            f"  client {f.per_request(f.client_cpu):5.2f} (signing"
            f" {f.per_request(f.signing_cpu):4.2f})"
        )

    runs = len(order) // len(heads)
    print(
        f"object store, {args.clients} clients, 3 replicas on one disk, {args.duration} s each, "
        f"{args.workers} object-store process(es)"
        + (f", {runs} runs per API (Swift, S3, S3, Swift)" if runs > 1 else "")
    )
    print(f"  dd conv=fdatasync  {dd:8.0f} MiB/s  (PUT limit, 3 replicas: {dd / 3:.0f} MiB/s)")
    print(f"  bare sendfile      {bare_rate:8.0f} MiB/s  (16 MiB GETs of the same files)")
    for label, _, size in PHASES:
        f = figures["swift"][label]
        ops, mibs, lat = f.rate, f.rate * size / MIB, f.latencies
        line = (
            f"  {label:<12} {ops:8.1f} obj/s {mibs:8.1f} MiB/s"
            f"  p50 {p(lat, 0.5):7.1f} ms  p99 {p(lat, 0.99):7.1f} ms" + cpu_columns(f)
        )
        if label == "4 KiB PUT":  # where a small PUT's CPU goes: the kernel's share
            line += f" (sys {f.per_request(f.server_sys):4.2f})"
        if label.startswith("4 KiB"):
            target, anchor = (TARGET_SMALL_PUT, 130) if "PUT" in label else (TARGET_SMALL_GET, 570)
            verdict = "ok" if ops >= target else "BELOW TARGET"
            line += f"  (target {target}/s: {verdict}; Swift ~{anchor}/s)"
        else:
            limit, target, what = (
                (dd / 3, TARGET_LARGE_PUT, "dd/3")
                if "PUT" in label
                else (bare_rate, TARGET_LARGE_GET, "bare")
            )
            ratio = mibs / limit
            verdict = "ok" if ratio >= target else "BELOW TARGET"
            line += f"  {ratio:4.0%} of {what} (target {target:.0%}: {verdict})"
        print(line)
    if "s3" not in figures:
        return
    print(
        f"the same through S3 (SigV4, payload hash signed); target within {TARGET_S3_OVERHEAD:.0%}"
    )
    for label, _, size in PHASES:
        f, swift = figures["s3"][label], figures["swift"][label]
        ratio = f.rate / swift.rate
        # Each S3 run beside the Swift run next to it (A B, then B A).
        rounds = [s3 / sw for s3, sw in zip(f.rates, swift.rates, strict=True)]
        verdict = "ok" if ratio >= 1 - TARGET_S3_OVERHEAD else "BELOW TARGET"
        print(
            f"  {label:<12} {f.rate:8.1f} obj/s {f.rate * size / MIB:8.1f} MiB/s"
            f"  p50 {p(f.latencies, 0.5):7.1f} ms  p99 {p(f.latencies, 0.99):7.1f} ms"
            + cpu_columns(f)
            + f"  {ratio:4.0%} of Swift ({verdict}; runs "
            + ", ".join(f"{r:.0%}" for r in rounds)
            + ")"
        )


def _s3_headers(signer: S3Signer, method: str, path: str) -> dict[str, str]:
    """The signer's head as a header dict (for one-off requests made with httpx)."""
    lines = signer.head(method, path).decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("Host"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--dir", default=None, help="where the state dir goes (the disk)")
    parser.add_argument("--api", choices=("swift", "s3"), default="swift")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes serving the object-store port"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-object-", dir=args.dir))
    state_dir = work / "state"
    proc = start_cloud(state_dir, object_workers=args.workers)
    try:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(benchmark(args, state_dir, proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
