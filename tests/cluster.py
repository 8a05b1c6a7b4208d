"""Clouds spread over processes for the e2e tests: the `cumulo` processes of a cluster
(API workers, conductors, schedulers, hosts); the broker's queues, the hosts' state dirs
and underlay are cumulo.testing.cluster's (the Tempest harness's too)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cumulo.testing.cluster import (  # noqa: F401 - the e2e tests import them from here
    RABBIT,
    add_underlay,
    delete_queues,
    host_state_dir,
    remove_underlay,
)

CUMULO = str(Path(sys.executable).parent / "cumulo")


def broker_log_tail(lines: int = 40) -> str:
    """The end of the local RabbitMQ node's log (empty if it is not readable here)."""
    logs = sorted(Path("/var/log/rabbitmq").glob("rabbit@*.log"))
    logs = [log for log in logs if not log.name.endswith("_upgrade.log")]
    if not logs:
        return ""
    try:
        tail = logs[0].read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- {logs[0]} (last {lines} lines) ---\n" + "\n".join(tail)


def wait_for(what: str, check, timeout: float) -> None:
    """Until check() is true; fails saying `what` did not happen within the timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.5)


def reachable(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (RabbitMQ, a database server)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def children(parent: int) -> set[int]:
    """The pids of the processes whose parent is `parent` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry.name))
    return found


class Processes:
    """`cumulo` processes started for a test, each logging to its own file; stop() ends
    them all (SIGTERM, then SIGKILL) and says which exited badly."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        proc = subprocess.Popen(
            [CUMULO, "-v", *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                said = self.log(name)
                if "aiormq" in said:  # the broker's side of it, for whoever reads the failure
                    said += broker_log_tail()
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{said}")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 40
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class CuttableProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, with cut() and restore()."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def start(self) -> CuttableProxy:
        self._run(self._listen())
        return self

    def cut(self) -> None:
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._listen())

    def close(self) -> None:
        self._run(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
