"""Server boots to ACTIVE: N servers on 100 fake hosts, 16 concurrent API clients.

Not a test: it prints boots/s and API-call-to-ACTIVE latency next to the upstream
anchor. The cloud runs in its own process (`cumulo up --state-dir <tmp>`) exactly as
a user starts it, with the fake hypervisor driver on `compute.fake_hosts` = 99 extra
hosts plus the main one and the noop network data plane. Two setups:

- all-in-one: SQLite files and the in-process message bus;
- RabbitMQ + PostgreSQL: `messaging.transport_url` rabbit://guest:guest@127.0.0.1:5672/
  with a namespace of its own, and a fresh PostgreSQL database; both are removed
  afterwards (queues and databases).

Servers are booted as the demo user (a project member, not an admin) from a tiny qcow2
image uploaded once, with networks "none" by default or the demo project's `private`
network (`--network private`: a port per server through the Network API, noop driver).
The admin raises the demo project's compute quotas to unlimited first.

The load generator is a small asyncio HTTP/1.1 keep-alive client (identity_tokens.py's),
one request in flight per connection. Latency is measured two ways: to the moment the
host reports the guest running (the server's `OS-SRV-USG:launched_at`, microseconds,
read once at the end), and to the moment a poller first sees the server ACTIVE through
the API (`GET /servers?status=ACTIVE&changes-since=...`, brief, one poll in flight,
every --poll-interval seconds: an upper bound that includes the polling delay).

    .venv/bin/python bench/compute_boot.py [--servers 1000] [--clients 16] [--setups aio,rabbit]

Scale runs (docs/scaling.md): `--setups cluster --fake-hosts 999 --computes 4
--idle-seconds 30 --rabbit-url rabbit://guest:guest@127.0.0.1:5672/<vhost>` (a vhost of
its own: the broker's queues, connections and memory are then the cloud's alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from identity_tokens import (  # noqa: E402
    HOST,
    ResponseReader,
    free_port,
    http_request,
    password_auth,
    process_cpu,
    server_rss_mb,
    start_cloud,
    subject_token,
)

from cumulo.cloud import prepare_state_dir  # noqa: E402
from cumulo.common.config import load_config, write_config  # noqa: E402

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
POSTGRESQL = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
COMPUTE_HOST = "bench"  # the main host's name; the fake ones are bench-fake1..
TARGET_BOOTS_PER_S = 100
TARGET_P50 = 0.200
ANCHOR = "Anchor: upstream Nova's published Rally figures are 8-13 s per boot."


# -- HTTP ---------------------------------------------------------------------------------


class Connection:
    """One keep-alive connection to one port: request() returns (status, head, JSON)."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        self.token = token
        self.reader: ResponseReader | None = None

    async def open(self) -> Connection:
        _, self.reader = await asyncio.get_running_loop().create_connection(
            ResponseReader, HOST, self.port
        )
        self.reader.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        return self

    def close(self) -> None:
        if self.reader is not None and self.reader.transport is not None:
            self.reader.transport.close()

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, bytes, object]:
        if self.reader is None or self.reader.closed is not None:
            await self.open()  # the server drops idle keep-alive connections after 5 s
        assert self.reader is not None
        hdrs = {"X-Auth-Token": self.token} if self.token else {}
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        if data and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        if data or method in ("POST", "PUT"):
            hdrs["Content-Length"] = str(len(data))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        status, head, payload = await self.reader.request(
            ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        )
        return status, head, json.loads(payload) if payload else None

    async def ok(self, method: str, path: str, body: object = None, **kw) -> object:
        status, _, result = await self.request(method, path, body, **kw)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {str(result)[:300]}")
        return result


async def login(port: int, user: str, password: str, project: str) -> tuple[str, str]:
    conn = await Connection(port).open()
    try:
        scope = {"project": {"name": project, "domain": {"id": "default"}}}
        raw = password_auth(user, password, scope)
        status, head, body = await conn.reader.request(  # type: ignore[union-attr]
            http_request("POST", "/v3/auth/tokens", port, {}, raw)
        )
        if status != 201:
            raise RuntimeError(f"{user} cannot log in: {status} {body[:300]!r}")
        return subject_token(head), json.loads(body)["token"]["project"]["id"]
    finally:
        conn.close()


