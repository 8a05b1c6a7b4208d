"""`cumulo up` with [object_store] workers = 2: the object-store port served by the
cloud's process and a proxy process beside it (SO_REUSEPORT), the same objects
through either, a proxy process that dies started again, and none left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.functional.object_store_helpers import storage_url


def _proxies(pid: int) -> list[int]:
    """The cloud process's object-store proxy processes."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"cumulo.object_store.proxy_workers" in cmdline:
                found.append(int(child))
    return found


def _wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_two_processes_serve_the_same_objects_and_a_dead_one_comes_back(tmp_path: Path):
    configure_state_dir(tmp_path)
    config = load_config(tmp_path)
    config.object_store.workers = 2
    write_config(tmp_path, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "CUMULO_"))}
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    runner = CloudRunner(tmp_path)  # its client helpers only
    proxies: list[int] = []
    try:
        port = config.ports.object_store

        def answering() -> bool:
            assert proc.poll() is None, "cumulo up exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/info", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait(answering, "the object store did not answer")
        _wait(lambda: len(_proxies(proc.pid)) == 1, "no object-store proxy process")
        proxies = _proxies(proc.pid)
        token = runner.token("admin")
        url = storage_url(runner, token)
        headers = {"X-Auth-Token": token}
        assert httpx.put(f"{url}/both", headers=headers).status_code == 201
        small, large = os.urandom(4096), os.urandom(3 << 20)
        assert httpx.put(f"{url}/both/small", headers=headers, content=small).status_code == 201
        assert httpx.put(f"{url}/both/large", headers=headers, content=large).status_code == 201

        def read_through_new_connections() -> None:
            # A new connection each: the kernel hands them to either process.
            for _ in range(12):
                for name, body in (("small", small), ("large", large)):
                    r = httpx.get(f"{url}/both/{name}", headers=headers)
                    assert r.status_code == 200 and r.content == body
            listing = httpx.get(f"{url}/both", headers=headers).text.split()
            assert listing == ["large", "small"]

        read_through_new_connections()
        # A token that Identity refuses is refused by every process.
        for _ in range(6):
            refused = httpx.get(f"{url}/both/small", headers={"X-Auth-Token": "bad"})
            assert refused.status_code == 401

        os.kill(proxies[0], signal.SIGKILL)
        _wait(lambda: _proxies(proc.pid) not in ([], proxies), "the proxy did not come back")
        proxies = _proxies(proc.pid)
        _wait(answering, "the object store did not answer")
        read_through_new_connections()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    # The cloud's end is the proxies' end.
    _wait(lambda: not any(_alive(p) for p in proxies), "a proxy outlived the cloud", 30)
