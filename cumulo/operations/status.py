"""`cumulo status`: the running cloud as its operator sees it, through its own APIs.

It signs in as the cloud's admin (the password in the state dir's config) and reads what
the APIs show: every API's answer, compute and volume services with their heartbeats,
servers per state, the message queues' depths, the database, and on this host the QEMU
guests the database does not know (and the servers it places here with no guest).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cumulo.common.config import CumuloConfig
from cumulo.common.identity_client import password_auth
from cumulo.common.server import PLAIN_HTTP
from cumulo.common.tls import verify_option
from cumulo.compute import rpcapi as compute_rpc
from cumulo.network.dataplane.agent import SERVER_TOPIC as NETWORK_TOPIC
from cumulo.network.dataplane.agent import agent_topic
from cumulo.network.dataplane.linuxbridge import scope_of
from cumulo.operations.doctor import check_database
from cumulo.operations.purge import cloud_processes, running_pid
from cumulo.volume.rpcapi import volume_topic

API_PORTS = (
    "identity",
    "compute",
    "image",
    "network",
    "block_storage",
    "object_store",
    "ec2",
    "metadata",
    "dashboard",
    "novncproxy",
    "spicehtml5proxy",
    "serialproxy",
    "key_manager",
)
GUEST_NAME = re.compile(r"guest=([0-9a-f-]{36})")


@dataclass
class Status:
    pid: int | None
    apis: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    servers: dict[str, int] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    database: dict[str, str] = field(default_factory=dict)
    unknown_guests: list[str] = field(default_factory=list)
    missing_guests: list[str] = field(default_factory=list)


def _age(updated_at: str | None) -> float | None:
    if not updated_at:
        return None
    when = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - when).total_seconds(), 1)


class CloudReader:
    def __init__(self, config: CumuloConfig) -> None:
        self.config = config
        self.http = httpx.Client(timeout=10, verify=verify_option(config))
        self.token: str | None = None

    def url(self, port_name: str, path: str = "/") -> str:
        if port_name in PLAIN_HTTP:
            return f"http://{self.config.catalog_host}:{self.config.ports.metadata}{path}"
        return f"{self.config.public_url(getattr(self.config.ports, port_name))}{path}"

    def sign_in(self) -> None:
        body = password_auth("admin", self.config.identity.admin_password, "admin")
        answer = self.http.post(self.url("identity", "/v3/auth/tokens?nocatalog"), json=body)
        answer.raise_for_status()
        self.token = answer.headers["x-subject-token"]

    def get(self, port_name: str, path: str, **headers: str) -> Any:
        assert self.token is not None
        answer = self.http.get(
            self.url(port_name, path), headers={"X-Auth-Token": self.token, **headers}
        )
        answer.raise_for_status()
        return answer.json()

    def apis(self) -> dict[str, dict[str, Any]]:
        found = {}
        for name in API_PORTS:
            started = time.perf_counter()
            try:
                code = self.http.get(self.url(name)).status_code
            except httpx.TransportError as exc:
                found[name] = {"state": "down", "detail": type(exc).__name__}
                continue
            found[name] = {
                "state": "up" if code < 500 else "error",
                "detail": f"HTTP {code} in {(time.perf_counter() - started) * 1000:.0f} ms",
            }
        return found

    def services(self) -> list[dict[str, Any]]:
        rows = []
        compute = self.get(
            "compute", "/v2.1/os-services", **{"OpenStack-API-Version": "compute 2.53"}
        )
        volume = self.get("block_storage", "/v3/os-services")
        for service in compute["services"] + volume["services"]:
            rows.append(
                {
                    "binary": service["binary"],
                    "host": service["host"],
                    "zone": service.get("zone"),
                    "status": service["status"],
                    "state": service["state"],
                    "heartbeat_age_s": _age(service.get("updated_at")),
                }
            )
        return rows

    def servers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        marker = None
        while True:
            query = "?all_tenants=1&limit=1000" + (f"&marker={marker}" if marker else "")
            page = self.get("compute", "/v2.1/servers/detail" + query)["servers"]
            found += page
            if len(page) < 1000:
                return found
            marker = page[-1]["id"]

    def metrics_queue_depths(self) -> dict[str, int]:
        """The in-process bus's queues, from the process's /metrics."""
        text = self.http.get(self.url("compute", "/metrics")).text
        depths = {}
        for line in text.splitlines():
            if line.startswith("cumulo_bus_queue_depth{"):
                labels, value = line.rsplit(" ", 1)
                topic = labels.split('topic="', 1)[1].split('"', 1)[0]
                depths[topic] = int(float(value))
        return depths


async def _rabbit_queue_depths(config: CumuloConfig, topics: list[str]) -> dict[str, int]:
    import aio_pika
    from aio_pika.exceptions import ChannelClosed

    url = config.messaging.transport_url.replace("rabbit://", "amqp://", 1)
    connection = await aio_pika.connect(url, timeout=10)
    depths = {}
    try:
        for topic in topics:
            channel = await connection.channel()
            name = f"{config.messaging.namespace}.{topic}"
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelClosed:
                continue  # nobody serves that topic (yet)
            depths[topic] = queue.declaration_result.message_count or 0
            await channel.close()
    finally:
        await connection.close()
    return depths


def _topics(services: list[dict[str, Any]]) -> list[str]:
    topics = [compute_rpc.CONDUCTOR, compute_rpc.SCHEDULER, NETWORK_TOPIC]
    for service in services:
        if service["binary"] in ("cumulo-compute", "nova-compute"):
            topics += [compute_rpc.compute_topic(service["host"]), agent_topic(service["host"])]
        elif service["binary"] == "cinder-volume":
            topics.append(volume_topic(service["host"]))
    return sorted(set(topics))


def local_guests(state_dir: Path) -> set[str]:
    """Server ids of the QEMU guests of this state dir running on this machine."""
    from cumulo.operations.purge import _argv

    guests = set()
    for pid in cloud_processes(scope_of(state_dir))["qemu-system-x86_64"]:
        for arg in _argv(pid):
            found = GUEST_NAME.search(arg)
            if found:
                guests.add(found.group(1))
    return guests


def read_status(config: CumuloConfig, state_dir: Path) -> Status:
    status = Status(pid=running_pid(state_dir))
    status.database = asdict(check_database(config, state_dir))
    reader = CloudReader(config)
    status.apis = reader.apis()
    if status.apis["identity"]["state"] != "up":
        return status
    reader.sign_in()
    status.services = reader.services()
    servers = reader.servers()
    status.servers = dict(Counter(s["status"] for s in servers))
    if config.messaging.transport_url.startswith("memory"):
        status.queues = reader.metrics_queue_depths()
    else:
        status.queues = asyncio.run(_rabbit_queue_depths(config, _topics(status.services)))
    here = {config.compute.host or socket.gethostname()}
    running = local_guests(state_dir)
    placed_here = {
        s["id"]
        for s in servers
        if s.get("OS-EXT-SRV-ATTR:host") in here and s["status"] in ("ACTIVE", "PAUSED", "RESCUE")
    }
    known = {s["id"] for s in servers}
    status.unknown_guests = sorted(running - known)
    qemu_here = config.compute.driver == "qemu" or (
        config.compute.driver == "auto" and shutil.which("qemu-system-x86_64") is not None
    )
    if qemu_here:
        status.missing_guests = sorted(placed_here - running)
    return status
