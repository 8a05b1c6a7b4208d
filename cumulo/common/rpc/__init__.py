"""The message bus: `cast` and `call` to topics, carrying the request context.

Two transports behind one interface (cumulo.common.rpc.base.Transport), chosen by URL:
`memory://` (in-process, the all-in-one default) and `rabbit://user:pass@host:5672/`
(RabbitMQ over AMQP 0-9-1 with aio-pika).
"""

from __future__ import annotations

from cumulo.common.rpc.base import Endpoint, RemoteError, RpcTimeout, Transport


def get_transport(url: str, namespace: str = "cumulo", queue_type: str = "quorum") -> Transport:
    if url.startswith("memory://"):
        from cumulo.common.rpc.memory import MemoryTransport

        return MemoryTransport()
    if url.startswith(("rabbit://", "amqp://")):
        from cumulo.common.rpc.rabbit import RabbitTransport

        return RabbitTransport(url, namespace, queue_type)
    raise ValueError(f"unknown message bus URL {url!r}: use memory:// or rabbit://")


def transport_for(config) -> Transport:
    """The bus a service of this config talks on ([messaging])."""
    m = config.messaging
    return get_transport(m.transport_url, m.namespace, m.queue_type)


def require_shared_bus(config, what: str) -> None:
    """A process apart from the others (a host, a conductor) needs the broker they use."""
    if config.messaging.transport_url.startswith("memory://"):
        raise ValueError(
            f"{what} on its own needs a shared message bus: set "
            "[messaging] transport_url = rabbit://..."
        )


__all__ = [
    "Endpoint",
    "RemoteError",
    "RpcTimeout",
    "Transport",
    "get_transport",
    "require_shared_bus",
    "transport_for",
]
