"""The message bus contract, run on both transports (RabbitMQ where it is reachable)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from cumulo.common.request_ids import global_request_id_var, request_id_var, working_for
from cumulo.common.rpc import Endpoint, RemoteError, RpcTimeout, get_transport
from cumulo.common.rpc.rabbit import RabbitTransport
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


async def test_messages_waiting_for_a_server_are_each_handled_once(bus):
    # They arrive together and are acknowledged together (RabbitMQ: one ack of many):
    # a server that takes the topic over afterwards gets none of them again.
    topic = topic_for(bus, "conductor")
    for i in range(100):
        await bus.cast(topic, "build_instances", CONTEXT, instance_uuids=[str(i)])
    first = Conductor()
    await bus.serve(topic, first)
    for _ in range(100):
        if len(first.seen) == 100:
            break
        await asyncio.sleep(0.1)
    assert sorted(int(args["instance_uuids"][0]) for _, args in first.seen) == list(range(100))
    if not isinstance(bus, RabbitTransport):
        return  # the memory bus's queues go with it
    await bus.close()
    again, second = get_transport(RABBIT_URL), Conductor()
    await again.serve(topic, second)
    await asyncio.sleep(1.0)
    await again.close()
    assert second.seen == []


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


# -- RabbitMQ: which queue type each topic gets, and queues an older cumulo made ----------


@pytest.fixture
async def broker():
    """A RabbitMQ transport and a raw connection (to inspect and pre-make queues); the
    test's queues are removed afterwards."""
    if not _rabbit_reachable():
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")
    import aio_pika

    namespace = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    raw = await aio_pika.connect(RABBIT_URL.replace("rabbit", "amqp", 1))
    transports = []

    def transport():
        made = get_transport(RABBIT_URL, namespace)
        transports.append(made)
        return made

    try:
        yield transport, raw, namespace
    finally:
        for made in transports:
            await made.close()
        channel = await raw.channel()
        for topic in ("conductor", "compute.h1", "compute.h2"):
            await channel.queue_delete(f"{namespace}.{topic}")
        await raw.close()


async def queue_type(raw, name: str) -> str:
    """The type of an existing queue: a declaration with other arguments is refused."""
    import aio_pika

    for kind in ("classic", "quorum"):
        channel = await raw.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": kind})
        except aio_pika.exceptions.ChannelPreconditionFailed:
            continue
        await channel.close()
        return kind
    raise AssertionError(f"{name} is neither classic nor quorum")


async def older_quorum_queue(raw, name: str, *messages: dict) -> None:
    """What an older cumulo left: a host's queue as a quorum queue, maybe with messages."""
    import json

    import aio_pika

    channel = await raw.channel(publisher_confirms=True)
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    for body in messages:
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(body).encode(), delivery_mode=2), routing_key=name
        )
    await channel.close()


async def test_a_hosts_own_topic_is_a_classic_queue_and_shared_ones_quorum(broker):
    transport, raw, namespace = broker
    bus = transport()
    await bus.serve("conductor", Conductor())
    host = Conductor()
    await bus.serve("compute.h1", host)
    # A publisher declares the host's queue as the host does (h2 has not started yet).
    await transport().cast("compute.h2", "build_instances", CONTEXT, instance_uuids=["x"])
    assert await queue_type(raw, f"{namespace}.conductor") == "quorum"
    assert await queue_type(raw, f"{namespace}.compute.h1") == "classic"
    assert await queue_type(raw, f"{namespace}.compute.h2") == "classic"
    # Durable: the cast waits for h2, and what h1 gets arrives.
    await bus.cast("compute.h1", "build_instances", CONTEXT, instance_uuids=["y"])
    await asyncio.wait_for(host.event.wait(), 10)
    late = Conductor()
    await transport().serve("compute.h2", late)
    await asyncio.wait_for(late.event.wait(), 10)
    assert late.seen[0][1] == {"instance_uuids": ["x"]}