# -- the cloud under test --------------------------------------------------------------


@dataclass
class Setup:
    name: str
    transport_url: str = "memory://"
    namespace: str = "cumulo"
    database_url: str = ""
    cluster: bool = False  # every service its own process (cumulo api, conductor, ...)


def configure(state_dir: Path, setup: Setup, fake_hosts: int) -> None:
    config = prepare_state_dir(state_dir, database=setup.database_url or None)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    config.network.driver = "noop"
    config.compute.driver = "fake"
    config.compute.host = COMPUTE_HOST
    config.compute.fake_hosts = fake_hosts
    config.messaging.transport_url = setup.transport_url
    config.messaging.namespace = setup.namespace
    write_config(state_dir, config)


def tiny_qcow2(directory: Path) -> bytes:
    path = directory / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path.read_bytes()


async def wait_for_hosts(compute: Connection, count: int, timeout: float = 600.0) -> None:
    timeout = max(timeout, count * 0.6)  # hosts start one after the other in each process
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = await compute.request("GET", "/v2.1/os-hypervisors")
        if status == 200 and len(body["hypervisors"]) >= count:  # type: ignore[index]
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"fewer than {count} hypervisors reported in {timeout:g} s")


async def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"port {port} did not open")


# -- the benchmark ------------------------------------------------------------------------


@dataclass
class Result:
    setup: str
    servers: int
    clients: int
    network: str
    elapsed: float = 0.0  # first POST sent -> last server seen ACTIVE
    api_latencies: list[float] = field(default_factory=list)  # POST -> 202
    launched: list[float] = field(default_factory=list)  # POST -> launched_at
    observed: list[float] = field(default_factory=list)  # POST -> poller saw ACTIVE
    errors: list[str] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    polls: int = 0
    rss_mb: float = 0.0
    delete_rate: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU s while booting
    broker: dict[str, tuple[int, int]] = field(default_factory=dict)  # connections, channels
    idle_cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU share, idle
    broker_state: list[str] = field(default_factory=list)  # queues, memory, per moment
    broker_traffic: dict[str, tuple[int, int]] = field(default_factory=dict)  # phase -> bytes
    startup: float = 0.0  # processes started -> every host reported

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def lines(self) -> list[str]:
        ok = len(self.launched)
        rate = ok / self.elapsed if self.elapsed else 0.0
        ms = lambda v: f"{v * 1000:7.0f} ms"  # noqa: E731
        out = [
            f"[{self.setup}] {ok}/{self.servers} servers ACTIVE in {self.elapsed:.2f} s: "
            f"{rate:.1f} boots/s  (target >= {TARGET_BOOTS_PER_S}/s; {self.clients} clients, "
            f"networks {self.network})",
            f"  API call -> host reports running (launched_at): "
            f"p50 {ms(self.pct(self.launched, 0.5))}  p99 {ms(self.pct(self.launched, 0.99))}"
            f"   (target p50 <= {TARGET_P50 * 1000:.0f} ms)",
            f"  API call -> seen ACTIVE by the poller:           "
            f"p50 {ms(self.pct(self.observed, 0.5))}  p99 {ms(self.pct(self.observed, 0.99))}"
            f"   ({self.polls} polls)",
            f"  POST /servers -> 202:                            "
            f"p50 {ms(self.pct(self.api_latencies, 0.5))}  "
            f"p99 {ms(self.pct(self.api_latencies, 0.99))}",
            f"  server CPU {self.server_cpu / max(1, ok) * 1000:.2f} ms per boot, load generator "
            f"{self.client_cpu / max(1, ok) * 1000:.2f} ms per boot; server memory "
            f"{self.rss_mb:.0f} MB; deletes {self.delete_rate:.1f}/s",
        ]
        if len(self.cpu) > 1:
            out.append(
                "  CPU per boot by process: "
                + ", ".join(f"{k} {v / max(1, ok) * 1000:.2f} ms" for k, v in self.cpu.items())
            )
        if self.idle_cpu:
            out.append(
                "  idle (hosts reporting, nothing booting), CPU by process: "
                + ", ".join(f"{k} {v * 100:.1f}%" for k, v in self.idle_cpu.items())
                + f"; total {sum(self.idle_cpu.values()) * 100:.1f}% of one core"
            )
        if self.startup:
            out.append(f"  every host up {self.startup:.1f} s after the processes started")
        out += [f"  broker {line}" for line in self.broker_state]
        for phase, (received, sent) in self.broker_traffic.items():
            out.append(
                f"  broker traffic {phase}: {received / 1024:.1f} KiB in, {sent / 1024:.1f} KiB out"
            )
        if self.broker:
            out.append(
                "  RabbitMQ connections/channels by process: "
                + ", ".join(f"{k} {c}/{ch}" for k, (c, ch) in self.broker.items())
            )
        if self.errors:
            out.append(f"  {len(self.errors)} errors, first: {self.errors[0]}")
        return out

    @property
    def met(self) -> bool:
        ok = len(self.launched)
        return (
            ok == self.servers
            and ok / self.elapsed >= TARGET_BOOTS_PER_S
            and self.pct(self.launched, 0.5) <= TARGET_P50
        )


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


