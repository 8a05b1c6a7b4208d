"""The message bus: `cast` and `call` to topics, carrying the request context.

Two transports behind one interface (cumulo.common.rpc.base.Transport), chosen by URL:
`memory://` (in-process, the all-in-one default) and `rabbit://user:pass@host:5672/`
(RabbitMQ over AMQP 0-9-1 with aio-pika).
"""

from __future__ import annotations

from cumulo.common.rpc.base import Endpoint, RemoteError, RpcTimeout, Transport


def get_transport(url: str, namespace: str = "cumulo") -> Transport:
    if url.startswith("memory://"):
        from cumulo.common.rpc.memory import MemoryTransport

        return MemoryTransport()
    if url.startswith(("rabbit://", "amqp://")):
        from cumulo.common.rpc.rabbit import RabbitTransport

        return RabbitTransport(url, namespace)
    raise ValueError(f"unknown message bus URL {url!r}: use memory:// or rabbit://")


__all__ = ["Endpoint", "RemoteError", "RpcTimeout", "Transport", "get_transport"]
