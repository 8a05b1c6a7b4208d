"""Churn: projects at once, each building a small tenant and tearing it down, round
after round; and what a cloud holds on its host, to compare before and after.

One tenant, built by a new project's member user through openstacksdk: a network,
a subnet, a router with the external gateway and an interface on the subnet, a
security group with a rule, a 1 GiB volume, servers on the network in the group,
and a floating IP on the first server; then all of it deleted in reverse. The admin
makes the project and user first and deletes them last. Used by tests/e2e/test_churn.py
and bench/churn.py (longer runs, figures).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openstack.connection import Connection

from cumulo.common.config import load_config
from cumulo.network.dataplane.linuxbridge import scope_of

# Deleted servers' records, which Nova keeps too (until `nova-manage db
# archive_deleted_rows`): counted as history, apart from the live rows.
DELETED_SERVER = "instance_uuid IN (SELECT uuid FROM instance WHERE deleted)"
HISTORY = {
    "compute.instance": "deleted",
    "compute.instance_action": DELETED_SERVER,
    "compute.instance_action_event": "action_id IN (SELECT id FROM instance_action WHERE "
    + DELETED_SERVER
    + ")",
    "compute.instance_fault": DELETED_SERVER,
}
# Files that come and go with the databases' own bookkeeping, not with the cloud's work.
VOLATILE_FILES = re.compile(r"\.db-(wal|shm|journal)$|^cumulo\.pid$")
# A host's image cache keeps the images its guests booted from, on purpose (Nova's too).
IMAGE_CACHE = re.compile(r"^compute/[^/]+/images/")
PROCESSES = ("dnsmasq", "qemu-system-x86_64", "qemu-nbd")


@dataclass
class Workload:
    """What each tenant boots: `servers` on `image`; and real QEMU guests on
    `guest_image`: one in each of the first `guests` tenants of a round."""

    image: str
    flavor: str = "m1.tiny"
    servers: int = 3
    guest_image: str | None = None
    guests: int = 0
    external_network: str = "public"
    timeout: float = 300


@dataclass
class ChurnResult:
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def add(self, op: str, seconds: float) -> None:
        self.seconds[op].append(seconds)

    def table(self) -> list[tuple[str, int, float, float, float]]:
        """(operation, count, ops/s over the run, p50, p99) for each operation."""
        rows = []
        for op, times in sorted(self.seconds.items()):
            rows.append(
                (op, len(times), len(times) / self.elapsed, percentile(times, 50),
                 percentile(times, 99))
            )  # fmt: skip
        return rows


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def user_connection(admin: Connection, project: str, user: str, password: str) -> Connection:
    auth = admin.config.config["auth"]
    return Connection(
        auth_url=auth["auth_url"],
        username=user,
        password=password,
        project_name=project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=admin.config.get_region_name(),
    )


class Tenant:
    """One project's round: build everything, then delete it; times each operation."""

    def __init__(
        self, admin: Connection, workload: Workload, result: ChurnResult, tag: str, guests: int
    ) -> None:
        self.admin = admin
        self.w = workload
        self.guests = guests
        self.result = result
        self.tag = tag
        self.lock = threading.Lock()

    def timed(self, op: str, fn, *args, **kwargs) -> Any:
        start = time.monotonic()
        value = fn(*args, **kwargs)
        with self.lock:
            self.result.add(op, time.monotonic() - start)
        return value

    def run(self, cidr: str) -> None:
        admin, t = self.admin, self.timed
        password = uuid.uuid4().hex
        project = t("project create", admin.identity.create_project, name=self.tag,
                    domain_id="default")  # fmt: skip
        user = t("user create", admin.identity.create_user, name=self.tag, password=password,
                 default_project_id=project.id, domain_id="default")  # fmt: skip
        member = admin.identity.find_role("member")
        admin.identity.assign_project_role_to_user(project, user, member)
        try:
            conn = user_connection(admin, self.tag, self.tag, password)
            try:
                self.build_and_teardown(conn, cidr)
            finally:
                conn.close()
        finally:
            # What the project still holds, as `openstack project purge` finds it: the
            # default security group Neutron made for it.
            for group in admin.network.security_groups(project_id=project.id):
                t("security group delete", admin.network.delete_security_group, group)
            t("user delete", admin.identity.delete_user, user)
            t("project delete", admin.identity.delete_project, project)

    def build_and_teardown(self, conn: Connection, cidr: str) -> None:
        t, w = self.timed, self.w
        net = conn.network
        public = net.find_network(w.external_network)
        network = t("network create", net.create_network, name="net")
        subnet = t("subnet create", net.create_subnet, network_id=network.id, ip_version=4,
                   cidr=cidr, name="subnet")  # fmt: skip
        router = t("router create", net.create_router, name="router",
                   external_gateway_info={"network_id": public.id})  # fmt: skip
        t("router add subnet", net.add_interface_to_router, router, subnet_id=subnet.id)
        group = t("security group create", net.create_security_group, name="churn")
        t("security group rule create", net.create_security_group_rule,
          security_group_id=group.id, direction="ingress", protocol="icmp")  # fmt: skip
        volume = t("volume create", self.volume_create, conn)
        servers = self.boot_all(conn, network.id, group.name)
        [port] = list(net.ports(device_id=servers[0].id))
        fip = t("floating ip create", net.create_ip, floating_network_id=public.id,
                port_id=port.id)  # fmt: skip

        t("floating ip delete", net.delete_ip, fip)
        for server in servers:
            t("server delete", self.server_delete, conn, server)
        t("volume delete", self.volume_delete, conn, volume)
        t("router remove subnet", net.remove_interface_from_router, router, subnet_id=subnet.id)
        t("router delete", net.delete_router, router)
        t("subnet delete", net.delete_subnet, subnet)
        t("network delete", net.delete_network, network)
        t("security group delete", net.delete_security_group, group)

    def boot_all(self, conn: Connection, network_id: str, group: str) -> list[Any]:
        w = self.w
        flavor = conn.compute.find_flavor(w.flavor, ignore_missing=False)
        wanted = [(w.image, n) for n in range(w.servers)]
        if w.guest_image:
            wanted += [(w.guest_image, w.servers + n) for n in range(self.guests)]
        created = []
        for image_name, n in wanted:
            image = conn.image.find_image(image_name, ignore_missing=False)
            op = "boot (qemu)" if image_name == w.guest_image else "boot"
            start = time.monotonic()
            server = conn.compute.create_server(
                name=f"vm{n}", image_id=image.id, flavor_id=flavor.id,
                networks=[{"uuid": network_id}], security_groups=[{"name": group}],
            )  # fmt: skip
            created.append((op, start, server))
        servers = []
        for op, start, server in created:
            server = conn.compute.wait_for_server(server, wait=w.timeout, interval=0.5)
            with self.lock:
                self.result.add(op, time.monotonic() - start)
            servers.append(server)
        return servers

    def volume_create(self, conn: Connection) -> Any:
        volume = conn.block_storage.create_volume(size=1, name="churn")
        return conn.block_storage.wait_for_status(volume, "available", wait=self.w.timeout)

    def volume_delete(self, conn: Connection, volume: Any) -> None:
        conn.block_storage.delete_volume(volume)
        conn.block_storage.wait_for_delete(volume, wait=self.w.timeout)

    def server_delete(self, conn: Connection, server: Any) -> None:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=self.w.timeout, interval=0.5)


