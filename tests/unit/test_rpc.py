"""The message bus contract, run on both transports (RabbitMQ where it is reachable)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from cumulo.common.request_ids import global_request_id_var, request_id_var, working_for
from cumulo.common.rpc import Endpoint, RemoteError, RpcTimeout, get_transport
from tests.conftest import skip_or_fail

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"


def _rabbit_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


class Conductor(Endpoint):
    def __init__(self) -> None:
        self.seen: list[tuple[dict, dict]] = []
        self.event = asyncio.Event()

    async def build_instances(self, context, **args):
        self.seen.append((context, args))
        self.event.set()

    async def select_destinations(self, context, count):
        return {"hosts": [f"host-{i}" for i in range(count)], "user": context["user_id"]}

    async def explode(self, context):
        raise ValueError("no valid host was found")

    async def slow(self, context):
        await asyncio.sleep(5)

    def not_async(self, context):  # not an RPC method: only coroutines are exposed
        return "nope"


@pytest.fixture(params=["memory", "rabbit"])
async def bus(request):
    if request.param == "rabbit" and not _rabbit_reachable():
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    transport = get_transport("memory://" if request.param == "memory" else RABBIT_URL)
    await transport.start()
    transport.test_topics = []
    yield transport
    await transport.close()
    if request.param == "rabbit":  # durable queues outlive us: remove the test's own
        import aio_pika

        connection = await aio_pika.connect(RABBIT_URL.replace("rabbit", "amqp", 1))
        async with connection:
            channel = await connection.channel()
            for topic in transport.test_topics:
                await channel.queue_delete(f"cumulo.{topic}")


def topic_for(bus, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    bus.test_topics.append(topic)
    return topic


CONTEXT = {
    "user_id": "u1",
    "project_id": "p1",
    "roles": ["member"],
    "request_id": "req-1",
    "global_request_id": "req-0",
}


async def test_cast_delivers_args_and_context(bus):
    topic = topic_for(bus, "conductor")
    conductor = Conductor()
    await bus.serve(topic, conductor)
    await bus.cast(topic, "build_instances", CONTEXT, instance_uuids=["a", "b"], retry=1)
    await asyncio.wait_for(conductor.event.wait(), 10)
    [(context, args)] = conductor.seen
    assert context == CONTEXT
    assert args == {"instance_uuids": ["a", "b"], "retry": 1}


async def test_call_returns_the_result(bus):
    topic = topic_for(bus, "scheduler")
    await bus.serve(topic, Conductor())
    result = await bus.call(topic, "select_destinations", CONTEXT, count=2, timeout=10)
    assert result == {"hosts": ["host-0", "host-1"], "user": "u1"}


async def test_remote_exception_comes_back_as_remote_error(bus):
    topic = topic_for(bus, "scheduler")
    await bus.serve(topic, Conductor())
    with pytest.raises(RemoteError) as err:
        await bus.call(topic, "explode", CONTEXT, timeout=10)
    assert err.value.type == "ValueError" and "no valid host" in err.value.message
    with pytest.raises(RemoteError) as err:
        await bus.call(topic, "not_async", CONTEXT, timeout=10)
    assert err.value.type == "UnknownMethod"


async def test_call_times_out(bus):
    topic = topic_for(bus, "scheduler")
    await bus.serve(topic, Conductor())
    with pytest.raises(RpcTimeout):
        await bus.call(topic, "slow", CONTEXT, timeout=0.3)


async def test_cast_before_the_server_starts_waits_in_the_queue(bus):
    topic = topic_for(bus, "compute.host")
    await bus.cast(topic, "build_instances", CONTEXT, instance_uuids=["late"])
    conductor = Conductor()
    await bus.serve(topic, conductor)
    await asyncio.wait_for(conductor.event.wait(), 10)
    assert conductor.seen[0][1] == {"instance_uuids": ["late"]}


async def test_many_concurrent_calls(bus):
    topic = topic_for(bus, "scheduler")
    await bus.serve(topic, Conductor())
    results = await asyncio.gather(
        *(
            bus.call(topic, "select_destinations", CONTEXT, count=i % 3, timeout=20)
            for i in range(200)
        )
    )
    assert [len(r["hosts"]) for r in results] == [i % 3 for i in range(200)]


def test_unknown_url_is_refused():
    with pytest.raises(ValueError):
        get_transport("kafka://nope")


class Recorder(Endpoint):
    """Notes the request ids each handling works under."""

    def __init__(self) -> None:
        self.ids: list[tuple[str, str | None]] = []
        self.event = asyncio.Event()

    async def build_instances(self, context, **args):
        self.ids.append((request_id_var.get(), global_request_id_var.get()))
        self.event.set()

    async def select_destinations(self, context, count):
        return [request_id_var.get(), global_request_id_var.get()]


async def test_the_handling_works_under_the_callers_request_ids(bus):
    topic = topic_for(bus, "conductor")
    recorder = Recorder()
    await bus.serve(topic, recorder)
    global_id = f"req-{uuid.uuid4()}"
    with working_for("req-api", global_id):
        # A service's own empty context, sent while handling a request, names it too.
        await bus.cast(topic, "build_instances", {})
        called = await bus.call(topic, "select_destinations", {}, count=1, timeout=10)
    await asyncio.wait_for(recorder.event.wait(), 10)
    assert recorder.ids == [("req-api", global_id)]
    assert called == ["req-api", global_id]
    # Sent outside any request: none (and nothing left over from the one before).
    assert await bus.call(topic, "select_destinations", {}, count=1, timeout=10) == ["-", None]
