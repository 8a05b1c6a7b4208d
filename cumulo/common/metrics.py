"""Prometheus metrics (prometheus_client), served at /metrics on every API port.

One registry per process: in the all-in-one cloud every port's /metrics shows every
service's series, told apart by the `service` label. Routes are labelled by their
template (`/v2.1/servers/{server_id}`), never by the raw path, so ids do not multiply
the series.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response

HTTP_REQUESTS = Counter(
    "cumulo_http_requests_total",
    "API requests answered, by service, method, route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "cumulo_http_request_duration_seconds",
    "Time to answer an API request (until the response is sent).",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Each (service, method, route, status)'s child metric, kept: `labels()` takes a lock and
# builds its key on every call, and every API request counts itself.
_request_counters: dict[tuple[str, str, str, int], Any] = {}
_request_latencies: dict[tuple[str, str, str], Any] = {}


def request_counter(service: str, method: str, route: str, status: int) -> Any:
    """HTTP_REQUESTS' child for these labels."""
    key = (service, method, route, status)
    child = _request_counters.get(key)
    if child is None:
        child = _request_counters[key] = HTTP_REQUESTS.labels(service, method, route, status)
    return child


def request_latency(service: str, method: str, route: str) -> Any:
    """HTTP_LATENCY's child for these labels."""
    key = (service, method, route)
    child = _request_latencies.get(key)
    if child is None:
        child = _request_latencies[key] = HTTP_LATENCY.labels(service, method, route)
    return child


RPC_MESSAGES = Counter(
    "cumulo_rpc_messages_total",
    "Messages taken from the bus and dispatched, by method and outcome (ok, error).",
    ["method", "outcome"],
)
RPC_DURATION = Histogram(
    "cumulo_rpc_handling_duration_seconds",
    "Time a bus message's method ran on the receiving side.",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)


RPC_ROUND_TRIP = Histogram(
    "cumulo_rpc_call_round_trip_seconds",
    "Time from sending a bus call to having its reply (queueing, handling, reply), by method.",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
INSTANCE_EVENT_SECONDS = Histogram(
    "cumulo_instance_action_event_duration_seconds",
    "Time of each instance action event (a boot's conductor_build_instances is its "
    "scheduling, then compute_networking, compute_spawning...), by event and result.",
    ["event", "result"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
BOOTS = Counter(
    "cumulo_boots_total",
    "Builds of a server on a host that ended, by outcome (success, error).",
    ["outcome"],
)
IMAGE_CACHE = Counter(
    "cumulo_image_cache_lookups_total",
    "Images a compute host needed, by whether its cache had them (hit, miss).",
    ["result"],
)
DATAPLANE_APPLIES = Counter(
    "cumulo_dataplane_applies_total",
    "Network data plane syncs of a host's agent, by outcome (ok, error).",
    ["outcome"],
)
DATAPLANE_APPLY_SECONDS = Histogram(
    "cumulo_dataplane_apply_duration_seconds",
    "Time to converge a host's data plane on the desired state.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DATAPLANE_WIRE_SECONDS = Histogram(
    "cumulo_dataplane_wire_duration_seconds",
    "Time to wire a host's ports (bridges, taps, firewall) and report them up, before "
    "the DHCP servers and routers of the same state.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PORT_WIRING_WAIT_SECONDS = Histogram(
    "cumulo_compute_port_wiring_wait_seconds",
    "Time a compute host waited for a guest's ports to go ACTIVE (the network agent's "
    "wiring), part of a boot's compute_networking.",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60),
)


class EventTimer:
    """Times instance action events between their start and finish records (in the
    process that records both; a bounded memory of starts)."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._started: dict[tuple[str, str, str], float] = {}

    def started(self, instance_uuid: str, request_id: str, event: str) -> None:
        if len(self._started) >= self.limit:
            self._started.clear()
        self._started[(instance_uuid, request_id, event)] = time.monotonic()

    def finished(self, instance_uuid: str, request_id: str, event: str, error: bool) -> None:
        began = self._started.pop((instance_uuid, request_id, event), None)
        result = "error" if error else "success"
        if event == "compute_build_and_run_instance":
            BOOTS.labels(result).inc()
        if began is not None:
            INSTANCE_EVENT_SECONDS.labels(event, result).observe(time.monotonic() - began)


EVENT_TIMER = EventTimer()


class QueueDepths(Protocol):
    def queue_depths(self) -> dict[str, int]: ...


class _BusQueues:
    """Collects the depth of every in-process bus queue at scrape time (RabbitMQ's are the
    broker's to report)."""

    def __init__(self) -> None:
        self.transports: weakref.WeakSet = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "cumulo_bus_queue_depth",
            "Messages waiting in an in-process bus queue.",
            labels=["topic"],
        )
        totals: dict[str, int] = {}
        for transport in list(self.transports):
            for topic, depth in transport.queue_depths().items():
                totals[topic] = totals.get(topic, 0) + depth
        for topic, depth in sorted(totals.items()):
            family.add_metric([topic], depth)
        yield family


BUS_QUEUES = _BusQueues()
REGISTRY.register(BUS_QUEUES)


def route_template(scope: dict) -> str:
    """The matched route's path template, or "unmatched" (404s of unknown paths)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
