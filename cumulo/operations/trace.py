"""`cumulo trace <server>`: one request's steps as a timeline, from the server's instance
action and its events (`GET /servers/{id}/os-instance-actions/{request_id}`): which step
ran where, when it started after the request, how long it took, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cumulo.operations.status import CloudReader

MICROVERSION = {"OpenStack-API-Version": "compute 2.62"}  # events with their hosts


@dataclass
class Step:
    event: str
    host: str | None
    start_s: float  # after the action started
    duration_s: float | None  # None while it runs
    result: str | None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_trace(
    reader: CloudReader, server: str, request_id: str | None = None
) -> tuple[dict[str, Any], list[Step]]:
    """The action (the server's first, its create, unless a request id is given) and its
    steps in the order they started."""
    actions = reader.get("compute", f"/v2.1/servers/{server}/os-instance-actions", **MICROVERSION)
    listed = actions["instanceActions"]
    if request_id is None:
        chosen = min(listed, key=lambda a: a["start_time"])
    else:
        chosen = next(a for a in listed if a["request_id"] == request_id)
    action = reader.get(
        "compute",
        f"/v2.1/servers/{server}/os-instance-actions/{chosen['request_id']}",
        **MICROVERSION,
    )["instanceAction"]
    began = _time(action["start_time"])
    assert began is not None
    steps = []
    for event in sorted(action.get("events", []), key=lambda e: e["start_time"]):
        start, finish = _time(event["start_time"]), _time(event.get("finish_time"))
        assert start is not None
        steps.append(
            Step(
                event=event["event"],
                host=event.get("host"),
                start_s=round((start - began).total_seconds(), 3),
                duration_s=round((finish - start).total_seconds(), 3) if finish else None,
                result=event.get("result"),
            )
        )
    return action, steps
