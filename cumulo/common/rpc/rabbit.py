"""RabbitMQ transport (AMQP 0-9-1, aio-pika).

- One durable queue per topic (`cumulo.<topic>`), declared by publishers and servers
  alike, so a message waits for its server while it restarts. Messages are persistent
  and published with publisher confirms: a cast that returned is on the broker's disk.
- Shared topics (conductor, scheduler, network: any number of servers take turns) are
  quorum queues by default (replicated over the broker's cluster nodes, as
  oslo.messaging's rabbit_quorum_queue; a confirm means a majority of the nodes have
  it), or classic ([messaging] queue_type).
- A server's own topic (`<topic>.<server>`: compute.<host>, network.<host>,
  volume.<host>@<backend>) is a classic queue whatever queue_type says: a cloud has one
  per host, and a quorum queue per host (a Raft group, its log and its file handles on
  every broker node) is what stopped a single broker node at 1,000 hosts (bench/README
  compute_boot, docs/scaling.md). Durable, not exclusive, not auto-deleted: publishers
  declare it too, and its messages wait for the host through its restarts and the
  broker's. It lives on one broker node (the host's), not replicated: what waits in it is
  lost only if that node's disk is; while that node is down the host is unreachable
  anyway. A host's queue that an older cumulo made a quorum queue is converted when
  the host starts and finds it empty and unused (see `_declare_server_queue`).
- One connection per process, shared by every service's transport (each its own
  channel, and one more for declaring servers' queues, which an older broker state can
  refuse), with AMQP heartbeats, as production brokers want it.
- `call` replies come back on a per-process exclusive queue, matched by correlation id.
  They are sent on a channel without publisher confirms: a reply is transient and
  its caller waits for it with a timeout either way (lost, it is that timeout), so
  neither the broker nor the server spends a confirm on it.
- The connection is robust: lost connections are re-established with backoff, and
  channels, queues and consumers are restored.
- Messages are acknowledged on receipt, as oslo.messaging does: a message is handled
  at most once even when the consumer dies mid-way. Those that arrive together are
  acknowledged by one ack (`multiple`, up to the newest of them), sent before their
  handling has done anything but start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from cumulo.common import metrics
from cumulo.common.rpc.base import (
    Endpoint,
    RpcTimeout,
    Transport,
    decode,
    dispatch,
    encode,
    envelope,
    is_server_topic,
    unwrap,
)

LOG = logging.getLogger(__name__)
PREFETCH = 64


HEARTBEAT = 30  # seconds (AMQP heartbeat: a dead peer is noticed within two of them)
# A server's own topic, whatever [messaging] queue_type says (see the module's docstring).
SERVER_QUEUE_ARGUMENTS = {"x-queue-type": "classic"}
# What a consume the broker could not serve raises (a closed connection or channel).
BROKER_REFUSALS = (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError)


class SharedConnection:
    """The process's connection to one broker, shared by the transports that use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: AbstractRobustConnection | None = None
        self.users = 0
        self.lock = asyncio.Lock()

    async def acquire(self) -> AbstractRobustConnection:
        async with self.lock:
            if self.connection is None or self.connection.is_closed:
                self.connection = await aio_pika.connect_robust(
                    self.url, reconnect_interval=1.0, heartbeat=HEARTBEAT
                )
            self.users += 1
            return self.connection

    async def release(self) -> None:
        async with self.lock:
            self.users -= 1
            if self.users <= 0 and self.connection is not None:
                connection, self.connection = self.connection, None
                await connection.close()


# One per (event loop, broker URL): tests run several event loops in one process.
_shared: dict[tuple[int, str], SharedConnection] = {}


def shared_connection(url: str) -> SharedConnection:
    """This process's connection to the broker at `url` (amqp://), for this event loop."""
    key = (id(asyncio.get_running_loop()), url)
    if key not in _shared:
        _shared[key] = SharedConnection(url)
    return _shared[key]