async def test_an_older_empty_quorum_queue_of_a_host_becomes_classic_when_it_starts(broker):
    transport, raw, namespace = broker
    name = f"{namespace}.compute.h1"
    await older_quorum_queue(raw, name)
    host = Conductor()
    await transport().serve("compute.h1", host)
    assert await queue_type(raw, name) == "classic"
    await transport().cast("compute.h1", "build_instances", CONTEXT, instance_uuids=["a"])
    await asyncio.wait_for(host.event.wait(), 10)


async def test_an_older_quorum_queue_holding_messages_is_used_as_it_is_then_converted(broker):
    transport, raw, namespace = broker
    name = f"{namespace}.compute.h1"
    waiting = {"method": "build_instances", "args": {"instance_uuids": ["old"]}, "context": {}}
    await older_quorum_queue(raw, name, waiting)
    # A publisher of this version sends to it as it is (its declaration is refused).
    publisher = transport()
    await publisher.cast("compute.h1", "build_instances", CONTEXT, instance_uuids=["new"])
    # The host takes both and the queue stays quorum meanwhile: nothing is lost.
    host = Conductor()
    bus = transport()
    await bus.serve("compute.h1", host)
    for _ in range(100):
        if len(host.seen) == 2:
            break
        await asyncio.sleep(0.1)
    assert sorted(args["instance_uuids"][0] for _, args in host.seen) == ["new", "old"]
    assert await queue_type(raw, name) == "quorum"
    # The host restarts and finds it empty: converted; the publisher still reaches it.
    await bus.close()
    restarted = Conductor()
    await transport().serve("compute.h1", restarted)
    assert await queue_type(raw, name) == "classic"
    await publisher.cast("compute.h1", "build_instances", CONTEXT, instance_uuids=["after"])
    await asyncio.wait_for(restarted.event.wait(), 10)
    assert restarted.seen[0][1] == {"instance_uuids": ["after"]}


async def test_after_a_reconnect_a_lost_hosts_queue_is_declared_again(broker):
    """A broker back without its data: the publisher declares the host's queue again
    before its next cast, so the cast waits for the host instead of being dropped."""
    from tests.cluster import CuttableProxy

    transport, raw, namespace = broker
    proxy = CuttableProxy(5672).start()
    publisher = get_transport(f"rabbit://guest:guest@127.0.0.1:{proxy.port}/", namespace)
    try:
        await publisher.cast("compute.h1", "build_instances", CONTEXT, instance_uuids=["a"])
        channel = await raw.channel()
        await channel.queue_delete(f"{namespace}.compute.h1")  # what the lost broker had
        proxy.cut()
        await asyncio.sleep(1.5)
        proxy.restore()
        for _ in range(100):  # the robust connection comes back within seconds
            try:
                await publisher.cast("compute.h1", "build_instances", CONTEXT, instance_uuids=["b"])
                break
            except Exception:  # noqa: BLE001 - still reconnecting
                await asyncio.sleep(0.2)
        host = Conductor()
        await transport().serve("compute.h1", host)
        await asyncio.wait_for(host.event.wait(), 10)
        assert host.seen[0][1] == {"instance_uuids": ["b"]}
    finally:
        await publisher.close()
        proxy.close()


async def test_a_server_whose_consume_the_broker_fails_waits_for_it_and_serves(broker):
    """The broker goes away between a server's start and its consume (as a broker that
    closes the connection on a consume it cannot serve in time): serve() tries again once
    the connection is back, instead of raising out of the service's start."""
    from tests.cluster import CuttableProxy

    transport, raw, namespace = broker
    proxy = CuttableProxy(5672).start()
    server = get_transport(f"rabbit://guest:guest@127.0.0.1:{proxy.port}/", namespace)
    try:
        await server.start()
        proxy.cut()
        host = Conductor()
        serving = asyncio.create_task(server.serve("conductor", host))
        await asyncio.sleep(1.5)
        assert not serving.done()  # still trying, not failed
        proxy.restore()
        await asyncio.wait_for(serving, 60)
        await transport().cast("conductor", "build_instances", CONTEXT, instance_uuids=["a"])
        await asyncio.wait_for(host.event.wait(), 10)
        assert host.seen[0][1] == {"instance_uuids": ["a"]}
    finally:
        await server.close()
        proxy.close()
