"""Operating a cloud on PostgreSQL + RabbitMQ: `cumulo doctor` and `cumulo status` with a
compute host of its own (up, then down once stopped; the broker's queues read by name),
and notifications a consumer outside cumulo receives from the broker."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.cloudrunner import VENV_BIN
from tests.e2e.test_compute_distributed import (  # noqa: F401
    RABBIT,
    controller,
    start_compute_host,
)
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


async def _receive_nova_notifications(
    bound: asyncio.Event, got: list[dict], want: str, publisher: str
) -> None:
    """A consumer as ceilometer is one: its own queue on the `nova` exchange, until
    `publisher`'s `want` (other clouds on the same broker publish there too)."""
    import aio_pika

    from cumulo.common.notifications import unwrap

    connection = await aio_pika.connect(RABBIT.replace("rabbit", "amqp", 1))
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "nova", aio_pika.ExchangeType.TOPIC, durable=False
        )
        mine = await channel.declare_queue(f"test-{uuid.uuid4().hex[:8]}", exclusive=True)
        await mine.bind(exchange, routing_key="versioned_notifications.info")
        bound.set()
        async with mine.iterator() as messages:
            async for message in messages:
                async with message.process():
                    outer = json.loads(message.body)
                    assert outer["oslo.version"] == "2.0"
                    got.append(unwrap(message.body))
                    if got[-1]["event_type"] == want and got[-1]["publisher_id"] == publisher:
                        return


PUBLISHER = "nova-compute:controller"  # the controller's own compute host


def test_a_consumer_on_rabbitmq_receives_instance_create_end(controller, tmp_path: Path):  # noqa: F811
    follower = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "events", "--json", "--state-dir", str(controller.state_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    got: list[dict] = []

    async def scenario() -> None:
        bound = asyncio.Event()
        consumer = asyncio.create_task(
            _receive_nova_notifications(bound, got, "instance.create.end", PUBLISHER)
        )
        await asyncio.wait_for(bound.wait(), 30)
        await asyncio.sleep(2)  # `cumulo events` binds its own queue meanwhile
        disk = tmp_path / "disk.qcow2"
        await asyncio.to_thread(
            subprocess.run,
            ["qemu-img", "create", "-f", "qcow2", str(disk), "64M"],
            check=True,
            capture_output=True,
        )
        image = await asyncio.to_thread(
            controller.openstack,
            "image", "create", "notify-img", "--file", str(disk), "--disk-format", "qcow2",
            "--container-format", "bare", "-f", "json",
        )  # fmt: skip
        server = await asyncio.to_thread(
            controller.openstack,
            "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network",
            "private", "--wait", "notify-vm", "-f", "json",
        )  # fmt: skip
        got.append({"server": server["id"]})
        await asyncio.wait_for(consumer, 60)

    try:
        asyncio.run(scenario())
        server_id = next(g["server"] for g in got if "server" in g)
        end = next(
            g
            for g in got
            if g.get("event_type") == "instance.create.end" and g["publisher_id"] == PUBLISHER
        )
        assert end["payload"]["nova_object.data"]["uuid"] == server_id
        assert end["payload"]["nova_object.data"]["state"] == "active"
        # `cumulo events` saw the same notification on its own queue.
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in follower.stdout], daemon=True
        ).start()
        seen: list[dict] = []
        while not any(e["event_type"] == "instance.create.end" for e in seen):
            seen.append(json.loads(lines.get(timeout=30)))
        assert seen[-1]["exchange"] == "nova"
    finally:
        follower.kill()
        follower.wait()