async def boot_all(
    args: argparse.Namespace, setup: Setup, state_dir: Path, pids: dict[str, int]
) -> Result:
    config = load_config(state_dir)
    ports = config.ports
    admin_token, _ = await login(ports.identity, "admin", config.identity.admin_password, "admin")
    token, project = await login(ports.identity, "demo", config.identity.demo_password, "demo")
    await wait_for_port(ports.compute)
    admin = await Connection(ports.compute, admin_token).open()
    compute = await Connection(ports.compute, token).open()
    image_api = await Connection(ports.image, token).open()
    network_api = await Connection(ports.network, token).open()
    result = Result(setup.name, args.servers, args.clients, args.network)
    try:
        await wait_for_hosts(admin, args.fake_hosts + 1)
        result.startup = time.monotonic() - args.started
        print(f"[{setup.name}] every host up after {result.startup:.0f} s", flush=True)
        if setup.transport_url.startswith("rabbit"):
            result.broker_state.append("hosts up: " + broker_state(setup, pids))
        if args.idle_seconds:
            # What the hosts cost with nothing to do: heartbeats and power-state syncs.
            rabbit = setup.transport_url.startswith("rabbit")
            traffic = broker_traffic(setup) if rabbit else (0, 0)
            before = cpu_by_process(pids)
            await asyncio.sleep(args.idle_seconds)
            after = cpu_by_process(pids)
            if rabbit:
                now = broker_traffic(setup)
                hosts = args.fake_hosts + 1
                result.broker_traffic["per idle host per second"] = (
                    round((now[0] - traffic[0]) / args.idle_seconds / hosts),
                    round((now[1] - traffic[1]) / args.idle_seconds / hosts),
                )
            result.idle_cpu = {
                name: (after[name] - before[name]) / args.idle_seconds
                for name in after
                if name in before
            }
            if setup.transport_url.startswith("rabbit"):
                result.broker_state.append("after idle: " + broker_state(setup, pids))
            # Printed at once: what a long scale run measured survives a later failure.
            print(f"[{setup.name}] idle: " + repr(result.idle_cpu), flush=True)
            print(f"[{setup.name}] broker: " + " | ".join(result.broker_state), flush=True)
            print(f"[{setup.name}] traffic: " + repr(result.broker_traffic), flush=True)
        unlimited = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
        await admin.ok("PUT", f"/v2.1/os-quota-sets/{project}", unlimited)
        image = await image_api.ok(
            "POST",
            "/v2/images",
            {"name": "bench-tiny", "disk_format": "qcow2", "container_format": "bare"},
        )
        image_id = image["id"]  # type: ignore[index]
        await image_api.ok(
            "PUT",
            f"/v2/images/{image_id}/file",
            raw=tiny_qcow2(state_dir),
            headers={"Content-Type": "application/octet-stream"},
        )
        if args.network == "none":
            networks: object = "none"
        else:
            found = await network_api.ok("GET", f"/v2.0/networks?name={args.network}")
            networks = [{"uuid": found["networks"][0]["id"]}]  # type: ignore[index]
        flavor = args.flavor
        version = {"OpenStack-API-Version": "compute 2.79"}

        sent: dict[str, float] = {}  # server id -> wall clock at the POST
        seen: dict[str, float] = {}  # server id -> wall clock when the poller saw ACTIVE
        done = asyncio.Event()
        counter = iter(range(args.servers))
        all_posted = asyncio.Event()

        async def client() -> None:
            conn = await Connection(ports.compute, token).open()
            try:
                for i in counter:
                    body = {
                        "server": {
                            "name": f"bench-{i}",
                            "imageRef": image_id,
                            "flavorRef": flavor,
                            "networks": networks,
                        }
                    }
                    started, perf = time.time(), time.perf_counter()
                    status, _, reply = await conn.request(
                        "POST", "/v2.1/servers", body, headers=version
                    )
                    if status != 202:
                        result.errors.append(f"POST {status} {str(reply)[:200]}")
                        continue
                    result.api_latencies.append(time.perf_counter() - perf)
                    sent[reply["server"]["id"]] = started  # type: ignore[index]
            finally:
                conn.close()

        async def poller() -> None:
            conn = await Connection(ports.compute, token).open()
            since = datetime.now(UTC) - timedelta(seconds=5)
            progress = time.time()
            try:
                while True:
                    asked = datetime.now(UTC)
                    q = quote((since - timedelta(seconds=0.5)).strftime("%Y-%m-%dT%H:%M:%S.%f"))
                    status, _, reply = await conn.request(
                        "GET", f"/v2.1/servers?status=ACTIVE&changes-since={q}&limit=1000"
                    )
                    now = time.time()
                    result.polls += 1
                    if status != 200:
                        raise RuntimeError(f"poll failed: {status} {reply}")
                    for server in reply["servers"]:  # type: ignore[index]
                        if server["id"] not in seen:
                            seen[server["id"]] = progress = now
                    since = asked
                    if all_posted.is_set() and len(seen) < len(sent) and now - progress > 2:
                        # A write committed long after its updated_at (a busy database)
                        # slips past the window: look at every ACTIVE server once.
                        since, progress = datetime.now(UTC) - timedelta(days=1), now
                    if all_posted.is_set() and len(seen) >= len(sent):
                        done.set()
                        return
                    await asyncio.sleep(args.poll_interval)
            finally:
                conn.close()

        traffic = broker_traffic(setup) if setup.transport_url.startswith("rabbit") else (0, 0)
        cpu0, own0 = cpu_by_process(pids), time.process_time()
        first = time.time()
        watcher = asyncio.create_task(poller())
        await asyncio.gather(*(client() for _ in range(args.clients)))
        all_posted.set()
        try:
            await asyncio.wait_for(done.wait(), args.timeout)
        except TimeoutError:
            result.errors.append(
                f"{len(sent) - len(seen)} servers not ACTIVE after {args.timeout:g} s"
            )
            watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        cpu1 = cpu_by_process(pids)
        result.cpu = {name: cpu1[name] - cpu0[name] for name in cpu1 if name in cpu0}
        result.server_cpu = sum(
            v for k, v in result.cpu.items() if k not in ("rabbitmq", "postgresql")
        )
        result.client_cpu = time.process_time() - own0
        result.rss_mb = sum(server_rss_mb(p) for n, p in pids.items() if n != "rabbitmq")
        if setup.transport_url.startswith("rabbit"):
            now = broker_traffic(setup)
            booted = max(1, len(seen))
            result.broker_traffic["per boot (idle hosts' traffic included)"] = (
                round((now[0] - traffic[0]) / booted),
                round((now[1] - traffic[1]) / booted),
            )
        result.broker = broker_connections(pids)
        if setup.transport_url.startswith("rabbit"):
            result.broker_state.append("after the boots: " + broker_state(setup, pids))
        result.elapsed = (max(seen.values()) if seen else time.time()) - first

        # launched_at of every server, and what went wrong with the others.
        marker = ""
        while True:
            page = f"/v2.1/servers/detail?limit=1000{'&marker=' + marker if marker else ''}"
            reply = await compute.ok("GET", page, headers=version)
            servers = reply["servers"]  # type: ignore[index]
            for server in servers:
                if server["id"] not in sent:
                    continue
                if server["status"] == "ACTIVE" and server["OS-SRV-USG:launched_at"]:
                    launched = parse_time(server["OS-SRV-USG:launched_at"])
                    result.launched.append(launched - sent[server["id"]])
                    if server["id"] in seen:
                        result.observed.append(seen[server["id"]] - sent[server["id"]])
                else:
                    fault = (server.get("fault") or {}).get("message", "")
                    result.errors.append(f"{server['id']} {server['status']} {fault}")
            if len(servers) < 1000:
                break
            marker = servers[-1]["id"]

        # Delete them all (same clients), and wait until they are gone.
        ids = list(sent)
        started = time.perf_counter()

        async def deleter() -> None:
            conn = await Connection(ports.compute, token).open()
            try:
                while ids:
                    await conn.ok("DELETE", f"/v2.1/servers/{ids.pop()}")
            finally:
                conn.close()

        await asyncio.gather(*(deleter() for _ in range(args.clients)))
        deadline = time.monotonic() + args.timeout
        while (await compute.ok("GET", "/v2.1/servers?limit=1"))["servers"]:  # type: ignore[index]
            if time.monotonic() > deadline:  # report what was measured rather than hang
                result.errors.append(f"servers left undeleted after {args.timeout:g} s")
                break
            await asyncio.sleep(0.1)
        result.delete_rate = len(sent) / (time.perf_counter() - started)
        return result
    finally:
        for conn in (admin, compute, image_api, network_api):
            conn.close()


