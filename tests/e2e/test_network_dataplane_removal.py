"""Removing a DHCP or router namespace takes its legs with it, even when something still
holds the namespace (the churn test's leaked `cmlo-r…` host ends).

`ip netns delete` removes only the name: a socket made in the namespace (the metadata
proxy's, or a guest's connection to it) keeps the namespace alive, and with it its veths
and their host ends on the bridges.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import uuid

import pytest

from cumulo.network.dataplane import commands as cmd
from cumulo.network.dataplane.metadata_proxy import (
    NETNS_DIR,
    NamespaceMetadataProxy,
    _setns,
    listen_in_namespace,
)
from tests.conftest import skip_or_fail


@pytest.fixture
def namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_or_fail("needs root and iproute2 (network namespaces)")
    tag = uuid.uuid4().hex[:6]
    host, inner = f"rmtest-{tag}-host", f"rmtest-{tag}-r"
    for ns in (host, inner):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    router_leg(inner, host, f"cmlo-r{tag}")
    yield host, inner, f"cmlo-r{tag}"
    for ns in (inner, host):
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def router_leg(router_ns: str, host_ns: str, outer: str) -> None:
    """A router's leg: `qr-leg` in the router namespace, its peer `outer` in the host's."""
    argv = ["ip", "-n", router_ns, "link", "add", "qr-leg", "type", "veth"]
    subprocess.run([*argv, "peer", "name", outer, "netns", host_ns], check=True)


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def host_links(host: str) -> set[str]:
    return set(asyncio.run(cmd.links(host)))


def test_a_namespace_held_by_a_socket_takes_its_legs_down(namespaces):
    host, inner, outer = namespaces
    holder = listen_in_namespace(inner, 0, "127.0.0.1")  # as the metadata proxy's listener
    try:
        # What the name's removal alone leaves: the namespace lives on, so does the leg.
        subprocess.run(["ip", "netns", "delete", inner], check=True)
        assert outer in host_links(host)
        subprocess.run(["ip", "-n", host, "link", "del", outer], check=True)

        subprocess.run(["ip", "netns", "add", inner], check=True)
        router_leg(inner, host, outer)
        second = listen_in_namespace(inner, 0, "127.0.0.1")
        try:
            asyncio.run(cmd.delete_namespace(inner))
            assert outer not in host_links(host)
            assert inner not in netns_names()
        finally:
            second.close()
    finally:
        holder.close()


def test_the_metadata_proxy_ends_its_connections_when_it_leaves_a_namespace(namespaces):
    _, inner, _ = namespaces
    subprocess.run(["ip", "-n", inner, "link", "set", "lo", "up"], check=True)

    async def scenario() -> bytes:
        proxy = NamespaceMetadataProxy(0, "http://127.0.0.1:9", "secret")
        await proxy.ensure(inner, set(), ("127.0.0.1", 8775))
        # A guest that connected and went quiet (gone mid-request): made in the namespace.
        client = await asyncio.to_thread(_connect_in, inner, 8775)
        reader, writer = await asyncio.open_connection(sock=client)
        await asyncio.sleep(0.2)  # the proxy has accepted it and waits for a request
        await proxy.remove(inner)
        try:
            # Ended at once, not after the proxy's read timeout.
            return await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            return b""
        finally:
            writer.close()
            await proxy.close()

    assert asyncio.run(scenario()) == b""


def _connect_in(namespace: str, port: int) -> socket.socket:
    result: list[socket.socket] = []

    def run() -> None:
        with open(NETNS_DIR / namespace) as ns:
            _setns(ns.fileno())
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        result.append(sock)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0]
