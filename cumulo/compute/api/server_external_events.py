"""POST /os-server-external-events: what the Network service (and others) report about
servers (api-ref: Create external events (os-server-external-events)).

`network-changed` refreshes the server's network info cache (its floating IPs);
`network-vif-plugged` goes to the server's host, where a build or an interface attach
may be waiting for that port (the tag) to be wired; the other events are accepted and
recorded as completed, as Nova answers them (`accelerator-request-bound`, 2.82: no
accelerator service here waits for it)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, NotFound
from cumulo.common.service_client import ServiceError
from cumulo.compute.api.common import authorize, compute_of, json, version
from cumulo.compute.api.microversion import APIVersion
from cumulo.compute.api.wire import is_uuid
from cumulo.compute.models import Instance
from cumulo.compute.network_cache import refresh_network_info

LOG = logging.getLogger(__name__)

EVENT_NAMES = {
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
    "volume-extended",
    "power-update",
}
# Event names a later microversion added (Nova's schema grows by version).
EVENT_NAMES_SINCE = {"accelerator-request-bound": (2, 82), "volume-reimaged": (2, 93)}
# Nova drops these without a tag (the accelerator request, 2.82), per event: 400.
TAG_REQUIRED = {"accelerator-request-bound"}
EVENT_STATUSES = {"failed", "completed", "in-progress"}


def _event(raw: Any, version: APIVersion) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest("Invalid input for field/attribute events.")
    extra = set(raw) - {"name", "server_uuid", "tag", "status"}
    if extra:
        raise BadRequest(f"Additional properties are not allowed ({sorted(extra)!r} unexpected)")
    since = EVENT_NAMES_SINCE.get(raw.get("name"))
    if raw.get("name") not in EVENT_NAMES and (since is None or version < since):
        raise BadRequest(f"Invalid input for field/attribute name. Value: {raw.get('name')}.")
    if not isinstance(raw.get("server_uuid"), str) or not is_uuid(raw["server_uuid"]):
        raise BadRequest("Invalid input for field/attribute server_uuid.")
    tag = raw.get("tag")
    if tag is not None and (not isinstance(tag, str) or len(tag) > 255):
        raise BadRequest("Invalid input for field/attribute tag.")
    status = raw.get("status", "completed")
    if status not in EVENT_STATUSES:
        raise BadRequest(f"Invalid input for field/attribute status. Value: {status}.")
    return {**raw, "status": status}


async def create_events(request: Request) -> Response:
    ctx = await authorize(request, "compute:server_external_events")
    data = await json_body(request)
    raw_events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(raw_events, list) or not raw_events:
        raise BadRequest("Invalid input for field/attribute events.")
    events = [_event(e, version(request)) for e in raw_events]
    service = compute_of(request)
    async with service.db.read() as s:
        hosts = dict(
            (
                await s.execute(
                    select(Instance.uuid, Instance.host).where(
                        Instance.uuid.in_({e["server_uuid"] for e in events}),
                        Instance.deleted.is_(False),
                    )
                )
            ).all()
        )
    answered = []
    to_hosts: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["server_uuid"] not in hosts:
            answered.append({**event, "code": 404, "status": "failed"})
            continue
        if event["name"] in TAG_REQUIRED and event.get("tag") is None:
            answered.append({**event, "code": 400, "status": "failed"})
            continue
        if not hosts[event["server_uuid"]]:
            # Nova: a server not on a host yet cannot take events.
            answered.append({**event, "code": 422, "status": "failed"})
            continue
        if event["name"] == "network-changed" and service.networks is not None:
            await _refresh(service, event["server_uuid"])
        if event["name"] == "volume-extended" and event.get("tag"):
            await service.volume_extended(ctx, event["server_uuid"], event["tag"])
        if event["name"] == "network-vif-plugged":
            to_hosts.setdefault(hosts[event["server_uuid"]], []).append(event)
        answered.append({**event, "code": 200})
    for host, host_events in sorted(to_hosts.items()):
        await service.compute_rpc.external_instance_event(
            service.rpc_context(ctx), host, host_events
        )
    if not any(e["code"] == 200 for e in answered):
        raise NotFound("No instances found for any event")
    status = 200 if all(e["code"] == 200 for e in answered) else 207
    return json({"events": answered}, status=status)


async def _refresh(service, instance_uuid: str) -> None:
    try:
        token = await service.validator.client.service_token()
        await refresh_network_info(service.db, service.networks, token, instance_uuid)
    except ServiceError as exc:
        # The event is accepted; the cache is refreshed on the next event.
        LOG.warning("refreshing the network info of %s failed: %s", instance_uuid, exc)


routes = [Route("/v2.1/os-server-external-events", create_events, methods=["POST"])]
