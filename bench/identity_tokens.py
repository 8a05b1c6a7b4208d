"""Identity token throughput: issue (password, token) and validate, against a real `cumulo up`.

Not a test: it prints figures and the upstream anchors. The cloud runs in its own
process (`cumulo up --state-dir <tmp>`) exactly as a user starts it, with the
config's default bcrypt cost unless --rounds is given. The load generator is a
small asyncio HTTP/1.1 keep-alive client (N connections, one request in flight
on each) so that it costs the 2-core machine as little as possible.

    .venv/bin/python bench/identity_tokens.py [--clients 8] [--duration 8] [--rounds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from cumulo.cloud import prepare_state_dir
from cumulo.common.config import load_config, write_config

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent

TARGET_PASSWORD_RATIO = 0.80
TARGET_RESCOPE_PER_S = 1_000
TARGET_VALIDATE_PER_S = 3_000
ANCHORS = (
    "Keystone (upstream anchors): tuned ~10 ms per issue and ~3 ms per validation "
    "for a single client; 0.4 s per validation with defaults."
)


# -- the load generator ---------------------------------------------------------------


class ResponseReader(asyncio.Protocol):
    """Reads one HTTP/1.1 response at a time off a keep-alive connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionResetError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.closed)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        status = int(head[9:12])
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, head, body))

    async def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        if self.closed is not None:
            raise self.closed
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def http_request(
    method: str, path: str, port: int, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class PhaseResult:
    name: str
    clients: int
    seconds: float
    latencies: list[float]
    errors: int
    first_error: str = ""
    server_cpu: float = 0.0  # CPU seconds the server process used while measured
    client_cpu: float = 0.0  # and this load generator

    @property
    def cpu_per_token(self) -> float:
        return self.server_cpu / max(1, len(self.latencies))

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @classmethod
    def merge(cls, parts: Sequence[PhaseResult]) -> PhaseResult:
        return cls(
            parts[0].name,
            parts[0].clients,
            sum(p.seconds for p in parts),
            [x for p in parts for x in p.latencies],
            sum(p.errors for p in parts),
            next((p.first_error for p in parts if p.first_error), ""),
            sum(p.server_cpu for p in parts),
            sum(p.client_cpu for p in parts),
        )

    def line(self) -> str:
        return (
            f"{self.rate:9.1f} tokens/s   p50 {self.percentile(0.50) * 1000:8.2f} ms   "
            f"p99 {self.percentile(0.99) * 1000:8.2f} ms   "
            f"CPU/token: server {self.cpu_per_token * 1000:5.2f} ms, "
            f"client {self.client_cpu / max(1, len(self.latencies)) * 1000:5.2f} ms   "
            f"({len(self.latencies)} ok, {self.errors} errors, {self.clients} clients)"
        )


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_phase(
    server_pid: int,
    name: str,
    port: int,
    requests: Sequence[bytes],
    expect: int,
    clients: int,
    seconds: float,
    warmup: float,
    *,
    once: bool = False,
) -> PhaseResult:
    """`clients` connections send the requests round-robin for warmup + seconds.

    What is counted is what completes inside the measured window, and the CPU used in
    that same window: with slow requests (bcrypt) and few of them per window, counting
    by send time instead would credit or miss up to one request per connection.
    With `once`, each request is sent one time only and the phase ends when all are.
    """
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    first_error = ""
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def client(index: int) -> None:
        nonlocal errors, first_error
        _, conn = await loop.create_connection(ResponseReader, HOST, port)
        conn.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        i = index
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at or (once and i >= len(requests)):
                    return
                status, _head, body = await conn.request(requests[i % len(requests)])
                i += clients
                done = time.perf_counter()
                if not (once or measure_from <= done <= stop_at):
                    continue
                if status == expect:
                    latencies.append(done - sent)
                else:
                    errors += 1
                    first_error = first_error or f"{status} {body[:200]!r}"
        finally:
            conn.transport.close()  # type: ignore[union-attr]

    async def cpu_at(moment: float) -> tuple[float, float]:
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        return process_cpu(server_pid), time.process_time()

    at_start = asyncio.create_task(cpu_at(measure_from))
    at_stop = asyncio.create_task(cpu_at(stop_at))
    await asyncio.gather(*(client(i) for i in range(clients)))
    ended = time.perf_counter()
    if once:
        at_stop.cancel()
        server_end, client_end = process_cpu(server_pid), time.process_time()
    else:
        server_end, client_end = await at_stop
    server_start, client_start = await at_start
    return PhaseResult(
        name,
        clients,
        ended - measure_from if once else seconds,
        latencies,
        errors,
        first_error,
        server_end - server_start,
        client_end - client_start,
    )


# -- the physical limit of password issue ---------------------------------------------


def bcrypt_limit(rounds: int, threads: int, seconds: float) -> tuple[float, float]:
    """bcrypt.checkpw calls per second at this cost on `threads` threads at once,
    and the CPU seconds each call took."""
    hashed = bcrypt.hashpw(b"benchmark-password", bcrypt.gensalt(rounds))
    deadline = time.perf_counter() + seconds

    def worker() -> int:
        count = 0
        while time.perf_counter() < deadline:
            bcrypt.checkpw(b"benchmark-password", hashed)
            count += 1
        return count

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        counts = list(pool.map(lambda _: worker(), range(threads)))
    done = sum(counts)
    return done / (time.perf_counter() - started), (time.process_time() - cpu) / done


# -- the cloud under test ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def configure(state_dir: Path, rounds: int | None) -> None:
    config = prepare_state_dir(state_dir)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    if rounds is not None:
        config.identity.bcrypt_rounds = rounds
    # No data plane: as root the default would make namespaces and dnsmasqs that outlive
    # the cloud (they are kept across restarts) and nothing here measures them.
    config.network.driver = "noop"
    write_config(state_dir, config)


def start_cloud(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    port = load_config(state_dir).ports.identity
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cumulo up exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("cumulo up did not open its identity port in 120 s")


async def call(port: int, raw: bytes) -> tuple[int, bytes, bytes]:
    _, conn = await asyncio.get_running_loop().create_connection(ResponseReader, HOST, port)
    try:
        return await conn.request(raw)
    finally:
        conn.transport.close()  # type: ignore[union-attr]


def subject_token(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-subject-token":
            return value.strip().decode()
    raise RuntimeError("no X-Subject-Token in the response")


def password_auth(user: str, password: str, scope: dict | None) -> bytes:
    auth: dict = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
        }
    }
    if scope is not None:
        auth["scope"] = scope
    return json.dumps({"auth": auth}).encode()


def token_auth(token: str, project_id: str) -> bytes:
    return json.dumps(
        {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": token}},
                "scope": {"project": {"id": project_id}},
            }
        }
    ).encode()


