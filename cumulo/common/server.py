"""Serving several ASGI apps (one port each) from one process and one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
from collections.abc import Collection, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from cumulo.common.zerocopy import ZeroCopyHttpProtocol

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (uvicorn[standard] brings it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def worker_arguments(argv: list[str]) -> list[str]:
    """A worker process's logging set up from the options its parent handed on
    ([-v] [--log-format F] [--log-dir D]); the other arguments, in order."""
    from cumulo.common.logs import setup_logging

    args = list(argv)
    options = {"--log-format": "text", "--log-dir": None}
    for name in options:
        if name in args:
            at = args.index(name)
            options[name] = args[at + 1]
            del args[at : at + 2]
    level = logging.INFO if "-v" in args else logging.WARNING
    log_dir = options["--log-dir"]
    setup_logging(level, options["--log-format"], Path(log_dir) if log_dir else None)
    return [a for a in args if a != "-v"]


class _Server(uvicorn.Server):
    # A listening socket made beforehand (shared port: several worker processes).
    premade: socket.socket | None = None

    # Signals are handled once for all servers, by serve_apps.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None and self.premade is not None:
            sockets = [self.premade]
        await super().serve(sockets)


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT: every worker process binds its own on the
    same port and the kernel spreads the connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class AlreadyRunning(RuntimeError):
    pass


@contextlib.contextmanager
def state_dir_lock(state_dir: Path, name: str = "cumulo.pid") -> Iterator[None]:
    """Hold an exclusive lock on the state dir: one running cloud per state dir (`name`:
    another lock, for a process that may run beside the cloud's, such as a network agent
    beside `cumulo compute`)."""
    path = state_dir / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"cumulo is already running on {state_dir} (pid {holder}); "
            "stop it first or use another --state-dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# Served over plain HTTP even with TLS on: the metadata service is reached only by the
# network agent's proxies (guests ask 169.254.169.254 over HTTP, as on every cloud), the
# object server only by the other storage hosts (over the storage network, as Swift's).
PLAIN_HTTP = frozenset({"metadata", "object-server"})


def make_servers(
    apps: dict[str, tuple[ASGIApp, int]],
    host: str,
    tls: tuple[str, str] | None = None,
    *,
    shared_ports: bool | Collection[str] = False,
) -> list[uvicorn.Server]:
    """A server per app; `tls`: (certificate, key) files, for every app but PLAIN_HTTP's;
    shared_ports: bind with SO_REUSEPORT (one of several worker processes), every app's
    port or those of the apps named."""
    servers = []
    for name, (app, port) in apps.items():
        ssl = {}
        if tls is not None and name not in PLAIN_HTTP:
            ssl = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            # httptools, and sendfile(2) for the bodies apps send from files.
            http=ZeroCopyHttpProtocol,
            lifespan="off",
            timeout_graceful_shutdown=5,
            # uvicorn closes idle keep-alive connections after 5 s, the very interval at
            # which `openstack ... --wait` polls: a poll sent as the server closes its
            # connection fails with "Remote end closed connection" (keystoneauth does not
            # retry). Idle connections stay open longer than any client's poll (nginx's
            # default).
            timeout_keep_alive=75,
            **ssl,
        )
        server = _Server(config)
        if shared_ports is True or (shared_ports and name in shared_ports):
            server.premade = shared_port_socket(host, port)
        servers.append(server)
    return servers


async def serve(servers: list[uvicorn.Server], stop: asyncio.Event | None = None) -> None:
    """Run the servers until SIGINT/SIGTERM (or `stop` is set), then shut all down."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
            if t is not stopper and not all(s.started for s in servers):
                raise RuntimeError("a server stopped during start-up (is its port in use?)")
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