def run_setup(args: argparse.Namespace, setup: Setup) -> Result:
    state_dir = Path(tempfile.mkdtemp(prefix="cumulo-bench-boot-"))
    log = state_dir / "server.log"
    procs: dict[str, subprocess.Popen] = {}
    args.started = time.monotonic()
    try:
        if setup.cluster:
            configure(state_dir, setup, 0)
            procs = start_cluster(state_dir, args)
            pids = cluster_pids(procs)
        else:
            configure(state_dir, setup, args.fake_hosts)
            procs = {"cumulo up": start_cloud(state_dir, log)}
            pids = {"cumulo up": procs["cumulo up"].pid}
        if setup.transport_url.startswith("rabbit"):
            pids |= service_pids()
        return asyncio.run(boot_all(args, setup, state_dir, pids))
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"[{setup.name}] state dir and server log kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


# -- the cluster: every service its own process --------------------------------------------

CLUSTER_COMPUTES = 2  # compute processes, the fake hosts spread over them (--computes)


def start_cluster(state_dir: Path, args: argparse.Namespace) -> dict[str, subprocess.Popen]:
    """`cumulo api --workers 2`, two conductors, two schedulers and the compute processes
    (args.fake_hosts + 1 hosts over them), each logging to its own file in the state dir."""
    cumulo = str(Path(sys.executable).parent / "cumulo")
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, *command: str) -> None:
        with (state_dir / f"{name}.log").open("wb") as out:
            procs[name] = subprocess.Popen([cumulo, *command], stdout=out, stderr=subprocess.STDOUT)

    start("api", "api", "--workers", "2", "--state-dir", str(state_dir))
    asyncio.run(wait_for_port(load_config(state_dir).ports.compute, 300))
    for role in ("conductor", "scheduler"):
        for i in (1, 2):
            start(f"{role}-{i}", role, "--state-dir", str(state_dir), "--host", f"{role}-{i}")
    per_process = (args.fake_hosts + 1) // args.computes
    for i in range(1, args.computes + 1):
        host_dir = state_dir / f"compute-{i}"
        host_dir.mkdir()
        shutil.copy(state_dir / "cumulo.toml", host_dir / "cumulo.toml")
        config = load_config(host_dir)
        config.compute.host = f"{COMPUTE_HOST}{i}"
        config.compute.fake_hosts = per_process - 1
        write_config(host_dir, config)
        start(f"compute-{i}", "compute", "--state-dir", str(host_dir))
    return procs


