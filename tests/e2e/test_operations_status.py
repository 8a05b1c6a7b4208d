"""`cumulo doctor` and `cumulo status` against a cloud on PostgreSQL + RabbitMQ with a
compute host of its own: the host shows up, then down once it is stopped; the broker's
queues are read by name."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_compute_distributed import controller, start_compute_host  # noqa: F401
from tests.functional.test_identity_lifecycle import _cumulo

pytestmark = pytest.mark.e2e


def _status(state_dir: Path) -> dict:
    result = _cumulo("status", "--state-dir", str(state_dir), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _host_state(status: dict, host: str) -> str | None:
    return next(
        (s["state"] for s in status["services"] if s["host"] == host and "compute" in s["binary"]),
        None,
    )


def test_status_shows_a_stopped_compute_host_down(controller, tmp_path: Path):  # noqa: F811
    doctor = _cumulo("doctor", "--state-dir", str(controller.state_dir), "--json", timeout=60)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["database"]["status"] == "ok" and "answers" in checks["database"]["detail"]
    assert checks["message bus"]["status"] == "ok"

    host = start_compute_host(controller, tmp_path, "status-host")
    try:
        status = _status(controller.state_dir)
        assert _host_state(status, "status-host") == "up"
        assert status["database"]["status"] == "ok"
        # The broker's queues, by the names the cloud's processes consume.
        assert {"conductor", "scheduler", "compute.status-host"} <= set(status["queues"])
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=30)
    deadline = time.monotonic() + 30  # service_down_time is 5 s in this cloud
    while _host_state(_status(controller.state_dir), "status-host") != "down":
        assert time.monotonic() < deadline, "the stopped host never showed down"
        time.sleep(1)
