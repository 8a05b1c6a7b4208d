"""Remote consoles: console auth tokens and the noVNC proxy (Nova's nova-novncproxy).

`POST /servers/{id}/remote-consoles` (and the older os-getVNCConsole action) asks the
guest's host where its VNC server listens, stores a random token for that address (only
the token's sha256 is kept, as Nova does) for `compute.console_token_ttl` seconds, and
answers `<novncproxy_base_url>?path=%3Ftoken%3D<token>`: the noVNC page then opens a
websocket to the proxy with that token, and the proxy relays the websocket's binary
frames to and from the guest's VNC server. A browser's `Origin` must name the proxy's
own host (or one of `compute.console_allowed_origins`): another site's page cannot
borrow a user's console.

The proxy also serves the noVNC web client when it is installed (Debian's `novnc`
package puts it in /usr/share/novnc); without it the websocket works for any VNC
client that speaks websockets.

Serial consoles (Nova's nova-serialproxy) go the same way on their own port: the URL is
`<serialproxy_base_url>?token=<token>` (default ws://<public host>:<ports.serialproxy>/),
the websocket's frames are the bytes to and from the guest's serial port. Each proxy
opens only its own kind of token.

A guest on a compute host outside this process (`cumulo compute` on another machine)
has its console relayed by its host to a TCP port on the host's console address
(virt/console_relay.py) while the token lives: the token records that host and port,
and the proxy connects there as Nova's proxies connect to a host's VNC server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import delete, select
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from cumulo.common.config import CumuloConfig
from cumulo.common.db import Database, utcnow
from cumulo.compute.models import ConsoleAuthToken, Instance
from cumulo.compute.virt.console_relay import open_console

LOG = logging.getLogger(__name__)

# Where noVNC's web client is looked for, unless compute.novnc_dir names it.
NOVNC_DIRS = (Path("/usr/share/novnc"),)
_CHUNK = 64 * 1024


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def base_url(config: CumuloConfig) -> str:
    return config.compute.novncproxy_base_url or (
        f"{config.public_url(config.ports.novncproxy)}/vnc_lite.html"
    )


def access_url(config: CumuloConfig, token: str) -> str:
    """noVNC's page, told to open its websocket at `?token=<token>` (Nova's format)."""
    return f"{base_url(config)}?path={quote('?token=' + token, safe='')}"


def serial_base_url(config: CumuloConfig) -> str:
    if config.compute.serialproxy_base_url:
        return config.compute.serialproxy_base_url
    public = config.public_url(config.ports.serialproxy)
    return "ws" + public.removeprefix("http") + "/"


def serial_access_url(config: CumuloConfig, token: str) -> str:
    """The serial proxy's websocket with the token (Nova's `ws://host:6083/?token=...`)."""
    return f"{serial_base_url(config)}?token={quote(token, safe='')}"


def spice_html5_access_url(config: CumuloConfig, token: str) -> str:
    """spice-html5's page on this cloud's proxy, with the token (Nova's format)."""
    base = config.compute.spicehtml5proxy_base_url or (
        f"{config.public_url(config.ports.spicehtml5proxy)}/spice_auto.html"
    )
    return f"{base}?token={quote(token, safe='')}"


def spice_direct_access_url(config: CumuloConfig, token: str) -> str:
    """The spice-direct proxy's URL with the token: that proxy (outside this cloud, as
    Nova's) asks os-console-auth-tokens where the guest's SPICE server is."""
    return f"{config.compute.spice_direct_proxy_base_url}?token={quote(token, safe='')}"


async def issue_token(
    db: Database,
    config: CumuloConfig,
    instance_uuid: str,
    console: dict[str, Any],
    console_type: str = "novnc",
) -> str:
    """A new token for the console at console["host"]:console["port"]; expired ones go."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    async with db.write() as s:
        await s.execute(delete(ConsoleAuthToken).where(ConsoleAuthToken.expires < now))
        s.add(
            ConsoleAuthToken(
                token_hash=token_hash(token),
                console_type=console_type,
                host=console["host"],
                port=int(console["port"]),
                internal_access_path=console.get("internal_access_path"),
                instance_uuid=instance_uuid,
                expires=now + timedelta(seconds=config.compute.console_token_ttl),
            )
        )
    return token


async def find_token(db: Database, token: str) -> ConsoleAuthToken | None:
    """The live console a token opens: unexpired, and its server not deleted; or None."""
    async with db.read() as s:
        row = await s.scalar(
            select(ConsoleAuthToken)
            .join(Instance, Instance.uuid == ConsoleAuthToken.instance_uuid)
            .where(
                ConsoleAuthToken.token_hash == token_hash(token),
                ConsoleAuthToken.expires > utcnow(),
                Instance.deleted.is_(False),
            )
        )
    return row


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """No Origin (not a browser), or the Origin's host is the proxy's or an allowed one."""
    origin = websocket.headers.get("origin")
    if not origin:
        return True
    origin_host = urlsplit(origin).hostname
    own_host = urlsplit(f"//{websocket.headers.get('host', '')}").hostname
    return origin_host is not None and (origin_host == own_host or origin_host in allowed)


class ConsoleProxy:
    def __init__(self, db: Database, config: CumuloConfig, console_type: str = "novnc") -> None:
        self.db = db
        self.config = config
        # The kind of token this proxy opens: a VNC token is no key to a serial port.
        self.console_type = console_type

    async def websocket(self, websocket: WebSocket) -> None:
        token = websocket.query_params.get("token") or websocket.cookies.get("token", "")
        console = await find_token(self.db, token) if token else None
        if console is not None and console.console_type != self.console_type:
            console = None
        if console is None or not origin_allowed(
            websocket, self.config.compute.console_allowed_origins
        ):
            # Refused before the handshake completes: the client sees HTTP 403.
            await websocket.close(code=1008)
            return
        try:
            reader, writer = await asyncio.wait_for(
                open_console(console.host, console.port, console.internal_access_path),
                timeout=10,
            )
        except (OSError, TimeoutError) as exc:
            LOG.warning("console of %s unreachable: %s", console.instance_uuid, exc)
            await websocket.close(code=1011)
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
        LOG.info("console of instance %s opened", console.instance_uuid)
        to_guest = asyncio.create_task(_browser_to_guest(websocket, writer))
        to_browser = asyncio.create_task(_guest_to_browser(reader, websocket))
        try:
            await asyncio.wait({to_guest, to_browser}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_guest, to_browser):
                task.cancel()
            await asyncio.gather(to_guest, to_browser, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await websocket.close()


async def _browser_to_guest(websocket: WebSocket, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(WebSocketDisconnect, ConnectionError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None and message.get("text") is not None:
                data = message["text"].encode()
            if data:
                writer.write(data)
                await writer.drain()


async def _guest_to_browser(reader: asyncio.StreamReader, websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, ConnectionError, RuntimeError):
        while data := await reader.read(_CHUNK):
            await websocket.send_bytes(data)


def create_console_proxy_app(db: Database, config: CumuloConfig) -> Starlette:
    """The proxy's ASGI app: the websocket at `/` and `/websockify`, noVNC's files."""
    proxy = ConsoleProxy(db, config)
    routes: list[Any] = [
        WebSocketRoute("/", proxy.websocket),
        WebSocketRoute("/websockify", proxy.websocket),
    ]
    dirs = [Path(config.compute.novnc_dir)] if config.compute.novnc_dir else NOVNC_DIRS
    novnc = next((d for d in dirs if (d / "vnc_lite.html").is_file()), None)
    if novnc is not None:
        routes.append(Mount("/", StaticFiles(directory=novnc, html=True)))
    return Starlette(routes=routes)


# Where spice-html5's web client is looked for (Debian's spice-html5 package).
SPICE_HTML5_DIRS = (Path("/usr/share/spice-html5"),)


def create_spice_proxy_app(db: Database, config: CumuloConfig) -> Starlette:
    """The spice-html5 proxy's ASGI app (Nova's nova-spicehtml5proxy): the websocket at
    `/` and `/websockify` to the guest's SPICE server, spice-html5's files when
    installed."""
    proxy = ConsoleProxy(db, config, console_type="spice-html5")
    routes: list[Any] = [
        WebSocketRoute("/", proxy.websocket),
        WebSocketRoute("/websockify", proxy.websocket),
    ]
    client = next((d for d in SPICE_HTML5_DIRS if (d / "spice_auto.html").is_file()), None)
    if client is not None:
        routes.append(Mount("/", StaticFiles(directory=client, html=True)))
    return Starlette(routes=routes)


def create_serial_proxy_app(db: Database, config: CumuloConfig) -> Starlette:
    """The serial proxy's ASGI app (Nova's nova-serialproxy): its websocket at `/` and
    `/websockify` (where Tempest's client goes, the token in a cookie)."""
    proxy = ConsoleProxy(db, config, console_type="serial")
    return Starlette(
        routes=[
            WebSocketRoute("/", proxy.websocket),
            WebSocketRoute("/websockify", proxy.websocket),
        ]
    )
