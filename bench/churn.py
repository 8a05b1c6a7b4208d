"""Churn: projects at once building a tenant and tearing it down, round after round.

Not a test: it prints operations per second, p50/p99 per operation, failures, and
what the cloud left behind (leak counts), and compares a boot's p99 under churn with
its p99 on an idle cloud (target: at most 2x). The cloud runs in its own process
(`cumulo up --state-dir <tmp>`) as a user starts it: fake hypervisor on the main host
plus `--fake-hosts` more, SQLite, the in-process bus, and the linuxbridge data plane
when run as root (namespaces, bridges, dnsmasq: what can leak), else noop.

Each tenant (tests/churn.py): a new project and member user; network, subnet, router
with the `public` gateway and an interface, security group and rule, a 1 GiB volume,
3 servers, a floating IP on one; then everything deleted, the project's default
security group, user and project last. Idle: the same tenant, one at a time.

    .venv/bin/python bench/churn.py [--rounds 20] [--projects 10] [--idle-rounds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from identity_tokens import start_cloud  # noqa: E402

from cumulo.common.config import load_config, write_config  # noqa: E402
from tests.churn import ChurnResult, Workload, churn, footprint, leaks, percentile  # noqa: E402
from tests.cloudrunner import configure_state_dir, remove_data_plane  # noqa: E402

TARGET_RATIO = 2.0
AGENT_HOST = "bench"  # the main host: the only one whose ports a network agent wires
WIRING_WAIT = "cumulo_compute_port_wiring_wait_seconds"


def configure(state_dir: Path, fake_hosts: int, dataplane: str) -> None:
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.compute.host = AGENT_HOST
    config.compute.fake_hosts = fake_hosts
    config.network.agent_host = AGENT_HOST
    config.network.driver = dataplane
    write_config(state_dir, config)


def admin_connection(state_dir: Path):
    from openstack.config.loader import OpenStackConfig
    from openstack.connection import Connection

    config = OpenStackConfig(config_files=[str(state_dir / "clouds.yaml")], load_envvars=False)
    return Connection(config=config.get_one(cloud="cumulo"))


def upload_image(admin, work: Path) -> None:
    root = work / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(root), "16M"], check=True,
                   capture_output=True)  # fmt: skip
    image = admin.image.create_image(
        name="churn", filename=str(root), disk_format="qcow2", container_format="bare",
        visibility="public",
    )  # fmt: skip
    admin.image.wait_for_status(image, "active", wait=60)


def settled_footprint(state_dir: Path, seconds: float = 30) -> dict:
    """The footprint once the data plane has stopped changing (it converges after the
    API answers)."""
    last = footprint(state_dir)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(2)
        now = footprint(state_dir)
        if now == last:
            return now
        last = now
    return last


def utc_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(" ")


def boot_phases(state_dir: Path, since: str, until: str) -> dict[str, dict[str, list[float]]]:
    """Where each boot of a run went, from its instance action events: the time until
    its host started it (API, conductor, scheduler), its networking (its ports made and
    bound), then the rest until the guest ran (on the agent's host, the wait for the
    ports' wiring: it overlaps the spawn); by host kind (the agent's host, the fake
    ones)."""
    query = """SELECT i.host, a.start_time, e.event, e.start_time, e.finish_time
        FROM instance i JOIN instance_action a ON a.instance_uuid = i.uuid
        JOIN instance_action_event e ON e.action_id = a.id
        WHERE a.action = 'create' AND a.start_time BETWEEN ? AND ?"""
    boots: dict[tuple[str, str], dict[str, tuple[datetime, datetime | None]]] = {}
    with sqlite3.connect(f"file:{state_dir / 'compute.db'}?mode=ro", uri=True) as conn:
        for host, action_start, event, start, finish in conn.execute(query, (since, until)):
            times = boots.setdefault((host or "", action_start), {})
            times[event] = (datetime.fromisoformat(start),
                            datetime.fromisoformat(finish) if finish else None)  # fmt: skip
    phases: dict[str, dict[str, list[float]]] = {}
    for (host, action_start), times in boots.items():
        net, build = times.get("compute_networking"), times.get("compute_build_and_run_instance")
        if net is None or net[1] is None or build is None or build[1] is None:
            continue
        kind = "agent host" if host == AGENT_HOST else "fake hosts"
        found = phases.setdefault(kind, {"to host": [], "networking": [], "rest": []})
        found["to host"].append((net[0] - datetime.fromisoformat(action_start)).total_seconds())
        found["networking"].append((net[1] - net[0]).total_seconds())
        found["rest"].append((build[1] - net[1]).total_seconds())
    return phases


def wiring_waits(state_dir: Path) -> dict[float, float]:
    """The compute side's wiring-wait histogram (bucket upper bound -> count)."""
    port = load_config(state_dir).ports.compute
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = {}
    for bound, count in re.findall(rf'^{WIRING_WAIT}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        found[float(bound)] = float(count)
    return found


def histogram_percentile(before: dict[float, float], after: dict[float, float], p: float) -> float:
    """The p-th percentile of what a cumulative histogram gained (linear in a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or not counts[-1]:
        return 0.0
    rank, lower, below = p / 100 * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def report_phases(phases: dict[str, dict[str, list[float]]], waits: tuple[dict, dict]) -> None:
    for kind, found in sorted(phases.items()):
        line = ", ".join(
            f"{name} p50 {percentile(v, 50):.2f} / p99 {percentile(v, 99):.2f} s"
            for name, v in found.items()
        )
        print(f"  boots on the {kind} ({len(found['rest'])}): {line}")
    before, after = waits
    if after:
        print(f"  wait for the ports' wiring: p50 {histogram_percentile(before, after, 50):.2f}"
              f" / p99 {histogram_percentile(before, after, 99):.2f} s "
              "(from the histogram's buckets)")  # fmt: skip


def report(title: str, result: ChurnResult) -> None:
    print(f"\n{title}: {result.elapsed:.1f} s, failures: {len(result.failures)}")
    print(f"  {'operation':<28} {'count':>6} {'ops/s':>7} {'p50 s':>7} {'p99 s':>7}")
    for op, count, rate, p50, p99 in result.table():
        print(f"  {op:<28} {count:>6} {rate:>7.2f} {p50:>7.3f} {p99:>7.3f}")
    for failure in result.failures[:5]:
        print("  FAILED", failure.splitlines()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--idle-rounds", type=int, default=10)
    parser.add_argument("--fake-hosts", type=int, default=4)
    parser.add_argument("--servers", type=int, default=3, help="servers per tenant")
    default_plane = "linuxbridge" if os.geteuid() == 0 else "noop"
    parser.add_argument("--dataplane", default=default_plane, choices=("linuxbridge", "noop"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cumulo-churn-"))
    state_dir = work / "state"
    configure(state_dir, args.fake_hosts, args.dataplane)
    proc = start_cloud(state_dir, work / "cloud.log")
    try:
        admin = admin_connection(state_dir)
        upload_image(admin, work)
        workload = Workload(image="churn", servers=args.servers, timeout=600)
        warm = churn(admin, workload, rounds=1, projects=1)
        before = settled_footprint(state_dir)
        marks = [(utc_now(), wiring_waits(state_dir))]
        idle = churn(admin, workload, rounds=args.idle_rounds, projects=1)
        marks.append((utc_now(), wiring_waits(state_dir)))
        loaded = churn(admin, workload, rounds=args.rounds, projects=args.projects)
        marks.append((utc_now(), wiring_waits(state_dir)))
        after = settled_footprint(state_dir)
        phases = [boot_phases(state_dir, marks[i][0], marks[i + 1][0]) for i in (0, 1)]
        leftovers = {
            "servers": len(list(admin.compute.servers(all_projects=True))),
            "volumes": len(list(admin.block_storage.volumes(all_projects=True))),
        }
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    if args.dataplane == "linuxbridge":
        remove_data_plane(state_dir)

    print(f"cumulo churn: {args.projects} projects x {args.rounds} rounds, "
          f"{args.servers} servers each, {args.fake_hosts + 1} fake hosts, "
          f"data plane {args.dataplane}, SQLite, in-process bus")  # fmt: skip
    print(f"warm-up failures: {len(warm.failures)}")
    report(f"idle (1 project x {args.idle_rounds} rounds)", idle)
    report_phases(phases[0], (marks[0][1], marks[1][1]))
    report(f"churn ({args.projects} projects x {args.rounds} rounds)", loaded)
    report_phases(phases[1], (marks[1][1], marks[2][1]))
    found = leaks(before, after)
    print(f"\nleft behind: servers {leftovers['servers']}, volumes {leftovers['volumes']}")
    for kind in ("namespaces", "links", "processes", "files", "rows"):
        print(f"  leaked {kind}: {sum(found.get(kind, {}).values())} {found.get(kind, '')}")
    history = {
        k.split(" ")[0]: n
        for k in after["rows"]
        if "(history)" in k and (n := after["rows"][k] - before["rows"][k])
    }
    print(f"  kept as history (deleted servers' records, as Nova keeps them): {history}")
    idle_p99 = percentile(idle.seconds["boot"], 99)
    churn_p99 = percentile(loaded.seconds["boot"], 99)
    ratio = churn_p99 / idle_p99 if idle_p99 else float("inf")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"\nboot p99: idle {idle_p99:.3f} s, under churn {churn_p99:.3f} s = {ratio:.2f}x "
          f"(target <= {TARGET_RATIO:g}x: {verdict})")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
