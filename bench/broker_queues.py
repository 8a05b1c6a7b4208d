"""What the broker pays per queue and per connection, the inputs of docs/scaling.md.

Not a test: in a RabbitMQ vhost of its own (which it must be given, and empties
afterwards), it declares N classic queues as cumulo declares a host's own topic, then N
quorum queues as it declares a shared topic (and as an older cumulo declared every host's),
and opens C connections with two channels each (a compute host's process: its RPC
transport and its notifier). For each it prints the time to declare or open them, the
memory the broker reports for them (`rabbitmqctl list_queues memory`), the growth of the
broker's resident memory (beam.smp; other vhosts' traffic makes this one noisy) and the
broker's CPU while they sit idle.

    .venv/bin/python bench/broker_queues.py --url amqp://guest:guest@127.0.0.1:5672/VHOST \\
        [--queues 300] [--quorum-queues 100] [--connections 200] [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aio_pika

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compute_boot import service_pids, vhost_of  # noqa: E402
from identity_tokens import process_cpu, server_rss_mb  # noqa: E402


def queue_memory(vhost: str, prefix: str) -> tuple[int, int]:
    """Queues named `prefix`* in the vhost and the memory the broker reports for them."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "-p", vhost, "--no-table-headers", "name", "memory"],
        capture_output=True, text=True, check=False, timeout=120,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines()]
    sizes = [int(r[1]) for r in rows if len(r) == 2 and r[0].startswith(prefix) and r[1].isdigit()]
    return len(sizes), sum(sizes)


class Broker:
    def __init__(self) -> None:
        self.pid = service_pids()["rabbitmq"]

    def rss(self) -> float:
        return server_rss_mb(self.pid)

    async def idle_cpu(self, seconds: float) -> float:
        """The broker's CPU share (of one core) over `seconds` of doing nothing here."""
        before = process_cpu(self.pid)
        await asyncio.sleep(seconds)
        return (process_cpu(self.pid) - before) / seconds


async def queues(
    url: str, kind: str, count: int, broker: Broker, idle: float, baseline: float
) -> list[str]:
    vhost = vhost_of(url)
    prefix = f"bench-{kind}-{uuid.uuid4().hex[:6]}."
    connection = await aio_pika.connect(url)
    lines = []
    try:
        channel = await connection.channel()
        rss0 = broker.rss()
        started = time.perf_counter()
        for i in range(count):
            await channel.declare_queue(
                f"{prefix}compute.host{i}", durable=True, arguments={"x-queue-type": kind}
            )
        declared = time.perf_counter() - started
        found, memory = queue_memory(vhost, prefix)
        cpu = await broker.idle_cpu(idle)
        rss1 = broker.rss()
        each = memory / max(1, found) / 1024
        lines.append(
            f"{count} {kind} queues: declared in {declared:.2f} s "
            f"({declared / count * 1000:.1f} ms each); broker reports {each:.0f} "
            f"KiB each; beam.smp RSS +{rss1 - rss0:.0f} MB "
            f"({(rss1 - rss0) / count * 1024:.0f} KiB each); broker CPU idle {cpu * 100:.1f}% "
            f"(baseline {baseline * 100:.1f}%)"
        )
        started = time.perf_counter()
        for i in range(count):
            await channel.queue_delete(f"{prefix}compute.host{i}")
        lines.append(f"  deleted in {time.perf_counter() - started:.2f} s")
    finally:
        await connection.close()
    return lines


async def connections(url: str, count: int, broker: Broker, idle: float, baseline: float) -> str:
    rss0 = broker.rss()
    started = time.perf_counter()
    opened = []
    try:
        for _ in range(count):
            connection = await aio_pika.connect(url, heartbeat=30)
            opened.append(connection)
            await connection.channel()
            await connection.channel()
        took = time.perf_counter() - started
        cpu = await broker.idle_cpu(idle)
        rss1 = broker.rss()
    finally:
        for connection in opened:
            await connection.close()
    return (
        f"{count} connections with 2 channels each: opened in {took:.2f} s; beam.smp RSS "
        f"+{rss1 - rss0:.0f} MB ({(rss1 - rss0) / count * 1024:.0f} KiB each); broker CPU idle "
        f"{cpu * 100:.1f}% (baseline {baseline * 100:.1f}%)"
    )


async def run(args: argparse.Namespace) -> None:
    broker = Broker()
    baseline = await broker.idle_cpu(args.idle_seconds)
    print(f"broker idle before: {baseline * 100:.1f}% of one core, RSS {broker.rss():.0f} MB")
    if args.queues:
        for line in await queues(
            args.url, "classic", args.queues, broker, args.idle_seconds, baseline
        ):
            print(line, flush=True)
    if args.quorum_queues:
        for line in await queues(
            args.url, "quorum", args.quorum_queues, broker, args.idle_seconds, baseline
        ):
            print(line, flush=True)
    if args.connections:
        print(await connections(args.url, args.connections, broker, args.idle_seconds, baseline))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="amqp://user:pass@host:5672/<a vhost of its own>")
    p.add_argument("--queues", type=int, default=300, help="classic queues (default 300)")
    p.add_argument("--quorum-queues", type=int, default=100, help="quorum queues (default 100)")
    p.add_argument("--connections", type=int, default=200, help="connections (default 200)")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    if vhost_of(args.url) == "/":
        raise SystemExit("give it a vhost of its own (the default vhost is shared)")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