def cluster_pids(procs: dict[str, subprocess.Popen]) -> dict[str, int]:
    """Every process of the cluster, the API's workers by name (their parent only waits)."""
    from tests.cluster import children

    pids = {name: proc.pid for name, proc in procs.items() if name != "api"}
    workers = sorted(children(procs["api"].pid))
    pids |= {f"api-worker-{i}": pid for i, pid in enumerate(workers, 1)}
    return pids


def service_pids() -> dict[str, int]:
    """The broker's process (its CPU is part of every boot on RabbitMQ)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return {"rabbitmq": int(entry.name)}
            except OSError:
                continue
    return {}


def vhost_of(url: str) -> str:
    """The RabbitMQ vhost of an amqp/rabbit URL ("/" when it names none)."""
    from urllib.parse import unquote, urlsplit

    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def broker_state(setup: Setup, pids: dict[str, int]) -> str:
    """The cloud's queues on the broker by type (count, memory), the broker's resident
    memory, and the connections and channels of the cloud's vhost."""
    vhost = vhost_of(setup.transport_url)

    def listed(*command: str) -> list[list[str]]:
        out = subprocess.run(
            ["rabbitmqctl", *command, "-q", "-p", vhost, "--no-table-headers"],
            capture_output=True, text=True, check=False, timeout=120,
        ).stdout  # fmt: skip
        return [line.split() for line in out.splitlines() if line.strip()]

    by_type: dict[str, list[int]] = {}
    for row in listed("list_queues", "name", "type", "memory", "messages"):
        if len(row) != 4 or not row[2].isdigit():
            continue
        name, kind, memory, _ = row
        reply = name.startswith(("amq.gen-", "amq_"))  # exclusive, named by aio-pika/broker
        if not (name.startswith(setup.namespace + ".") or reply):
            continue
        kind = "reply" if reply else kind
        count, total = by_type.get(kind, [0, 0])
        by_type[kind] = [count + 1, total + int(memory)]
    connections = listed("list_connections", "channels")
    channels = sum(int(row[0]) for row in connections if row and row[0].isdigit())
    queues = ", ".join(
        f"{count} {kind} ({total / 1024 / 1024:.1f} MiB)"
        for kind, (count, total) in sorted(by_type.items())
    )
    rss = server_rss_mb(pids["rabbitmq"]) if "rabbitmq" in pids else float("nan")
    return (
        f"queues {queues or 'none'}; {len(connections)} connections, {channels} channels "
        f"(vhost {vhost}); beam.smp RSS {rss:.0f} MB"
    )


