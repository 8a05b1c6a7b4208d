"""In-process transport: one asyncio queue per topic, the all-in-one default.

Messages are JSON-encoded on the way through, so what works here also works
over RabbitMQ (no Python objects sneak across the bus).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cumulo.common import metrics
from cumulo.common.rpc.base import (
    Endpoint,
    RpcTimeout,
    Transport,
    decode,
    dispatch,
    encode,
    envelope,
    unwrap,
)


class MemoryTransport(Transport):
    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[tuple[str, asyncio.Future | None]]] = {}
        self._consumers: list[asyncio.Task] = []
        self._handlers: set[asyncio.Task] = set()
        metrics.BUS_QUEUES.transports.add(self)

    def queue_depths(self) -> dict[str, int]:
        return {topic: queue.qsize() for topic, queue in self._queues.items()}

    def _queue(self, topic: str) -> asyncio.Queue:
        return self._queues.setdefault(topic, asyncio.Queue())

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for task in [*self._consumers, *self._handlers]:
            task.cancel()
        await asyncio.gather(*self._consumers, *self._handlers, return_exceptions=True)
        self._consumers.clear()

    async def cast(self, topic: str, method: str, context: dict[str, Any], **args: Any) -> None:
        body = encode(envelope(method, args, context))
        self._queue(topic).put_nowait((body, None))

    async def call(
        self,
        topic: str,
        method: str,
        context: dict[str, Any],
        *,
        timeout: float = 60.0,
        **args: Any,
    ) -> Any:
        body = encode(envelope(method, args, context))
        reply: asyncio.Future = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self._queue(topic).put_nowait((body, reply))
        try:
            raw = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise RpcTimeout(f"no reply from {topic}.{method} within {timeout}s") from None
        metrics.RPC_ROUND_TRIP.labels(method).observe(time.perf_counter() - started)
        return unwrap(decode(raw))

    async def serve(self, topic: str, endpoint: Endpoint) -> None:
        queue = self._queue(topic)

        async def handle(body: bytes, reply: asyncio.Future | None) -> None:
            result = await dispatch(endpoint, decode(body))
            if reply is not None and not reply.done():
                reply.set_result(encode(result))

        async def consume() -> None:
            while True:
                body, reply = await queue.get()
                task = asyncio.create_task(handle(body, reply))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

        self._consumers.append(asyncio.create_task(consume()))
