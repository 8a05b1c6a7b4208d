"""`cumulo api`: the REST APIs apart from the rest of the cloud, in one or more worker
processes behind each port.

The parent migrates and bootstraps the databases once, then starts `--workers` worker
processes; each opens every service with the API roles only (no conductor, scheduler,
compute host, storage backend or network data plane: `cumulo conductor`, `cumulo
scheduler`, `cumulo compute`, `cumulo volume` and `cumulo network-agent` run those) and
binds every port with SO_REUSEPORT, so the kernel spreads the connections over them.
A worker that dies is started again. The first worker also runs the object store's
background daemons (one set per cloud).

Each worker keeps its own token cache: a token revoked through one worker is refused by
the others within [identity] cache_time seconds (a single process refuses it at once).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from cumulo.compute.control import check_shared

LOG = logging.getLogger(__name__)

# Restarting a worker that keeps dying: at most once per this many seconds.
RESTART_BACKOFF = 2.0


def service_names() -> list[str]:
    """The API services `--service` may name (the ports `cumulo up` serves)."""
    return [
        "identity", "image", "network", "compute", "block-storage", "object-store",
        "metadata", "ec2", "novncproxy", "spicehtml5proxy", "serialproxy", "dashboard",
        "key-manager",
    ]  # fmt: skip


async def prepare(state_dir: Path) -> None:
    """Databases migrated and bootstrapped, once, before any worker starts."""
    from cumulo.cloud import Cloud, Roles

    cloud = await Cloud.open(state_dir, roles=Roles.nothing())
    await cloud.close()


async def serve_worker(state_dir: Path, services: list[str], index: int) -> None:
    """One worker: the chosen APIs on their ports (shared with the other workers)."""
    from cumulo.cloud import Cloud, Roles
    from cumulo.common.server import make_servers, serve
    from cumulo.common.tls import server_files

    cloud = await Cloud.open(state_dir, roles=Roles.api(object_daemons=index == 0))
    try:
        apps = {name: app for name, app in cloud.apps().items() if name in services}
        servers = make_servers(
            apps, cloud.config.host, server_files(cloud.config), shared_ports=True
        )
        LOG.info("api worker %d serves %s", index, ", ".join(apps))
        await serve(servers)
    finally:
        await cloud.close()


def run(state_dir: Path, services: list[str], workers: int, verbose_args: list[str]) -> None:
    """Prepare, then run and watch the workers until SIGINT/SIGTERM."""
    from cumulo.common.config import load_config
    from cumulo.common.server import run_event_loop

    check_shared(load_config(state_dir), "the API")
    run_event_loop(prepare(state_dir))
    command = [sys.executable, "-m", "cumulo.api_server", *verbose_args]
    command += [str(state_dir), ",".join(services)]
    procs: dict[int, subprocess.Popen] = {}
    started: dict[int, float] = {}
    stopping = False

    def stop(_signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            for index in range(workers):
                proc = procs.get(index)
                if proc is not None and proc.poll() is None:
                    continue
                if proc is not None:
                    LOG.error("api worker %d exited with %s: starting it again", index,
                              proc.returncode)  # fmt: skip
                if time.monotonic() - started.get(index, -RESTART_BACKOFF) < RESTART_BACKOFF:
                    continue
                procs[index] = subprocess.Popen([*command, str(index)])
                started[index] = time.monotonic()
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _worker_main() -> None:
    """python -m cumulo.api_server [-v] [--log-format F] [--log-dir D] STATE_DIR SERVICES INDEX"""
    from cumulo.common.server import run_event_loop, worker_arguments

    args = worker_arguments(sys.argv[1:])
    state_dir, services, index = Path(args[0]), args[1].split(","), int(args[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent says when to stop (SIGTERM)
    run_event_loop(serve_worker(state_dir, services, index))


if __name__ == "__main__":
    _worker_main()
