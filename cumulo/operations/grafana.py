"""The Grafana dashboard for cumulo's Prometheus metrics (`cumulo grafana-dashboard`).

Built from a short list of (title, PromQL, unit) so each panel's query is easy to read and
a test can check that every metric it names is one cumulo exports.
"""

from __future__ import annotations

from typing import Any

PANELS: list[tuple[str, str, str]] = [
    ("Boots/min by outcome", "sum by (outcome) (rate(cumulo_boots_total[5m])) * 60", "short"),
    (
        "Boot steps p95 (scheduling, networking, spawning...)",
        "histogram_quantile(0.95, sum by (event, le) "
        "(rate(cumulo_instance_action_event_duration_seconds_bucket[5m])))",
        "s",
    ),
    (
        "Scheduler decision time p95",
        "histogram_quantile(0.95, sum by (le) (rate("
        'cumulo_rpc_handling_duration_seconds_bucket{method="select_destinations"}[5m])))',
        "s",
    ),
    (
        "Image cache hit ratio",
        'sum(rate(cumulo_image_cache_lookups_total{result="hit"}[15m])) '
        "/ sum(rate(cumulo_image_cache_lookups_total[15m]))",
        "percentunit",
    ),
    (
        "Data plane applies/s by outcome",
        "sum by (outcome) (rate(cumulo_dataplane_applies_total[5m]))",
        "ops",
    ),
    (
        "Data plane apply time p95",
        "histogram_quantile(0.95, sum by (le) "
        "(rate(cumulo_dataplane_apply_duration_seconds_bucket[5m])))",
        "s",
    ),
    (
        "API requests/s by service",
        "sum by (service) (rate(cumulo_http_requests_total[1m]))",
        "reqps",
    ),
    (
        "API 5xx/s by service",
        'sum by (service) (rate(cumulo_http_requests_total{status=~"5.."}[1m]))',
        "reqps",
    ),
    (
        "API latency p95 by service",
        "histogram_quantile(0.95, sum by (service, le) "
        "(rate(cumulo_http_request_duration_seconds_bucket[5m])))",
        "s",
    ),
    (
        "Slowest routes p95",
        "topk(10, histogram_quantile(0.95, sum by (service, method, route, le) "
        "(rate(cumulo_http_request_duration_seconds_bucket[5m]))))",
        "s",
    ),
    (
        "Bus messages/s by method and outcome",
        "sum by (method, outcome) (rate(cumulo_rpc_messages_total[1m]))",
        "ops",
    ),
    (
        "Bus handling time p95 by method",
        "histogram_quantile(0.95, sum by (method, le) "
        "(rate(cumulo_rpc_handling_duration_seconds_bucket[5m])))",
        "s",
    ),
    (
        "Bus call round trip p95 by method",
        "histogram_quantile(0.95, sum by (method, le) "
        "(rate(cumulo_rpc_call_round_trip_seconds_bucket[5m])))",
        "s",
    ),
    ("Bus queue depth", "sum by (topic) (cumulo_bus_queue_depth)", "short"),
]


def _panel(index: int, title: str, expr: str, unit: str) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"expr": expr, "refId": "A", "legendFormat": "__auto"}],
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "cumulo",
        "uid": "cumulo-overview",
        "tags": ["cumulo", "openstack"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": [_panel(i, *panel) for i, panel in enumerate(PANELS)],
    }
