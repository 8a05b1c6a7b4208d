"""The scheduler over 10,000 hosts: select_destinations latency, in-process and through the
scheduler service with its SQLite database.

Not a test: it prints p50/p99 per placement next to the target (p50 <= 10 ms). Two parts:

- in-process: `select.select_destinations` over a list of HostState (filters + weighers,
  one instance per call, each pick consumed before the next call, as the service does);
- service: `SchedulerManager.select_destinations` (what the conductor calls over the bus)
  on a real SQLite database holding 10,000 compute nodes and services, claims included
  (each placement is one committed claim transaction). Host states are cached by the
  scheduler and refreshed from the database when stale or when a claim loses a race;
  --ttl 0 measures the uncached path (every placement reloads every host).

    .venv/bin/python bench/scheduler.py [--hosts 10000] [--calls 300] [--ttl 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cumulo.common.db import Database, utcnow  # noqa: E402
from cumulo.compute.models import ComputeNode, ComputeService  # noqa: E402
from cumulo.compute.scheduler.claims import COMPUTE_BINARY  # noqa: E402
from cumulo.compute.scheduler.host_state import HostState, RequestSpec  # noqa: E402
from cumulo.compute.scheduler.manager import SchedulerManager  # noqa: E402
from cumulo.compute.scheduler.select import select_destinations  # noqa: E402
from cumulo.compute.scheduler.weights import default_weighers  # noqa: E402

TARGET_P50 = 0.010
FLAVOR = {"vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, times: list[float]) -> str:
    return (
        f"{label:<46} p50 {pct(times, 0.5) * 1000:7.2f} ms   p99 {pct(times, 0.99) * 1000:7.2f} ms"
        f"   ({len(times)} placements; target p50 <= {TARGET_P50 * 1000:.0f} ms)"
    )


def random_usage(rng: random.Random) -> dict:
    """A host 0-80 % used, 10 % of them in another zone, a few disabled or down."""
    return {
        "vcpus_used": rng.randint(0, 50),
        "memory_mb_used": rng.randint(0, 52000),
        "local_gb_used": rng.randint(0, 800),
        "availability_zone": "nova" if rng.random() > 0.1 else "other",
        "enabled": rng.random() > 0.02,
        "up": rng.random() > 0.02,
    }


def in_process(hosts: int, calls: int) -> list[float]:
    rng = random.Random(42)
    states = [
        HostState(
            host=f"host{i}",
            node=f"host{i}",
            vcpus=16,
            memory_mb=65536,
            local_gb=1024,
            **random_usage(rng),
        )
        for i in range(hosts)
    ]
    weighers = default_weighers()
    times = []
    for _ in range(calls):
        spec = RequestSpec(vcpus=1, memory_mb=512, disk_gb=1)
        started = time.perf_counter()
        select_destinations(states, spec, [str(uuid.uuid4())], weighers=weighers)
        times.append(time.perf_counter() - started)
    return times


async def make_hosts(db: Database, count: int) -> None:
    rng = random.Random(7)
    now = utcnow()
    async with db.write() as s:
        for i in range(count):
            usage = random_usage(rng)
            s.add(
                ComputeService(
                    uuid=str(uuid.uuid4()),
                    host=f"host{i}",
                    binary=COMPUTE_BINARY,
                    topic=f"compute.host{i}",
                    availability_zone=usage["availability_zone"],
                    disabled=not usage["enabled"],
                    last_seen_up=now,
                )
            )
            s.add(
                ComputeNode(
                    uuid=str(uuid.uuid4()),
                    host=f"host{i}",
                    hypervisor_hostname=f"host{i}",
                    hypervisor_type="fake",
                    vcpus=16,
                    memory_mb=65536,
                    local_gb=1024,
                    vcpus_used=usage["vcpus_used"],
                    memory_mb_used=usage["memory_mb_used"],
                    local_gb_used=usage["local_gb_used"],
                    running_vms=0,
                )
            )


async def through_service(hosts: int, calls: int, ttl: float) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'compute.db'}", "compute")
        await db.migrate()
        try:
            started = time.perf_counter()
            await make_hosts(db, hosts)
            setup = time.perf_counter() - started
            scheduler = SchedulerManager(db, host_state_ttl=ttl)
            ctx = {"request_id": "req-bench"}
            spec = {"flavor": FLAVOR}
            await scheduler.select_destinations(ctx, spec, [str(uuid.uuid4())])  # warm
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                await scheduler.select_destinations(ctx, spec, [str(uuid.uuid4())])
                times.append(time.perf_counter() - started)
            return times, setup
        finally:
            await db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hosts", type=int, default=10_000)
    p.add_argument("--calls", type=int, default=300, help="placements measured per part")
    p.add_argument("--ttl", type=float, default=1.0, help="host state cache lifetime (s)")
    args = p.parse_args(argv)
    print(f"cumulo scheduler: {args.hosts} hosts, one instance (1 vCPU, 512 MB, 1 GB) per call")
    print(line("select.select_destinations (in-process)", in_process(args.hosts, args.calls)))
    times, setup = asyncio.run(through_service(args.hosts, args.calls, args.ttl))
    label = f"SchedulerManager + SQLite + claim (ttl {args.ttl:g} s)"
    print(line(label, times))
    print(f"(creating {args.hosts} nodes and services took {setup:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
