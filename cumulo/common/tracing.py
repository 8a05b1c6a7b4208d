"""OpenTelemetry traces across the request flow: each API request, each bus message
handled (conductor, scheduler, compute host...) and each call a service makes to
another's API is a span, all of one request in one trace (W3C `traceparent` carried in
HTTP headers and in the bus messages' context), each tagged with the OpenStack request
ids.

Off unless asked for, with OpenTelemetry's own environment variables:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) exports over
OTLP/HTTP, `OTEL_SERVICE_NAME` names the process (default `cumulo`). Tests enable it with
an in-memory exporter (`enable(exporter)`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def enable(exporter: SpanExporter | None = None) -> None:
    """Start tracing: to `exporter` span by span, or over OTLP in batches."""
    global _provider, _tracer
    name = os.environ.get("OTEL_SERVICE_NAME", "cumulo")
    _provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracer = _provider.get_tracer("cumulo")


def disable() -> None:
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def enable_from_environment() -> bool:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        enable()
        return True
    return False


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    carrier: dict[str, Any] | None = None,
    **attributes: Any,
) -> Iterator[Any]:
    """A span (a no-op when tracing is off), child of the trace in `carrier` if given
    (HTTP headers or a bus message's context), else of the current one."""
    if _tracer is None:
        yield None
        return
    parent = _PROPAGATOR.extract(carrier) if carrier else None
    attrs = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attrs) as s:
        yield s


def inject(carrier: dict[str, Any]) -> dict[str, Any]:
    """A copy of `carrier` with the current trace's `traceparent` (itself when off)."""
    if _tracer is None:
        return carrier
    carrier = dict(carrier)
    _PROPAGATOR.inject(carrier, context=otel_context.get_current())
    return carrier


async def inject_http(request: Any) -> None:
    """httpx request hook: the call to another service joins the current trace."""
    if _tracer is not None:
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers)
        request.headers.update(headers)
