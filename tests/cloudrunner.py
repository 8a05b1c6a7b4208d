"""Runs a whole cumulo cloud in-process (its own thread and event loop) on free ports."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from cumulo.cloud import Cloud, prepare_state_dir
from cumulo.common.config import load_config, write_config
from cumulo.common.server import make_servers, serve
from cumulo.common.tls import server_files

VENV_BIN = Path(sys.executable).parent


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Not the global generator: a test may seed it, and every worker would pick alike.
_PICK = random.SystemRandom()
# Ports free_port gave this process: a cloud configured now binds its ports later.
_HANDED_OUT: set[int] = set()


def _port_share(first: int, last: int) -> tuple[int, int]:
    """This pytest-xdist worker's own slice of [first, last]: two workers configuring
    clouds at once never pick the same port (a port is only checked free, not held,
    until its cloud binds it)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return first, last
    index = int(worker[2:]) % count
    size = (last - first + 1) // count
    return first + index * size, first + (index + 1) * size - 1


class OpenstackCli:
    """`openstack <args>` as subprocess.run(capture_output=True, text=True) gives it, through
    tests/cli_forkserver.py (a forked process per command, the CLI's imports done once).
    A command started while another runs (a test's threads) gets a process of its own."""

    def __init__(self) -> None:
        self._server: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        # CUMULO_TEST_CLI=subprocess: every command a process of its own (no fork server).
        self.plain = os.environ.get("CUMULO_TEST_CLI") == "subprocess"
        self._dir = Path(tempfile.mkdtemp(prefix="cumulo-cli-"))
        atexit.register(self._close)

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        command = [str(VENV_BIN / "openstack"), *argv]
        if self.plain or not self._lock.acquire(blocking=False):
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        try:
            try:
                server = self._start()
                out, err = self._dir / "stdout", self._dir / "stderr"
                request = {"argv": argv, "env": env, "cwd": os.getcwd(),
                           "stdout": str(out), "stderr": str(err)}  # fmt: skip
                server.stdin.write(json.dumps(request).encode() + b"\n")
                server.stdin.flush()
                pid = self._answer(30)["pid"]
            except (OSError, ValueError, KeyError, TimeoutError):
                self._stop()  # a server that cannot take commands: this one runs alone
                return subprocess.run(command, capture_output=True, text=True, env=env,
                                      timeout=timeout)  # fmt: skip
            try:
                returncode = self._answer(timeout)["returncode"]
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._stop()
                raise subprocess.TimeoutExpired(command, timeout) from None
            return subprocess.CompletedProcess(
                command,
                returncode,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )
        finally:
            self._lock.release()

    def _start(self) -> subprocess.Popen:
        if self._server is None or self._server.poll() is not None:
            self._buffer = b""
            self._server = subprocess.Popen(
                [str(VENV_BIN / "python"), "-m", "tests.cli_forkserver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=Path(__file__).resolve().parent.parent,
            )
            self._answer(120)  # ready
        return self._server

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The server's next JSON line, within `timeout` seconds."""
        assert self._server is not None and self._server.stdout is not None
        fd = self._server.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("the openstack CLI server did not answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise OSError("the openstack CLI server exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _close(self) -> None:
        self._stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None


OPENSTACK_CLI = OpenstackCli()


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the kernel hands out (bind
    to 0) may become another process's outgoing connection's before the cloud binds it
    (seen in CI as "address already in use"); ports below the range are only ever taken
    by a listener, and bind checks for that."""
    # From 22000: the Tempest harness's clouds take blocks from 21000 up
    # (cumulo.testing.tempest.free_port_block), checked free only when they start.
    first, last = _port_share(22000, max(_ephemeral_low() - 1, 22001))
    for _ in range(200):
        port = _PICK.randint(first, last)
        if port in _HANDED_OUT:  # handed out already, maybe not listened on yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:  # a crowded range: the kernel's pick, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until something listens on 127.0.0.1:`port` (`proc`, when given, must not exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def reserve_fresh_ports(state_dir: Path) -> None:
    """New free ports for a state dir's cloud (a port found free long ago may be taken)."""
    config = load_config(state_dir)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    write_config(state_dir, config)


def configure_state_dir(state_dir: Path, database: str | None = None) -> None:
    """A test state dir: free ports, cheap bcrypt, the given database."""
    config = prepare_state_dir(state_dir, database=database)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    config.identity.bcrypt_rounds = 4
    # Functional tests record the data plane only; tests/e2e builds a real one.
    config.network.driver = "noop"
    # ...and the fake hypervisor; tests/e2e boots real QEMU guests.
    config.compute.driver = "fake"
    write_config(state_dir, config)
    # `cumulo up` offers the demo image on a state dir's first start; tests that want it
    # ask for it (--with-demo-image), the others start without building it.
    (state_dir / "demo-image-offered").touch()


@contextlib.contextmanager
def running_cloud(
    state_dir: Path, configure: Callable[[Any], None] | None = None, timeout: float = 30
) -> Iterator[CloudRunner]:
    """A test cloud on `state_dir` (its config changed by `configure` first), stopped after."""
    configure_state_dir(state_dir)
    if configure is not None:
        config = load_config(state_dir)
        configure(config)
        write_config(state_dir, config)
    runner = CloudRunner(state_dir).start(timeout)
    try:
        yield runner
    finally:
        runner.stop()


def configure_guest_state_dir(
    state_dir: Path, host: str, network_driver: str = "linuxbridge", **compute: Any
) -> None:
    """A test state dir for real guests: QEMU (TCG) and the linuxbridge (or
    `network_driver`) data plane, the compute host and its network agent both named
    `host`; `compute`: more [compute]."""
    configure_state_dir(state_dir)
    config = load_config(state_dir)
    config.compute.driver = "qemu"
    config.compute.qemu_accel = "tcg"
    config.compute.host = host
    # The data plane wires the ports bound to its own host: the same name as compute's.
    config.network.agent_host = host
    config.network.driver = network_driver
    # Test clouds run side by side: none puts its external gateway on this host's own
    # namespace (the tests that do choose an external subnet of their own).
    config.network.host_leg = False
    for name, value in compute.items():
        setattr(config.compute, name, value)
    write_config(state_dir, config)


def stop_guest_cloud(runner: CloudRunner) -> None:
    """The end of a cloud with real guests: every server deleted, the cloud stopped,
    its data plane removed."""
    for server in runner.openstack("server", "list", "--all-projects", "-f", "json"):
        runner.openstack("server", "delete", "--wait", server["ID"], check=False)
    runner.stop()
    remove_data_plane(runner.state_dir)


def kill_guests(state_dir: Path, host: str) -> None:
    """SIGKILL the QEMU guests a test left running on `host` of a state dir."""
    from cumulo.compute.virt import qemu_process as qp

    for instance in (state_dir / "compute" / host / "instances").glob("*"):
        pid = qp.read_pid(instance)
        if qp.process_alive(pid, instance.name):
            os.kill(pid, signal.SIGKILL)


def remove_data_plane(state_dir: Path) -> None:
    """What a linuxbridge or openvswitch cloud leaves on the host once stopped (its
    namespaces, the dnsmasq in them, the bridges, the switch's daemons): gone. Guests'
    QEMUs must be deleted before."""
    from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver
    from cumulo.network.dataplane.openvswitch import OpenvSwitchDriver

    kind = LinuxBridgeDriver
    if load_config(state_dir).network.driver == "openvswitch":
        kind = OpenvSwitchDriver
    driver = kind(state_dir)
    asyncio.run(driver.teardown())
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in names.splitlines() if line.startswith(driver.prefix)]
    assert not left, f"namespaces left behind: {left}"


def password_auth(user: dict[str, Any], password: str, scope: Any = None) -> dict[str, Any]:
    """The body of a password login (POST /v3/auth/tokens) for a user given by id or name."""
    auth: dict[str, Any] = {
        "identity": {"methods": ["password"], "password": {"user": {**user, "password": password}}}
    }
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


class CloudRunner:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.cloud: Cloud | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def config(self):
        return load_config(self.state_dir)

    @property
    def auth_url(self) -> str:
        return f"{self.config.scheme}://127.0.0.1:{self.config.ports.identity}/v3"

    def start(self, timeout: float = 30) -> CloudRunner:
        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            self.cloud = await Cloud.open(self.state_dir)
            servers = make_servers(self.cloud.apps(), "127.0.0.1", server_files(self.cloud.config))
            task = asyncio.create_task(serve(servers, self._stop))
            while not all(s.started for s in servers) and not task.done():
                await asyncio.sleep(0.02)
            ready.set()
            try:
                await task
            finally:
                await self.cloud.close()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                self._error = exc
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="cumulo-cloud", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or self._error:
            raise RuntimeError(f"cloud did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop and self._stop and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(30)

    def run_async(self, coro) -> Any:
        """Run a coroutine on the cloud's loop (for tests that poke at internals)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- clients ------------------------------------------------------------------

    def env(self, cloud: str = "cumulo") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.state_dir / "clouds.yaml"), OS_CLOUD=cloud)
        return env

    def openstack(
        self, *args: str, cloud: str = "cumulo", check: bool = True, env: dict | None = None
    ) -> Any:
        """Run the real `openstack` CLI; JSON output is parsed when `-f json` is given."""
        proc = OPENSTACK_CLI.run(list(args), {**self.env(cloud), **(env or {})}, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"openstack {' '.join(args)} failed:\n{proc.stderr}")
        if not check:
            return proc
        if "json" in args and proc.stdout.strip():
            return json.loads(proc.stdout)
        return proc.stdout

    def sdk(self, cloud: str = "cumulo"):
        from openstack.config.loader import OpenStackConfig
        from openstack.connection import Connection

        # openstack.connect() ignores config_files: load this cloud's clouds.yaml directly.
        config = OpenStackConfig(
            config_files=[str(self.state_dir / "clouds.yaml")], load_envvars=False
        )
        return Connection(config=config.get_one(cloud=cloud))

    def token(
        self, username: str = "admin", password: str | None = None, project: str = "admin"
    ) -> str:
        cfg = self.config
        password = password or (
            cfg.identity.admin_password if username == "admin" else cfg.identity.demo_password
        )
        r = httpx.post(
            f"{self.auth_url}/auth/tokens",
            json=password_auth(
                {"name": username, "domain": {"id": "default"}},
                password,
                {"project": {"name": project, "domain": {"id": "default"}}},
            ),
        )
        r.raise_for_status()
        return r.headers["X-Subject-Token"]

    def api(
        self, service: str, token: str | None = None, path: str = "", headers: dict | None = None
    ) -> httpx.Client:
        """An httpx client on a service's port (`path` prefixed, e.g. "/v2.1"), sending
        the token (the admin's by default)."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{getattr(self.config.ports, service)}{path}",
            headers={"X-Auth-Token": token or self.token(), **(headers or {})},
            timeout=30,
        )

    def http(self, token: str | None = None) -> httpx.Client:
        """An httpx client on the identity endpoint, sending X-Auth-Token."""
        headers = {"X-Auth-Token": token} if token else {}
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.config.ports.identity}", headers=headers, timeout=30
        )
