"""The metadata proxy: 169.254.169.254 inside each router namespace, answered for the guest.

The router's nftables redirects guests' requests to 169.254.169.254:80 (arriving on its
`qr-` legs) to `port` in the namespace. On networks no router serves, the DHCP namespace
holds 169.254.169.254 itself and the proxy listens on 169.254.169.254:80 there (Neutron's
isolated metadata; see dhcp.metadata_nexthops). Either way the proxy finds which instance
owns the source address on the namespace's networks (from the desired state the agent applies:
each DHCP lease names its port's device and project), adds X-Instance-ID, X-Tenant-ID,
X-Instance-ID-Signature and X-Forwarded-For, and forwards to the metadata service.

How it reaches the service from inside a namespace: it runs in the network agent's own
process. Only its listening socket is made inside the namespace (a short-lived thread
enters the namespace with setns(2), creates and binds the socket, and ends; a socket
stays in the namespace it was made in), while the connections to the metadata service
are opened by the event loop in the host's namespace, where 127.0.0.1:8775 is. No
process to daemonize, no pipe, no secret on a command line, and the proxy always has
the agent's latest state. Deleting the namespace is preceded by `remove` (the socket
would keep the namespace alive); a namespace recreated under the same name (resync) is
noticed by its new inode and listened in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx

from cumulo.common.config import CumuloConfig
from cumulo.metadata.signature import (
    FORWARDED_FOR,
    INSTANCE_ID,
    PROXY_HEADERS,
    SIGNATURE,
    TENANT_ID,
    sign_instance_id,
)

LOG = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MAX_HEAD = 16 << 10
MAX_BODY = 64 << 10
READ_TIMEOUT = 10.0
# Never forwarded: the proxy's own headers (a guest must not choose its identity) and
# what belongs to one hop.
_DROPPED = {h.lower() for h in PROXY_HEADERS} | {
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "proxy-connection",
    "upgrade",
}


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in_namespace(namespace: str, port: int, host: str = "0.0.0.0") -> socket.socket:
    """A TCP socket listening on host:port inside `namespace`."""
    result: dict[str, Any] = {}

    def enter_and_listen() -> None:  # on its own thread: setns changes only this thread
        try:
            with open(NETNS_DIR / namespace) as ns:
                _setns(ns.fileno())
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
            result["socket"] = sock
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=enter_and_listen, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


def namespace_inode(namespace: str) -> int | None:
    try:
        return (NETNS_DIR / namespace).stat().st_ino
    except OSError:
        return None


def address_owners(state: dict[str, Any]) -> dict[str, dict[str, tuple[str, str]]]:
    """network id -> guest address -> (instance id, project id), from the desired state."""
    owners: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for net in state["networks"]:
        for lease in net["leases"]:
            if lease.get("device_owner", "").startswith("compute:") and lease.get("device_id"):
                owners[net["id"]][lease["ip"]] = (lease["device_id"], lease.get("project_id", ""))
    return dict(owners)


@dataclass
class _Listener:
    inode: int | None
    server: asyncio.AbstractServer
    networks: set[str] = field(default_factory=set)
    address: tuple[str, int] = ("0.0.0.0", 0)
    # Connections in flight: each socket holds the namespace it was made in alive.
    writers: set[asyncio.StreamWriter] = field(default_factory=set)


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        self.status = status


class NamespaceMetadataProxy:
    """The linuxbridge driver's MetadataProxy: one listener per router namespace, and one
    per DHCP namespace of a network served for isolated metadata."""

    def __init__(self, port: int, upstream: str, secret: str) -> None:
        self.port = port
        self.secret = secret
        self._client = httpx.AsyncClient(base_url=upstream, timeout=30)
        self._owners: dict[str, dict[str, tuple[str, str]]] = {}
        self._listeners: dict[str, _Listener] = {}
        self._closed = False

    def update(self, state: dict[str, Any]) -> None:
        """The latest desired state: who owns which address."""
        self._owners = address_owners(state)

    async def ensure(
        self, namespace: str, networks: set[str], address: tuple[str, int] | None = None
    ) -> None:
        """Listening in `namespace` on `address` (default: any address, `port`) for the
        guests on `networks`."""
        if self._closed:
            return
        address = address or ("0.0.0.0", self.port)
        inode = namespace_inode(namespace)
        current = self._listeners.get(namespace)
        if current is not None and current.inode == inode and current.address == address:
            current.networks = set(networks)
            return
        await self.remove(namespace)
        sock = listen_in_namespace(namespace, address[1], address[0])

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            listener.writers.add(writer)
            try:
                await self._serve(namespace, reader, writer)
            finally:
                listener.writers.discard(writer)

        server = await asyncio.start_server(serve, sock=sock, limit=MAX_HEAD)
        listener = _Listener(inode, server, set(networks), address)
        self._listeners[namespace] = listener
        LOG.info("metadata proxy: listening in %s on %s:%d", namespace, *address)

    async def remove(self, namespace: str) -> None:
        listener = self._listeners.pop(namespace, None)
        if listener is not None:
            listener.server.close()
            # A guest gone mid-request leaves its connection open until the read timeout:
            # end them now, so that nothing keeps the namespace (and its legs) alive.
            for writer in list(listener.writers):
                writer.transport.abort()

    async def close(self) -> None:
        self._closed = True
        for namespace in list(self._listeners):
            await self.remove(namespace)
        await self._client.aclose()

    def owner(self, namespace: str, address: str) -> tuple[str, str] | None:
        """(instance id, project id) of the guest at `address` on this namespace's networks."""
        listener = self._listeners.get(namespace)
        for network_id in sorted(listener.networks if listener else ()):
            found = self._owners.get(network_id, {}).get(address)
            if found is not None:
                return found
        return None

    # -- one request ------------------------------------------------------------------

    async def _serve(
        self, namespace: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            except _BadRequest as exc:
                await _respond(writer, int(exc.status), [], exc.status.phrase.encode())
                return
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            peer = writer.get_extra_info("peername")[0]
            status, headers, body = await self._forward(namespace, peer, request)
            await _respond(writer, status, headers, b"" if request.method == "HEAD" else body)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _forward(
        self, namespace: str, peer: str, request: _Request
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        owner = self.owner(namespace, peer)
        if owner is None:
            LOG.info("metadata proxy: no instance owns %s (%s)", peer, namespace)
            return 404, [], b"Not Found"
        instance_id, project_id = owner
        headers = [(k, v) for k, v in request.headers if k.lower() not in _DROPPED]
        headers += [
            (INSTANCE_ID, instance_id),
            (TENANT_ID, project_id),
            (SIGNATURE, sign_instance_id(self.secret, instance_id)),
            (FORWARDED_FOR, peer),
        ]
        try:
            response = await self._client.request(
                request.method, request.target, headers=headers, content=request.body
            )
        except httpx.HTTPError as exc:
            LOG.warning("metadata proxy: the metadata service failed: %s", exc)
            return 500, [], b"Internal Server Error"
        kept = [(k, v) for k, v in response.headers.items() if k.lower() == "content-type"]
        return response.status_code, kept, response.content


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
    if not target.startswith("/") or method not in ("GET", "HEAD", "POST"):
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    length = next((v for k, v in headers if k.lower() == "content-length"), "0")
    if not length.isdecimal():
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    if int(length) > MAX_BODY:
        raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    body = await reader.readexactly(int(length))
    return _Request(method, target, headers, body)


async def _respond(
    writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {reason}"]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers = [*headers, ("Content-Type", "text/plain; charset=utf-8")]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def start_metadata_proxies(
    service: Any, config: CumuloConfig
) -> NamespaceMetadataProxy | None:
    """Give this host's linuxbridge data plane its metadata proxy (the service's agent)."""
    proxy = await attach_metadata_proxy(getattr(service, "agent", None), config)
    if proxy is not None:
        service.on_close.append(proxy.close)
    return proxy


async def attach_metadata_proxy(agent: Any, config: CumuloConfig) -> NamespaceMetadataProxy | None:
    """The agent's linuxbridge driver gets its proxy to the metadata service (None on
    another data plane); the caller closes it."""
    from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver

    if agent is None or not isinstance(agent.driver, LinuxBridgeDriver):
        return None
    upstream = f"http://{config.metadata.service_host}:{config.ports.metadata}"
    proxy = NamespaceMetadataProxy(
        config.metadata.proxy_port, upstream, config.metadata.shared_secret
    )
    agent.driver.metadata_proxy = proxy
    agent.driver.isolated_metadata = config.network.isolated_metadata
    agent.driver.force_metadata = config.network.force_metadata
    await agent.sync({})  # routers and DHCP namespaces already built get their listener
    return proxy
