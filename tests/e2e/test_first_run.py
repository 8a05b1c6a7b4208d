"""A new user's first run, as the README tells it: the host packages are there (the same
installer `make run` calls), `cumulo up` on a fresh state dir registers the demo image and
prints the line that boots it; that line boots a real QEMU guest on a real network; and
`cumulo purge` afterwards leaves nothing of the cloud on the host."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from cumulo.operations.purge import cloud_namespaces, cloud_processes, scope_of
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail
from tests.functional.test_identity_lifecycle import _clean_env, _cumulo

pytestmark = pytest.mark.e2e


def test_first_up_offers_the_demo_image_and_its_line_boots_a_real_guest(tmp_path: Path):
    packages = _cumulo("host-packages", "--install", "--with-test", timeout=900)
    if packages.returncode != 0 or os.geteuid() != 0:
        skip_or_fail(f"needs root and the host packages: {packages.stderr}")
    state = tmp_path / "first"
    configure_state_dir(state)  # free ports; the rest as a user's first start
    (state / "demo-image-offered").unlink()
    config = load_config(state)
    config.compute.driver = config.network.driver = "auto"
    config.compute.qemu_accel = "tcg"
    write_config(state, config)
    up = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_clean_env(),
    )  # fmt: skip
    runner = CloudRunner(state)  # for its client helpers only
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 600  # the first demo image build downloads packages
        while not any("cumulo is up" in line for line in printed):
            assert up.poll() is None, "".join(printed)
            assert time.monotonic() < deadline, "".join(printed)
            printed.append(up.stderr.readline())
        # Keep reading its log: a full pipe would stop the cloud at its next log line.
        threading.Thread(target=lambda: printed.extend(up.stderr), daemon=True).start()
        boot_line = next(line for line in printed if "openstack server create" in line)
        argv = shlex.split(boot_line.split("boot it:", 1)[1])
        assert argv[:3] == ["openstack", "server", "create"] and "tiny" in argv
        created = runner.openstack(*argv[1:], "-f", "json")
        assert created["status"] == "ACTIVE"
        guests = cloud_processes(scope_of(state))["qemu-system-x86_64"]
        assert len(guests) == 1, "the server is a real QEMU guest"
        assert httpx.get(runner.auth_url, timeout=5).status_code == 200
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    # Stopped, the guest and its network stay (`cumulo down` semantics) until purged.
    assert cloud_processes(scope_of(state))["qemu-system-x86_64"]
    purged = _cumulo("purge", "--state-dir", str(state), "--remove-state-dir")
    assert purged.returncode == 0, purged.stderr
    assert re.search(r"1 guest\(s\), \d+ NBD export\(s\), [1-9]\d* namespace\(s\)", purged.stderr)
    assert cloud_namespaces(scope_of(state)) == []
    assert cloud_processes(scope_of(state)) == {
        "qemu-system-x86_64": [],
        "qemu-storage-daemon": [],
    }
    assert not state.exists()
