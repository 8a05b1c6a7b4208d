"""A fresh cumulo cloud for a Tempest run: its own state dir, ports and database, served by
`cumulo up --with-demo-image` from a worktree's venv (so any checkout can be tested)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import tomli_w
import yaml

from cumulo.testing.cluster import delete_queues
from cumulo.testing.tempest import hosts
from cumulo.testing.tempest.conf import SECURITY_COMPLIANCE

# The order of [ports] in cumulo.toml: a run on base B uses B, B+1, ... B+8.
PORT_NAMES = (
    "identity",
    "compute",
    "metadata",
    "image",
    "network",
    "block_storage",
    "novncproxy",
    "object_store",
    "dashboard",
    "ec2",  # (its own port too: two runs at once must not both want 8788)
    "serialproxy",
    "spicehtml5proxy",
    "key_manager",
)
# Where a run with real guests takes its external network: a /24 this host does not route
# yet, so the host leg (the host's address on it, which Tempest's SSH goes through to the
# floating IPs) is not refused because another cloud on this host holds 172.24.4.0/24.
EXTERNAL_RANGE = ipaddress.ip_network("172.24.0.0/16")
# The cloud's Block Storage backends ([[volume.backends]], each its own directory).
VOLUME_BACKENDS = ("file-1", "file-2")
POSTGRESQL = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
RABBITMQ = "rabbit://guest:guest@127.0.0.1:5672/"


@dataclass
class CloudSpec:
    worktree: Path
    state_dir: Path
    ports_base: int
    driver: str = "fake"  # or "qemu"
    database: str = "sqlite"  # or "postgresql" (with RabbitMQ as the bus)
    fake_hosts: int = 2
    # QEMU compute hosts: the cloud's own and `cumulo compute` processes beside it
    # (hosts.py), so migrations move real guests between hosts.
    qemu_hosts: int = 2
    # oslo.policy overrides written to the state dir's policy.yaml (none: the defaults).
    policy: dict[str, str] = field(default_factory=dict)
    # The external network's subnet (empty: cumulo's default, 172.24.4.0/24).
    public_cidr: str = ""
    name: str = field(default_factory=lambda: f"tempest{uuid.uuid4().hex[:8]}")

    @property
    def file_server_port(self) -> int:
        return self.ports_base + len(PORT_NAMES) + 1

    @property
    def image_node_port(self) -> int:
        """The second image API node's (Tempest's image_remote)."""
        return self.ports_base + len(PORT_NAMES) + 2

    @property
    def compute_hosts(self) -> int:
        return 1 + self.fake_hosts if self.driver == "fake" else self.qemu_hosts

    @property
    def rabbitmq(self) -> bool:
        """On the broker: the database another process opens, or hosts of their own."""
        return self.database == "postgresql" or self.compute_hosts > 1 and self.driver == "qemu"

    @property
    def database_url(self) -> str:
        return POSTGRESQL + self.name if self.database == "postgresql" else ""

    def config(self) -> dict:
        """cumulo.toml before the first start (cumulo fills in passwords and the rest)."""
        config: dict = {
            "host": "127.0.0.1",
            "ports": {name: self.ports_base + i for i, name in enumerate(PORT_NAMES)},
            "identity": {"bcrypt_rounds": 4, "security_compliance": SECURITY_COMPLIANCE},
            "network": {"driver": "noop" if self.driver == "fake" else "linuxbridge"},
            "compute": {
                "driver": self.driver,
                "host": f"{self.name}-main",
                # Two more hosts so migration, affinity and multinode tests have a target.
                "fake_hosts": self.fake_hosts if self.driver == "fake" else 0,
                # One QEMU host of 2 cores offers 8 vCPUs at the default ratio (4.0, as
                # Nova's): two Tempest workers' servers, resizes (which hold both flavors)
                # and deletes still in progress outgrow that and get "No valid host". A
                # gate node offers 32 or more; the tiny TCG guests use little of a core.
                **({"cpu_allocation_ratio": 16.0} if self.driver == "qemu" else {}),
            },
            "messaging": {"namespace": self.name},
            "metadata": {"proxy_port": self.ports_base + len(PORT_NAMES)},
            "image": {
                # Two stores, so multi-store import and copy-image are tested; weighted
                # (Tempest's multi-store waiter expects the weight order to be alphabetical).
                # And the read-only http store `web` (the id Tempest's location tests
                # expect in `stores`), for locations on the run's file server.
                "stores": [
                    {"id": "file", "weight": 100},
                    {"id": "second", "weight": 50},
                    {"id": "web", "type": "http"},
                ],
                # Image locations shown and managed, as Tempest's location tests want.
                "show_multiple_locations": True,
                "show_image_direct_url": True,
                # web-download tests (and http locations) fetch from the run's own file
                # server on loopback.
                "web_download": {"allowed_ports": [80, 443, self.file_server_port]},
                "cache_enabled": True,
                # Imports are converted to raw, as a Ceph-backed Glance does (the format tests).
                "import_plugins": ["image_conversion"],
            },
            # Two file backends (volume types choose one by volume_backend_name), so
            # multi-backend, retype with migration and manage/unmanage are tested. With
            # real guests they are iSCSI targets (tgtd), Cinder's reference transport:
            # what passes SCSI through for Tempest's device_type lun tests.
            "volume": {
                "backends": [
                    {
                        "name": name,
                        **({"target_protocol": "iscsi"} if self.driver == "qemu" else {}),
                    }
                    for name in VOLUME_BACKENDS
                ]
            },
            # A second storage policy (as Tempest's gate has): per-policy account quotas.
            "object_store": {
                "policies": [
                    {"index": 0, "name": "Policy-0", "default": True, "replicas": 3},
                    {"index": 1, "name": "silver", "replicas": 2},
                ],
                # Container sync passes every 2 seconds (Tempest waits for them).
                "container_sync_interval": 2,
            },
        }
        if self.public_cidr:
            subnet = ipaddress.ip_network(self.public_cidr)
            config["network"]["public_cidr"] = str(subnet)
            config["network"]["public_gateway"] = str(subnet[1])
        if self.database == "postgresql":
            config["database"] = {"url": self.database_url}
        if self.rabbitmq:
            config["messaging"]["transport_url"] = RABBITMQ
        if self.driver == "qemu" and self.qemu_hosts > 1:
            config["network"] |= hosts.Underlay.of(self).network(0)
            # The hosts reach each other's migration streams and disk exports on loopback.
            config["compute"]["migration_address"] = "127.0.0.1"
        return config


def host_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this host has an address in or a route to."""
    found = []
    for what in ("addr", "route"):
        out = subprocess.run(["ip", "-j", "-4", what], capture_output=True, text=True).stdout
        for entry in json.loads(out or "[]"):
            if what == "addr":
                found += [
                    ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
                    for a in entry.get("addr_info", [])
                ]
            elif entry.get("dst", "default") != "default":
                found.append(ipaddress.ip_network(entry["dst"], strict=False))
    return found


