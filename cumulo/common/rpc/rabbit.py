"""RabbitMQ transport (AMQP 0-9-1, aio-pika).

- One durable queue per topic (`cumulo.<topic>`), so a host's messages wait for it
  while it restarts: a quorum queue by default (replicated over the broker's cluster
  nodes, as oslo.messaging's rabbit_quorum_queue), or classic. Messages are persistent
  and published with publisher confirms, so a cast that returned is on the broker's disk.
- One connection per process, shared by every service's transport (each its own
  channel), with AMQP heartbeats, as production brokers want it.
- `call` replies come back on a per-process exclusive queue, matched by correlation id.
- The connection is robust: lost connections are re-established with backoff, and
  channels, queues and consumers are restored.
- Messages are acknowledged on receipt, as oslo.messaging does: a message is handled
  at most once even when the consumer dies mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from cumulo.common import metrics
from cumulo.common.rpc.base import Endpoint, RpcTimeout, Transport, dispatch, envelope, unwrap

LOG = logging.getLogger(__name__)
PREFETCH = 64


HEARTBEAT = 30  # seconds (AMQP heartbeat: a dead peer is noticed within two of them)


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
        self.queue_arguments = {"x-queue-type": queue_type}
        # kombu/oslo style rabbit:// URLs are AMQP URLs for aio-pika.
        self.url = "amqp://" + url.split("://", 1)[1]
        self._shared: SharedConnection | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._reply_queue: aio_pika.abc.AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._declared: set[str] = set()
        self._handlers: set[asyncio.Task] = set()

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

    async def close(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        if self._channel is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._channel.close()
        if self._shared is not None and self._connection is not None:
            await self._shared.release()
        self._connection = self._channel = self._reply_queue = None
        self._declared.clear()

    async def _declare(self, topic: str) -> aio_pika.abc.AbstractQueue:
        assert self._channel is not None, "transport not started"
        try:
            queue = await self._channel.declare_queue(
                self.queue_name(topic), durable=True, arguments=self.queue_arguments
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise RuntimeError(
                f"queue {self.queue_name(topic)} exists on the broker with other arguments "
                f"({exc}): it was made with another [messaging] queue_type; delete it "
                "(rabbitmqctl delete_queue) or set queue_type to what it is"
            ) from exc
        self._declared.add(topic)
        return queue

    async def _publish(self, topic: str, body: dict[str, Any], **props: Any) -> None:
        await self.start()
        if topic not in self._declared:
            await self._declare(topic)
        assert self._channel is not None
        message = aio_pika.Message(
            json.dumps(body).encode(),
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
            future.set_result(json.loads(message.body))

    async def serve(self, topic: str, endpoint: Endpoint) -> None:
        await self.start()
        queue = await self._declare(topic)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await message.ack()
            task = asyncio.create_task(self._handle(endpoint, message))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

        await queue.consume(on_message)

    async def _handle(self, endpoint: Endpoint, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            LOG.error("dropping a message that is not JSON")
            return
        reply = await dispatch(endpoint, body)
        if message.reply_to and self._channel is not None:
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(reply).encode(),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                ),
                routing_key=message.reply_to,
            )
