"""Notifications for consumers outside cumulo, as OpenStack services emit them.

The envelope is oslo.messaging's (message_id, publisher_id, event_type, priority,
payload, timestamp), so a consumer written for OpenStack (ceilometer, a billing hook)
reads them unchanged: on RabbitMQ each service publishes to its topic exchange (`nova`,
`keystone`, `cinder`, `glance`, `neutron`) with the routing key `<topic>.<priority>`
(`versioned_notifications.info` for Nova's versioned notifications, `notifications.info`
for the others), wrapped as oslo.messaging wraps them (`oslo.version` 2.0 and the message
as a JSON string). Nothing is queued without a consumer: consumers bind their own queues.
The all-in-one cloud without a broker writes the same messages as JSON lines to
`<state dir>/notifications.jsonl` (`cumulo events` prints either).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cumulo.common.config import CumuloConfig

LOG = logging.getLogger(__name__)

LOG_FILE = "notifications.jsonl"
EXCHANGES = {
    "compute": "nova",
    "identity": "keystone",
    "volume": "cinder",
    "image": "glance",
    "network": "neutron",
}
VERSIONED_TOPIC = "versioned_notifications"
LEGACY_TOPIC = "notifications"


def envelope(
    publisher_id: str, event_type: str, payload: dict[str, Any], priority: str = "INFO"
) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "publisher_id": publisher_id,
        "event_type": event_type,
        "priority": priority,
        "payload": payload,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }


def driver_name(config: CumuloConfig) -> str:
    name = config.messaging.notification_driver
    if name == "auto":
        return "log" if config.messaging.transport_url.startswith("memory") else "messaging"
    return name


class Notifier:
    """One service's notifier; `topic` is versioned_notifications for Nova's versioned
    notifications, notifications for the others."""

    def __init__(
        self, config: CumuloConfig, state_dir: Path, service: str, topic: str = LEGACY_TOPIC
    ) -> None:
        self.driver = driver_name(config)
        self.exchange = EXCHANGES[service]
        self.topic = topic
        self.url = config.messaging.transport_url.replace("rabbit://", "amqp://", 1)
        self.path = state_dir / LOG_FILE
        self._shared: Any = None
        self._channel: Any = None
        self._channel_exchange: Any = None
        self._lock = asyncio.Lock()

    async def info(self, publisher_id: str, event_type: str, payload: dict[str, Any]) -> None:
        await self.notify(envelope(publisher_id, event_type, payload))

    async def error(self, publisher_id: str, event_type: str, payload: dict[str, Any]) -> None:
        await self.notify(envelope(publisher_id, event_type, payload, "ERROR"))

    async def notify(self, message: dict[str, Any]) -> None:
        """Send it; a notification that cannot be sent is logged, never raised: the
        operation it tells of has happened either way."""
        try:
            if self.driver == "log":
                line = json.dumps({"exchange": self.exchange, **message}) + "\n"
                await asyncio.to_thread(self._append, line)
            elif self.driver == "messaging":
                await self._publish(message)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            LOG.warning("notification %s not sent: %s", message["event_type"], exc)

    def _append(self, line: str) -> None:
        with self.path.open("a") as f:
            f.write(line)

    async def _publish(self, message: dict[str, Any]) -> None:
        import aio_pika

        from cumulo.common.rpc.rabbit import shared_connection

        async with self._lock:
            if self._channel_exchange is None:
                # A channel on the process's connection (shared with the RPC transports).
                self._shared = shared_connection(self.url)
                connection = await self._shared.acquire()
                self._channel = channel = await connection.channel()
                # Not durable, as oslo.messaging declares them by default: a consumer
                # declaring the exchange itself must agree.
                self._channel_exchange = await channel.declare_exchange(
                    self.exchange, aio_pika.ExchangeType.TOPIC, durable=False
                )
        body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)})
        await self._channel_exchange.publish(
            aio_pika.Message(body.encode(), content_type="application/json"),
            routing_key=f"{self.topic}.{message['priority'].lower()}",
        )

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._channel.close()
            await self._shared.release()
            self._shared = self._channel = self._channel_exchange = None


def unwrap(body: bytes) -> dict[str, Any]:
    """A notification as a consumer gets it from RabbitMQ (the oslo envelope removed)."""
    outer = json.loads(body)
    return json.loads(outer["oslo.message"]) if "oslo.message" in outer else outer
