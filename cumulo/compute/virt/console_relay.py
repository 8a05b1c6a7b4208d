"""TCP relays to guests' consoles, for console proxies on other hosts (what Nova's
`[vnc] server_listen`, `[serial_console] proxyclient_address` and `[spice]
server_listen` give a proxy to connect to).

A QEMU guest's VNC, SPICE and serial consoles are unix sockets in its instance
directory, a fake guest's are loopback ports: a proxy on another host reaches neither.
When a console is asked for such a proxy, the host opens a TCP port on its console
address (the management address, not every interface) relayed to that one guest's
console. The port stops listening when the console's token expires (the proxy makes no
new connection with it then) and closes, with its connections, when the guest is
destroyed here or leaves this host. Like Nova's, the relay trusts the management
network: whoever reaches the port while the token lives reaches the guest's console.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from cumulo.compute.virt.qemu_process import join_streams, open_unix

LOG = logging.getLogger(__name__)


async def open_console(
    host: str, port: int, path: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to a console: its unix socket on this host when it has one (a
    QEMU guest's, whose namespace may be the data plane's), else host:port."""
    if path and path.startswith("/"):
        return await open_unix(Path(path))
    return await asyncio.open_connection(host, port)


class _Relay:
    """One guest's console on a TCP port of this host."""

    def __init__(self, console: dict[str, Any]) -> None:
        self.console = console
        self.port = 0
        self._server: asyncio.Server | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._pipes: set[asyncio.Task] = set()

    async def listen(self, address: str, ttl: float | None) -> int:
        """Listening (on a new port if it had stopped) for `ttl` seconds more (None:
        until closed)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._client, address, 0)
            self.port = self._server.sockets[0].getsockname()[1]
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if ttl is not None:
            self._expiry = asyncio.get_running_loop().call_later(ttl, self.stop_listening)
        return self.port

    def stop_listening(self) -> None:
        """No new connection; those open go on (until the guest goes)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def close(self) -> None:
        self.stop_listening()
        if self._expiry is not None:
            self._expiry.cancel()
        for pipe in list(self._pipes):
            pipe.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.console
        try:
            guest = await asyncio.wait_for(
                open_console(c["host"], c["port"], c.get("internal_access_path")), timeout=10
            )
        except (OSError, TimeoutError) as exc:
            LOG.warning("console relay: the guest's console is unreachable: %s", exc)
            writer.close()
            return
        await join_streams((reader, writer), guest, self._pipes)


class ConsoleRelays:
    """A host's console relays, one per guest and kind of console (vnc, serial, spice)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._relays: dict[tuple[str, str], _Relay] = {}

    async def open(self, uuid: str, kind: str, console: dict[str, Any], ttl: float | None) -> int:
        """The port relayed to `console` (where the driver says the guest's `kind`
        console is), listening for `ttl` seconds from now (None: until the guest goes)."""
        relay = self._relays.get((uuid, kind))
        if relay is None or relay.console != console:
            if relay is not None:
                relay.close()
            relay = self._relays[(uuid, kind)] = _Relay(console)
        return await relay.listen(self.address, ttl)

    def close(self, uuid: str) -> None:
        """The guest is gone from this host: its relays and their connections close."""
        for key in [key for key in self._relays if key[0] == uuid]:
            self._relays.pop(key).close()

    def close_all(self) -> None:
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
