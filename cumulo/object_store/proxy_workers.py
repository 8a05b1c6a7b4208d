"""The object-store port served by several processes in `cumulo up` ([object_store]
workers, as Swift's proxy server runs `workers`): the cloud's own process and
`workers - 1` proxy processes beside it, each binding the port with SO_REUSEPORT, so
the kernel spreads the connections over them and the proxy's Python runs on as many
cores.

A proxy process serves the object-store API only: a proxy of its own on the same rings
and devices, with no background daemons (the cloud's process runs those, one set per
cloud), validating tokens through the Identity API over HTTP. The account and container
databases are per-account and per-container SQLite files in WAL mode, written in
`BEGIN IMMEDIATE` transactions with a busy timeout (storage/databases.py), so writers in
several processes wait for each other as Swift's do. What each process caches on its
own: tokens ([identity] cache_time: a token revoked is refused at once by the cloud's
process, within cache_time by the others, as with `cumulo api --workers`), and container
and account info (proxy.CONTAINER_INFO_TTL seconds: a container's ACLs or quota changed
through one process hold in the others within that time, as Swift's proxies read them
from memcache). A proxy process that dies is started again; each dies with the cloud's
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

LOG = logging.getLogger(__name__)

# Starting again a proxy process that keeps dying: at most once per this many seconds.
RESTART_BACKOFF = 2.0


class ProxyWorkers:
    """The extra proxy processes of one `cumulo up`, watched and started again."""

    def __init__(self, state_dir: Path, count: int, logging_args: list[str]) -> None:
        self.command = [sys.executable, "-m", __name__, *logging_args, str(state_dir)]
        self.count = count
        self.procs: dict[int, subprocess.Popen] = {}
        self._watch: asyncio.Task | None = None

    def start(self) -> None:
        self._start_missing()
        self._watch = asyncio.create_task(self._watch_forever())

    def _start_missing(self) -> None:
        for index in range(1, self.count + 1):
            proc = self.procs.get(index)
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                LOG.error("object-store proxy %d exited with %s: starting it again", index,
                          proc.returncode)  # fmt: skip
            self.procs[index] = subprocess.Popen([*self.command, str(index)])

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(RESTART_BACKOFF)
            self._start_missing()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def serve_proxy(state_dir: Path, index: int) -> None:
    """One proxy process: the object-store API on the cloud's port (shared)."""
    from cumulo.common import limits
    from cumulo.common.config import load_config
    from cumulo.common.server import make_servers, serve
    from cumulo.common.tls import server_files
    from cumulo.object_store.app import create_object_store_app, open_object_store

    config = load_config(state_dir)
    limits.configure(config.limits)
    store = await open_object_store(config, state_dir, daemons=False)
    try:
        app = create_object_store_app(store)
        servers = make_servers(
            {"object-store": (app, config.ports.object_store)},
            config.host,
            server_files(config),
            shared_ports=True,
        )
        LOG.info("object-store proxy %d serves port %d", index, config.ports.object_store)
        await serve(servers)
    finally:
        await store.close()


def _die_with_parent() -> None:
    """SIGTERM when the cloud's process ends, even killed (Linux's PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_main() -> None:
    """python -m cumulo.object_store.proxy_workers [-v] [--log-format F] [--log-dir D]
    STATE_DIR INDEX"""
    from cumulo.common.server import run_event_loop, worker_arguments

    _die_with_parent()
    args = worker_arguments(sys.argv[1:])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cloud's process says when (SIGTERM)
    run_event_loop(serve_proxy(Path(args[0]), int(args[1])))


if __name__ == "__main__":
    _worker_main()