def broker_traffic(setup: Setup) -> tuple[int, int]:
    """Bytes the broker has received from and sent to the connections of the cloud's vhost."""
    out = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "-p", vhost_of(setup.transport_url),
         "--no-table-headers", "recv_oct", "send_oct"],
        capture_output=True, text=True, check=False, timeout=120,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines()]
    rows = [r for r in rows if len(r) == 2 and r[0].isdigit() and r[1].isdigit()]
    return sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)


async def delete_vhost_queues(url: str, namespace: str) -> None:
    """The run's queues removed from the vhost of `url` (tests.cluster.delete_queues
    knows the default vhost only)."""
    import aio_pika

    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "-p", vhost_of(url), "--no-table-headers", "name"],
        capture_output=True, text=True, check=False, timeout=120,
    ).stdout  # fmt: skip
    names = [n for n in out.split() if n.startswith(namespace + ".")]
    connection = await aio_pika.connect("amqp://" + url.split("://", 1)[1])
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each process so far; PostgreSQL's as the sum of its processes."""
    cpu = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):  # an API worker that died (its parent replaces it)
            cpu[name] = process_cpu(pid)
    if "rabbitmq" in pids:
        total = 0.0
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                    total += process_cpu(int(entry.name))
            except OSError:
                continue
        cpu["postgresql"] = total
    return cpu