def free_external_cidr(taken: list[ipaddress.IPv4Network], start: int = 0) -> str:
    """The first /24 of EXTERNAL_RANGE from the `start`-th on that overlaps none of
    `taken` (runs side by side start at different places)."""
    subnets = list(EXTERNAL_RANGE.subnets(new_prefix=24))
    for i in range(len(subnets)):
        subnet = subnets[(start + i) % len(subnets)]
        if not any(subnet.overlaps(other) for other in taken):
            return str(subnet)
    raise SystemExit(f"no free /24 in {EXTERNAL_RANGE} for the external network")


class Cloud:
    """`cumulo up` as a child process; stop() ends it (and drops its databases)."""

    def __init__(self, spec: CloudSpec, log: Path) -> None:
        self.spec = spec
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.image_node: subprocess.Popen | None = None
        self.underlay = hosts.Underlay.of(spec) if spec.driver == "qemu" else None
        self.hosts: list[hosts.ComputeHost] = []

    @property
    def image_node_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.image_node_port}"

    @property
    def settings(self) -> dict:
        with (self.spec.state_dir / "cumulo.toml").open("rb") as f:
            return tomllib.load(f)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings['ports'][service]}"

    def start(self, timeout: float = 600) -> Cloud:
        sd = self.spec.state_dir
        sd.mkdir(parents=True, exist_ok=True)
        (sd / "cumulo.toml").write_text(tomli_w.dumps(self.spec.config()))
        if self.spec.policy:
            (sd / "policy.yaml").write_text(yaml.safe_dump(self.spec.policy))
        cumulo = self.spec.worktree / ".venv" / "bin" / "cumulo"
        if not cumulo.exists():
            raise SystemExit(f"{cumulo} is missing: run `make .venv/bin/cumulo` there first")
        env = hosts.clean_env()
        if self.underlay and self.spec.qemu_hosts > 1:
            self.underlay.add()  # before the cloud's agent moves its end into its namespace
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(cumulo), "up", "--with-demo-image", "--state-dir", str(sd)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.spec.worktree,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        # `cumulo up` says it is up just before its servers bind: wait for Identity too.
        while b"cumulo is up" not in self.log.read_bytes() or not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the cloud did not start; see {self.log}")
            time.sleep(0.5)
        self._start_image_node(env, out, deadline)
        if self.underlay and self.spec.qemu_hosts > 1:
            self._start_hosts(env, deadline)
        return self

    def _start_hosts(self, env: dict, deadline: float) -> None:
        """The other QEMU compute hosts (hosts.py), joined before the run provisions."""
        from cumulo.testing.tempest.accounts import AdminSession

        assert self.underlay is not None
        self.hosts = hosts.start_hosts(self.spec, self.underlay, env, self.log.parent)
        try:
            session = AdminSession.login(
                self.url("identity") + "/v3", self.settings["identity"]["admin_password"]
            )
            hosts.join(session, self.hosts, deadline)
        except BaseException:
            self.stop()
            raise

    def _start_image_node(self, env: dict, out, deadline: float) -> None:
        """A second image API node beside the cloud's (image_node.py)."""
        python = self.spec.worktree / ".venv" / "bin" / "python"
        node_dir = self.spec.state_dir.with_name(self.spec.state_dir.name + "-image-node")
        self.image_node = subprocess.Popen(
            [str(python), "-m", "cumulo.testing.tempest.image_node", str(self.spec.state_dir),
             str(node_dir), str(self.spec.image_node_port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=self.spec.worktree, env=env,
            start_new_session=True,
        )  # fmt: skip
        while True:
            try:
                httpx.get(self.image_node_url + "/versions", timeout=5)
                return
            except httpx.HTTPError:
                if self.image_node.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    failed = f"the second image node did not start; see {self.log}"
                    raise SystemExit(failed) from None
                time.sleep(0.3)

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url("identity") + "/v3", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def delete_servers(self, timeout: float = 120) -> None:
        """Real guests outlive their cloud: delete what the tests left before stopping."""
        from cumulo.testing.tempest.accounts import AdminSession

        s = AdminSession.login(
            self.url("identity") + "/v3", self.settings["identity"]["admin_password"]
        )
        servers = s.call("GET", "compute", "/servers", params={"all_tenants": "1"})["servers"]
        for server in servers:
            s.client.delete(s.urls["compute"].rstrip("/") + f"/servers/{server['id']}")
        deadline = time.monotonic() + timeout
        while servers and time.monotonic() < deadline:
            time.sleep(1)
            servers = s.call("GET", "compute", "/servers", params={"all_tenants": "1"})["servers"]

    def stop(self) -> None:
        if self.image_node and self.image_node.poll() is None:
            self.image_node.terminate()
            try:
                self.image_node.wait(30)
            except subprocess.TimeoutExpired:
                self.image_node.kill()
        if self.spec.driver == "qemu" and self.proc and self.proc.poll() is None:
            self.delete_servers()
        for host in self.hosts:
            host.stop()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.spec.driver == "qemu":  # its namespaces, bridges and dnsmasqs
            from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver

            asyncio.run(LinuxBridgeDriver(self.spec.state_dir).teardown())
            for host in self.hosts:
                host.teardown()
        if self.underlay and self.spec.qemu_hosts > 1:
            self.underlay.remove()
        if self.spec.rabbitmq:
            asyncio.run(delete_queues(self.spec.name))
        if self.spec.database == "postgresql":
            asyncio.run(_drop_databases(self.spec.name))


async def _drop_databases(prefix: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(POSTGRESQL + "postgres", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            names = await conn.scalars(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                {"p": prefix},
            )
            for name in list(names):
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()
