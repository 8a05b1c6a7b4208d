"""`cumulo events`: the cloud's notifications as they are emitted (see
cumulo/common/notifications.py): from the JSON lines file of the all-in-one cloud, or
from RabbitMQ, bound to every service's exchange with a queue of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cumulo.common.config import CumuloConfig
from cumulo.common.notifications import (
    EXCHANGES,
    LEGACY_TOPIC,
    LOG_FILE,
    VERSIONED_TOPIC,
    driver_name,
    unwrap,
)


async def from_log(path: Path, follow: bool) -> AsyncIterator[dict[str, Any]]:
    while follow and not path.exists():
        await asyncio.sleep(0.5)
    if not path.exists():
        return
    with path.open() as f:
        while True:
            line = f.readline()
            if line.endswith("\n"):
                yield json.loads(line)
            elif follow:
                await asyncio.sleep(0.3)
            else:
                return


async def from_broker(config: CumuloConfig) -> AsyncIterator[dict[str, Any]]:
    import aio_pika

    url = config.messaging.transport_url.replace("rabbit://", "amqp://", 1)
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for exchange_name in EXCHANGES.values():
            exchange = await channel.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, durable=False
            )
            for topic in (VERSIONED_TOPIC, LEGACY_TOPIC):
                await queue.bind(exchange, routing_key=f"{topic}.*")
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    yield {"exchange": message.exchange, **unwrap(message.body)}
    finally:
        await connection.close()


def events(config: CumuloConfig, state_dir: Path, follow: bool) -> AsyncIterator[dict[str, Any]]:
    if driver_name(config) == "messaging":
        return from_broker(config)
    return from_log(state_dir / LOG_FILE, follow)


async def print_events(
    config: CumuloConfig, state_dir: Path, follow: bool, echo: Callable[[str], None], as_json: bool
) -> None:
    async for event in events(config, state_dir, follow):
        if as_json:
            echo(json.dumps(event))
        else:
            echo(
                f"{event['timestamp']}  {event['priority']:<5} {event['event_type']:<28} "
                f"{event['publisher_id']}"
            )