def broker_connections(pids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Connections and channels each process holds on the broker (`rabbitmqctl` and `ss`)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "peer_port", "channels"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    channels_by_port = {}
    for line in listed.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            channels_by_port[int(parts[0])] = int(parts[1])
    sockets = subprocess.run(
        ["ss", "-tnpH", "state", "established", "( dport = :5672 )"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    by_pid = {pid: name for name, pid in pids.items()}
    found: dict[str, tuple[int, int]] = {}
    for line in sockets.splitlines():
        fields = line.split()
        local_port = int(fields[2].rsplit(":", 1)[1]) if len(fields) > 2 else 0
        for pid_text in line.split("pid=")[1:]:
            name = by_pid.get(int(pid_text.split(",")[0]))
            if name and local_port in channels_by_port:
                conns, chans = found.get(name, (0, 0))
                found[name] = (conns + 1, chans + channels_by_port[local_port])
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", type=int, default=1000, help="servers to boot (default 1000)")
    p.add_argument("--clients", type=int, default=16, help="concurrent API clients (default 16)")
    p.add_argument("--fake-hosts", type=int, default=99, help="fake hosts besides the main one")
    p.add_argument("--flavor", default="0", help="flavor id (default 0: m1.nano)")
    p.add_argument(
        "--network", default="none", help='"none" (default) or a network name, e.g. private'
    )
    p.add_argument(
        "--setups",
        default="aio,rabbit",
        help="aio (SQLite, memory bus), rabbit (cumulo up on RabbitMQ + PostgreSQL), cluster "
        "(cumulo api --workers 2, 2 conductors, 2 schedulers, 2 compute processes, on "
        "RabbitMQ + PostgreSQL)",
    )
    p.add_argument(
        "--computes",
        type=int,
        default=CLUSTER_COMPUTES,
        help="cluster: compute processes the hosts are spread over (default 2)",
    )
    p.add_argument(
        "--rabbit-url",
        default=RABBIT_URL,
        help="the broker of the rabbit and cluster setups, e.g. with a vhost of the run's own "
        f"(default {RABBIT_URL})",
    )
    p.add_argument(
        "--postgresql",
        default=POSTGRESQL,
        help="the PostgreSQL server of the rabbit and cluster setups, e.g. an instance of the "
        f"run's own (the cluster holds up to 90 connections; default {POSTGRESQL})",
    )
    p.add_argument("--poll-interval", type=float, default=0.05, help="seconds between polls")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for ACTIVE")
    p.add_argument("--keep", action="store_true", help="keep the state dir and the server log")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=0.0,
        help="before booting, measure each process's CPU this long with the hosts idle",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(
        f"cumulo compute boots: {args.servers} servers, {args.fake_hosts + 1} fake hosts, "
        f"{args.clients} clients, flavor {args.flavor}, networks {args.network}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    results = []
    for name in args.setups.split(","):
        if name == "aio":
            results.append(run_setup(args, Setup("all-in-one, SQLite + memory bus")))
        elif name in ("rabbit", "cluster"):
            from tests.cluster import delete_queues
            from tests.databases import SERVERS, fresh_database

            server = args.postgresql.rstrip("/") + "/"
            SERVERS["postgresql"] = dataclasses.replace(
                SERVERS["postgresql"], admin_url=server + "postgres", url_prefix=server
            )

            namespace = f"bench-{uuid.uuid4().hex[:8]}"
            label = "RabbitMQ + PostgreSQL"
            if name == "cluster":
                label = "cluster: 2 API workers, 2 conductors, 2 schedulers, " + label
            with fresh_database("postgresql") as url:
                try:
                    results.append(
                        run_setup(
                            args,
                            Setup(
                                label, args.rabbit_url, namespace, url, cluster=name == "cluster"
                            ),
                        )
                    )
                finally:
                    if vhost_of(args.rabbit_url) == "/":
                        asyncio.run(delete_queues(namespace))
                    else:
                        asyncio.run(delete_vhost_queues(args.rabbit_url, namespace))
        else:
            raise SystemExit(f"unknown setup {name!r}")
        for line in results[-1].lines():
            print(line, flush=True)
    print(ANCHOR)
    if results:
        aio = results[0]
        print(f"targets (first setup): {'met' if aio.met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
