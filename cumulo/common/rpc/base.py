"""The transport interface and the dispatch both transports share."""

from __future__ import annotations

import abc
import asyncio
import logging
import time
import traceback
from typing import Any

import orjson
from opentelemetry.trace import SpanKind

from cumulo.common import metrics, tracing
from cumulo.common.request_ids import message_context, working_for_message

LOG = logging.getLogger(__name__)

# Messages are JSON: {"method": str, "args": {...}, "context": {...}}.
# Replies: {"result": ...} or {"error": {"type": str, "message": str}}.

# orjson, held to what the json module accepts: datetimes and dataclasses are refused
# rather than turned into strings on the way (both transports encode with it).
_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode(body: Any) -> bytes:
    """A message or reply as the bus carries it (UTF-8 JSON)."""
    return orjson.dumps(body, default=_refuse, option=_OPTIONS)


decode = orjson.loads


def envelope(method: str, args: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A message as every transport sends it (cast and call alike): its context carries
    the request ids it is sent for (request_id, global_request_id) and the trace."""
    return {"method": method, "args": args, "context": tracing.inject(message_context(context))}


def is_server_topic(topic: str) -> bool:
    """`<topic>.<server>` (compute.<host>, network.<host>, volume.<host>@<backend>) is one
    server's own topic, as oslo.messaging's Target(topic, server) makes `topic.server`; a
    topic without a dot (conductor, scheduler, network) is shared by every server of its
    kind. The RabbitMQ transport keeps the two on queues of different types."""
    return "." in topic


class RemoteError(Exception):
    """The remote method raised; `type` names the remote exception class."""

    def __init__(self, type_: str, message: str) -> None:
        self.type = type_
        self.message = message
        super().__init__(f"{type_}: {message}")


class RpcTimeout(TimeoutError):
    pass


class Endpoint:
    """Base for the objects a server exposes: public async methods become RPC methods.

    Each method is called as `await method(context, **args)`; `context` is the dict
    the caller sent (user, project, roles, request ids).
    """

    def rpc_method(self, name: str):
        if name.startswith("_") or name in ("rpc_method",):
            return None
        method = getattr(self, name, None)
        return method if asyncio.iscoroutinefunction(method) else None


async def dispatch(endpoint: Endpoint, message: dict[str, Any]) -> dict[str, Any]:
    """Run one message against an endpoint; the reply body (result or error)."""
    name = message.get("method", "")
    context = message.get("context") or {}
    # The handling's log lines, messages and calls name the request it is for.
    with (
        working_for_message(context),
        tracing.span(
            f"rpc {name}",
            SpanKind.CONSUMER,
            carrier=context,
            **{
                "openstack.request_id": context.get("request_id"),
                "openstack.global_request_id": context.get("global_request_id"),
            },
        ),
    ):
        return await _run(endpoint, name, context, message.get("args") or {})


async def _run(
    endpoint: Endpoint, name: str, context: dict[str, Any], args: dict[str, Any]
) -> dict[str, Any]:
    method = endpoint.rpc_method(name)
    if method is None:
        return {"error": {"type": "UnknownMethod", "message": f"no RPC method {name!r}"}}
    started = time.perf_counter()
    try:
        result = await method(context, **args)
        metrics.RPC_MESSAGES.labels(name, "ok").inc()
        return {"result": result}
    except Exception as exc:  # noqa: BLE001 - every failure travels back to the caller
        LOG.warning("rpc %s failed: %s\n%s", name, exc, traceback.format_exc())
        metrics.RPC_MESSAGES.labels(name, "error").inc()
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    finally:
        metrics.RPC_DURATION.labels(name).observe(time.perf_counter() - started)


def unwrap(reply: dict[str, Any]) -> Any:
    if "error" in reply:
        raise RemoteError(reply["error"]["type"], reply["error"]["message"])
    return reply.get("result")


class Transport(abc.ABC):
    """cast/call to a topic; serve a topic with an Endpoint."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def cast(self, topic: str, method: str, context: dict[str, Any], **args: Any) -> None:
        """Fire and forget: returns once the message is safely queued."""

    @abc.abstractmethod
    async def call(
        self,
        topic: str,
        method: str,
        context: dict[str, Any],
        *,
        timeout: float = 60.0,
        **args: Any,
    ) -> Any:
        """Request/reply: the remote method's result, RemoteError, or RpcTimeout."""

    @abc.abstractmethod
    async def serve(self, topic: str, endpoint: Endpoint) -> None:
        """Start consuming `topic`; messages are dispatched to `endpoint` concurrently."""