async def issue_tokens(port: int, raw: bytes, count: int, clients: int) -> list[str]:
    """`count` new tokens from the same issue request, over `clients` connections."""
    tokens: list[str] = []

    async def client() -> None:
        _, conn = await asyncio.get_running_loop().create_connection(ResponseReader, HOST, port)
        try:
            while len(tokens) < count:
                status, head, body = await conn.request(raw)
                if status != 201:
                    raise RuntimeError(f"issue failed: {status} {body[:200]!r}")
                tokens.append(subject_token(head))
        finally:
            conn.transport.close()  # type: ignore[union-attr]

    await asyncio.gather(*(client() for _ in range(clients)))
    return tokens[:count]


# -- the benchmark ---------------------------------------------------------------------


async def benchmark(args: argparse.Namespace, state_dir: Path, pid: int) -> list[str]:
    config = load_config(state_dir)
    port = config.ports.identity
    rounds = config.identity.bcrypt_rounds
    admin_pw = config.identity.admin_password
    admin_scope = {"project": {"name": "admin", "domain": {"id": "default"}}}
    issue = "/v3/auth/tokens"

    def post(body: bytes) -> bytes:
        return http_request("POST", issue, port, {}, body)

    status, head, body = await call(port, post(password_auth("admin", admin_pw, admin_scope)))
    if status != 201:
        raise RuntimeError(f"admin cannot log in: {status} {body[:300]!r}")
    admin_token = subject_token(head)
    project_id = json.loads(body)["token"]["project"]["id"]
    _, head, _ = await call(port, post(password_auth("admin", admin_pw, "unscoped")))  # type: ignore[arg-type]
    unscoped = subject_token(head)

    out = [
        f"cumulo identity tokens: {args.clients} clients, {args.duration:g} s per phase, "
        f"bcrypt cost {rounds}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start",
    ]

    def report(label: str, result: PhaseResult, extra: str = "") -> None:
        out.append(f"{label:<34}{result.line()}{extra}")
        if result.errors:
            out.append(f"{'':<34}first error: {result.first_error}")
        print(out[-1], flush=True)

    print(out[0], flush=True)
    verdicts = []
    if "a" in args.phases:
        # Alternate slices of raw bcrypt and of password issue, so that whatever else
        # runs on the machine weighs on the limit and on the server alike.
        threads = os.cpu_count() or 1
        password = [post(password_auth("admin", admin_pw, admin_scope))]
        limits, cpu_per_check, slices = [], [], []
        for _ in range(args.password_slices):
            rate, cpu = bcrypt_limit(rounds, threads, args.bcrypt_seconds)
            limits.append(rate)
            cpu_per_check.append(cpu)
            slices.append(
                await run_phase(
                    pid, "password", port, password, 201, args.clients, args.password_seconds, 0.5
                )
            )
        limit = statistics.fmean(limits)
        a = PhaseResult.merge(slices)
        out.append(
            f"{'bcrypt.checkpw limit':<34}{limit:9.1f} checks/s  ({threads} threads, cost "
            f"{rounds}; slices: {', '.join(f'{x:.1f}' for x in limits)}; "
            f"CPU/check {statistics.fmean(cpu_per_check) * 1000:.0f} ms)"
        )
        print(out[-1], flush=True)
        ratio = a.rate / limit
        report(
            "(a) issue, password method",
            a,
            f"\n{'':<34}= {ratio:.0%} of the bcrypt limit (target >= {TARGET_PASSWORD_RATIO:.0%}); "
            f"CPU of a raw check / server CPU per token = "
            f"{statistics.fmean(cpu_per_check) / max(a.cpu_per_token, 1e-9):.0%}",
        )
        verdicts.append(("(a)", ratio >= TARGET_PASSWORD_RATIO))

    rescope = [post(token_auth(unscoped, project_id))]
    if "b" in args.phases:
        b = await run_phase(
            pid, "token", port, rescope, 201, args.clients, args.duration, args.warmup
        )
        report("(b) issue, token method (rescope)", b, f"   target >= {TARGET_RESCOPE_PER_S}/s")
        verdicts.append(("(b)", b.rate >= TARGET_RESCOPE_PER_S))

    if "c" in args.phases:
        # A pool of distinct project-scoped tokens, validated with their catalog as
        # keystonemiddleware asks for them.
        subjects = []
        for _ in range(args.subjects):
            _, head, _ = await call(port, rescope[0])
            subjects.append(subject_token(head))
        validate = [
            http_request("GET", issue, port, {"X-Auth-Token": admin_token, "X-Subject-Token": s})
            for s in subjects
        ]
        c = await run_phase(
            pid, "validate", port, validate, 200, args.clients, args.duration, args.warmup
        )
        report("(c) validate", c, f"   target >= {TARGET_VALIDATE_PER_S}/s")
        verdicts.append(("(c)", c.rate >= TARGET_VALIDATE_PER_S))

        single = min(args.duration, 3.0)
        b1 = await run_phase(pid, "token", port, rescope, 201, 1, single, 0.3)
        report("single client: issue (token)", b1)
        c1 = await run_phase(pid, "validate", port, validate, 200, 1, single, 0.3)
        report("single client: validate", c1)

    if "d" in args.phases:
        # What Keystone mostly sees behind keystonemiddleware (which caches on its side):
        # each token validated once, never seen by the token cache. A write (revoking a
        # throwaway token) drops every cache first.
        fresh = await issue_tokens(port, rescope[0], args.first_sight, args.clients)
        throwaway = (await issue_tokens(port, rescope[0], 1, 1))[0]
        revoke = {"X-Auth-Token": admin_token, "X-Subject-Token": throwaway}
        status, _, body = await call(port, http_request("DELETE", issue, port, revoke))
        if status != 204:
            raise RuntimeError(f"could not revoke a token: {status} {body[:200]!r}")
        first_sight = [
            http_request("GET", issue, port, {"X-Auth-Token": admin_token, "X-Subject-Token": s})
            for s in fresh
        ]
        d = await run_phase(
            pid, "validate", port, first_sight, 200, args.clients, 60.0, 0.0, once=True
        )
        report("(d) validate, first sight", d)
    out.append(f"server memory at the end: {server_rss_mb(pid):.0f} MB resident")
    print(out[-1], flush=True)
    out.append(ANCHORS)
    print(out[-1], flush=True)
    out.append("targets: " + ", ".join(f"{n} {'met' if ok else 'MISSED'}" for n, ok in verdicts))
    print(out[-1], flush=True)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=8, help="concurrent connections (default 8)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per phase (default 8)")
    p.add_argument(
        "--password-slices",
        type=int,
        default=6,
        help="slices of password issue, each after a slice of raw bcrypt (default 6)",
    )
    p.add_argument("--password-seconds", type=float, default=4.0, help="seconds per password slice")
    p.add_argument("--bcrypt-seconds", type=float, default=2.0, help="seconds per raw bcrypt slice")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    p.add_argument(
        "--phases",
        default="abcd",
        help="which phases to run: a password, b token, c validate, d first-sight validate",
    )
    p.add_argument("--first-sight", type=int, default=8000, help="tokens validated once in phase d")
    p.add_argument("--subjects", type=int, default=64, help="distinct tokens to validate")
    p.add_argument(
        "--rounds", type=int, default=None, help="bcrypt cost (default: the config's default)"
    )
    p.add_argument("--keep", action="store_true", help="keep the state dir and the server log")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    state_dir = Path(tempfile.mkdtemp(prefix="cumulo-bench-"))
    log = state_dir / "server.log"
    proc = None
    try:
        configure(state_dir, args.rounds)
        proc = start_cloud(state_dir, log)
        asyncio.run(benchmark(args, state_dir, proc.pid))
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"state dir and server log kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