def churn(admin: Connection, workload: Workload, rounds: int, projects: int) -> ChurnResult:
    """`projects` tenants at once, `rounds` times; every failure is recorded, not raised."""
    result = ChurnResult()
    start = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    for r in range(rounds):

        def tenant(p: int, r: int = r) -> None:
            tag = f"churn-{run_id}-{r}-{p}"
            try:
                tenant = Tenant(admin, workload, result, tag, int(p < workload.guests))
                tenant.run(f"10.{100 + p % 100}.{r % 250}.0/24")
            except Exception as exc:  # noqa: BLE001 - counted as a failure of the round
                result.failures.append(f"{tag}: {exc!r}\n{traceback.format_exc(limit=3)}")

        threads = [threading.Thread(target=tenant, args=(p,)) for p in range(projects)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result.elapsed = time.monotonic() - start
    return result


# -- what the cloud holds on its host ---------------------------------------------------


def footprint(state_dir: Path) -> dict[str, Counter]:
    """Counts of what a cloud keeps on the host: namespaces, links in its host namespace,
    its processes (dnsmasq, QEMU, qemu-nbd), files under its state dir, database rows."""
    prefix = f"cmlo-{scope_of(state_dir)}-"
    namespaces = _lines(["ip", "netns", "list"])
    ours = [n.split()[0] for n in namespaces if n.startswith(prefix)]
    links: Counter = Counter()
    if f"{prefix}host" in ours:
        for line in _lines(["ip", "-n", f"{prefix}host", "-o", "link"]):
            name = line.split(":")[1].strip().split("@")[0]
            links[name] += 1
    files = [
        str(p.relative_to(state_dir))
        for p in state_dir.rglob("*")
        if p.is_file() and not VOLATILE_FILES.search(p.name)
    ]
    return {
        "namespaces": Counter(re.sub(r"-[0-9a-f-]{36}$", "", n) for n in ours),
        "links": Counter(re.sub(r"^(tap|cmlo-[a-z]).*", r"\1", n) for n in links),
        "processes": _processes(state_dir),
        "files": Counter(f for f in files if not IMAGE_CACHE.match(f)),
        "image cache": Counter(f for f in files if IMAGE_CACHE.match(f)),
        "rows": database_rows(state_dir),
    }


def leaks(before: dict[str, Counter], after: dict[str, Counter]) -> dict[str, dict[str, int]]:
    """What `after` holds more of than `before` (kind -> thing -> how many more), the
    deleted servers' history and the image caches apart."""
    found = {}
    for kind in before.keys() - {"image cache"}:
        more = Counter({k: n for k, n in (after[kind] - before[kind]).items()
                        if not k.endswith(" (history)")})  # fmt: skip
        if more:
            found[kind] = dict(more)
    return found


def database_rows(state_dir: Path) -> Counter:
    """Rows per table of the cloud's SQLite databases (`service.table` -> rows)."""
    url = load_config(state_dir).database.url
    if url and not url.startswith("sqlite"):
        raise NotImplementedError("row counts are read from the SQLite files only")
    rows: Counter = Counter()
    for db in sorted(state_dir.glob("*.db")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = [
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if name != "alembic_version"
            ]
            for table in tables:
                name = f"{db.stem}.{table}"
                history = HISTORY.get(name, "0")
                for key, where in ((name, f"NOT ({history})"), (f"{name} (history)", history)):
                    query = f'SELECT count(*) FROM "{table}" WHERE {where}'
                    rows[key] = conn.execute(query).fetchone()[0]
    return rows


def _processes(state_dir: Path) -> Counter:
    found: Counter = Counter()
    marker = str(state_dir.resolve()).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        name = os.path.basename(cmdline.split(b"\0", 1)[0]).decode(errors="replace")
        if name in PROCESSES and marker in cmdline:
            found[name] += 1
    return found


def _lines(argv: list[str]) -> list[str]:
    return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