class RabbitTransport(Transport):
    def __init__(self, url: str, namespace: str = "cumulo", queue_type: str = "quorum") -> None:
        self.namespace = namespace
        self.queue_arguments = {"x-queue-type": queue_type}  # shared topics' queues
        # kombu/oslo style rabbit:// URLs are AMQP URLs for aio-pika.
        self.url = "amqp://" + url.split("://", 1)[1]
        self._shared: SharedConnection | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._reply_queue: aio_pika.abc.AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._declared: set[str] = set()
        self._handlers: set[asyncio.Task] = set()
        # Servers' queues are declared on a channel of their own: a refused declaration
        # (an older cumulo's queue) closes its channel, never the one publishing.
        self._declarer: aio_pika.abc.AbstractChannel | None = None
        self._declaring = asyncio.Lock()
        # The newest delivery received and not yet acknowledged (see _acknowledge).
        self._unacked: AbstractIncomingMessage | None = None
        # Replies to calls, without publisher confirms (opened by the first reply).
        self._replier: aio_pika.abc.AbstractChannel | None = None
        self._replier_opening = asyncio.Lock()

    def queue_name(self, topic: str) -> str:
        return f"{self.namespace}.{topic}"

    async def start(self) -> None:
        if self._connection is not None:
            return
        self._shared = shared_connection(self.url)
        self._connection = await self._shared.acquire()
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=PREFETCH)
        self._reply_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)
        self._connection.reconnect_callbacks.add(self._on_reconnect)

    def _on_reconnect(self, *_: Any) -> None:
        # A broker back without its data has lost the queues this process only published
        # to: each is declared again before the next message to it.
        self._declared.clear()

    async def close(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        for channel in (self._replier, self._declarer, self._channel):
            if channel is not None:
                with contextlib.suppress(Exception):  # the connection may be gone already
                    await channel.close()
        if self._shared is not None and self._connection is not None:
            self._connection.reconnect_callbacks.discard(self._on_reconnect)
            await self._shared.release()
        self._connection = self._channel = self._reply_queue = self._declarer = None
        self._replier = None
        self._declared.clear()

    async def _declare(self, topic: str) -> None:
        """The topic's queue made if missing (before a message is sent to it)."""
        if is_server_topic(topic):
            await self._declare_server_queue(topic, converting=False)
        else:
            await self._declare_shared(topic)
        self._declared.add(topic)

    async def _declare_shared(self, topic: str) -> aio_pika.abc.AbstractQueue:
        assert self._channel is not None, "transport not started"
        try:
            return await self._channel.declare_queue(
                self.queue_name(topic), durable=True, arguments=self.queue_arguments
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise RuntimeError(
                f"queue {self.queue_name(topic)} exists on the broker with other arguments "
                f"({exc}): it was made with another [messaging] queue_type; delete it "
                "(rabbitmqctl delete_queue) or set queue_type to what it is"
            ) from exc

    async def _declaring_channel(self) -> aio_pika.abc.AbstractChannel:
        assert self._connection is not None, "transport not started"
        if self._declarer is None or self._declarer.is_closed:
            self._declarer = await self._connection.channel(publisher_confirms=False)
        return self._declarer

    async def _drop_declaring_channel(self) -> None:
        # The broker closed it (a refused declaration): the next one opens another.
        declarer, self._declarer = self._declarer, None
        if declarer is not None:
            with contextlib.suppress(Exception):
                await declarer.close()

    async def _declare_server_queue(self, topic: str, *, converting: bool) -> bool:
        """A server's own queue, classic and durable. True when that is what the broker has;
        False when it keeps an older cumulo's queue of that name (a quorum queue), which
        is then used as it is: publishing to a queue needs only its name, and consuming
        it a passive declaration.

        The older queue is converted (deleted, declared again) only by its own server
        starting (`converting`) and only when nothing waits in it and nobody consumes it.
        Its emptiness cannot be made a condition of the delete (`if-empty` is not
        implemented for quorum queues, and RabbitMQ answers it by closing the
        connection), so a message published between the check and the delete (one
        round trip, while the host is only starting) would be lost: the delete's count
        says so in the log."""
        name = self.queue_name(topic)
        async with self._declaring:
            for _ in range(3):  # an older process may declare it again in between
                channel = await self._declaring_channel()
                try:
                    await channel.declare_queue(
                        name, durable=True, arguments=SERVER_QUEUE_ARGUMENTS, robust=False
                    )
                    return True
                except aio_pika.exceptions.ChannelPreconditionFailed:
                    await self._drop_declaring_channel()
                channel = await self._declaring_channel()
                try:
                    older = await channel.declare_queue(name, passive=True, robust=False)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    await self._drop_declaring_channel()
                    continue  # deleted meanwhile: declare it ours
                waiting = older.declaration_result.message_count or 0
                consumers = older.declaration_result.consumer_count or 0
                if not converting:
                    return False
                if waiting or consumers:
                    LOG.warning(
                        "queue %s was made by an older cumulo (not a classic queue) and holds "
                        "%d messages (%d consumers): it is used as it is, and converted "
                        "when this host starts and finds it empty",
                        name,
                        waiting,
                        consumers,
                    )
                    return False
                deleted = await channel.queue_delete(name)
                if deleted.message_count:
                    LOG.error(
                        "%d messages reached queue %s while it was converted to a classic "
                        "queue, and were lost",
                        deleted.message_count,
                        name,
                    )
                LOG.info("queue %s (made by an older cumulo) deleted, to be a classic queue", name)
            return False

    async def _publish(self, topic: str, body: dict[str, Any], **props: Any) -> None:
        await self.start()
        if topic not in self._declared:
            await self._declare(topic)
        assert self._channel is not None
        message = aio_pika.Message(
            encode(body),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **props,
        )
        # With publisher confirms, this returns once the broker has taken the message.
        await self._channel.default_exchange.publish(message, routing_key=self.queue_name(topic))

    async def cast(self, topic: str, method: str, context: dict[str, Any], **args: Any) -> None:
        await self._publish(topic, envelope(method, args, context))

    async def call(
        self,
        topic: str,
        method: str,
        context: dict[str, Any],
        *,
        timeout: float = 60.0,
        **args: Any,
    ) -> Any:
        await self.start()
        assert self._reply_queue is not None
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        started = time.perf_counter()
        try:
            await self._publish(
                topic,
                envelope(method, args, context),
                correlation_id=correlation_id,
                reply_to=self._reply_queue.name,
                expiration=timeout,
            )
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RpcTimeout(f"no reply from {topic}.{method} within {timeout}s") from None
        finally:
            self._pending.pop(correlation_id, None)
        metrics.RPC_ROUND_TRIP.labels(method).observe(time.perf_counter() - started)
        return unwrap(reply)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(decode(message.body))

    async def serve(self, topic: str, endpoint: Endpoint) -> None:
        """Consume the topic's queue. A broker that fails the declaration or the consume
        (a connection it closes with INTERNAL_ERROR when a quorum queue's Raft group does
        not answer in time, a connection lost meanwhile) is asked again, with backoff,
        once the connection is back: a server starting beside a busy broker waits for it
        rather than exiting, as oslo.messaging's consumers do."""
        await self.start()
        assert self._connection is not None
        delay = 1.0
        while True:
            try:
                await self._consume(topic, endpoint)
                return
            except BROKER_REFUSALS as exc:
                LOG.warning(
                    "could not consume %s (%s: %s): trying again in %.0f s",
                    self.queue_name(topic),
                    type(exc).__name__,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            await self._connection.connected.wait()  # the robust connection is back

    async def _consume(self, topic: str, endpoint: Endpoint) -> None:
        assert self._channel is not None
        if not is_server_topic(topic):
            queue = await self._declare_shared(topic)
        elif await self._declare_server_queue(topic, converting=True):
            queue = await self._channel.declare_queue(
                self.queue_name(topic), durable=True, arguments=SERVER_QUEUE_ARGUMENTS
            )
        else:
            queue = await self._channel.declare_queue(self.queue_name(topic), passive=True)
        self._declared.add(topic)

        async def on_message(message: AbstractIncomingMessage) -> None:
            self._acknowledge(message)
            task = asyncio.create_task(self._handle(endpoint, message))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

        await queue.consume(on_message)

    def _acknowledge(self, message: AbstractIncomingMessage) -> None:
        """Acknowledge a delivery on receipt. The deliveries of one read from the broker
        are acknowledged together by one ack of the newest (`multiple`: every delivery
        on the channel up to it; all of them are acknowledged on receipt, and the reply
        queue's deliveries need none), sent at the end of this turn of the event loop."""
        pending = self._unacked
        if pending is not None and pending.channel is not message.channel:
            self._send_ack(pending)  # delivered on a channel that is gone since
            pending = None
        if pending is None:
            asyncio.get_running_loop().call_soon(self._send_pending_ack)
        if pending is None or (message.delivery_tag or 0) > (pending.delivery_tag or 0):
            self._unacked = message

    def _send_pending_ack(self) -> None:
        message, self._unacked = self._unacked, None
        if message is not None:
            self._send_ack(message)

    def _send_ack(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._ack(message))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    @staticmethod
    async def _ack(message: AbstractIncomingMessage) -> None:
        try:
            await message.ack(multiple=True)
        except BROKER_REFUSALS as exc:  # the channel closed: the broker redelivers them
            LOG.warning("could not acknowledge deliveries up to %s: %s", message.delivery_tag, exc)

    async def _handle(self, endpoint: Endpoint, message: AbstractIncomingMessage) -> None:
        try:
            body = decode(message.body)
        except ValueError:
            LOG.error("dropping a message that is not JSON")
            return
        reply = await dispatch(endpoint, body)
        if message.reply_to and self._connection is not None:
            channel = await self._replying_channel()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    encode(reply),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                ),
                routing_key=message.reply_to,
            )

    async def _replying_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._replier is None or self._replier.is_closed:
            async with self._replier_opening:
                if self._replier is None or self._replier.is_closed:
                    assert self._connection is not None, "transport not started"
                    self._replier = await self._connection.channel(publisher_confirms=False)
        return self._replier
